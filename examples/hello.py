"""A first taste of otp: processes, a link, a trapped exit, selective receive.

Run it with ``make demo``, ``python -m examples.hello`` or
``python -m otp run examples.hello:main``.
"""

from __future__ import annotations

from otp.process import Exit, receive, self, send, spawn_link, trap_exit


def greeter(parent):  # type: ignore[no-untyped-def]
    """Answers ("hello", name) with a greeting; crashes on anything else."""
    while True:
        match receive():
            case ("hello", name):
                send(parent, ("greeting", f"Hello, {name}!"))
            case other:
                raise ValueError(f"greeter cannot handle {other!r}")


def main() -> str:
    trap_exit(True)  # a crash of a linked process becomes an Exit message
    pid = spawn_link(greeter, self())
    send(pid, ("hello", "Joe"))
    send(pid, ("hello", "Robert"))
    for _ in range(2):
        _, text = receive(("greeting", str))  # selective receive: only greetings
        print(text)
    send(pid, "boom")  # the greeter crashes ...
    exit_msg = receive(Exit)  # ... and, trapping exits, we get told why
    print(f"greeter {exit_msg.pid} exited: {exit_msg.reason!r}")
    return "done"


if __name__ == "__main__":
    import otp

    otp.patch()
    otp.run(main)

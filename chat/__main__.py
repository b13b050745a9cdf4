"""Run the chat server in the foreground: ``python -m chat [--config config/dev.yaml]``.

Prints where it listens and where PINs appear, then serves until Ctrl-C / SIGTERM.
``make run`` runs exactly this with the dev config.
"""

from __future__ import annotations

import otp
import otp.node

otp.patch()  # before anything else imports socket/ssl

import argparse  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chat", description="Run the chat server.")
    p.add_argument("--config", default="config/dev.yaml", help="YAML config file")
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--data-dir", help="override data_dir")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def serve(args: argparse.Namespace, stop_signal: socket.socket) -> Any:
    import otp.config
    from chat import connection
    from chat.config import ChatConfig
    from otp import application

    application.configure(otp.config.load(args.config))
    application.load("chat")
    if args.host or args.port is not None:
        listen = dict(application.get_env("chat", "listen"))
        if args.host:
            listen["host"] = args.host
        if args.port is not None:
            listen["port"] = args.port
        application.set_env("chat", "listen", listen)
    if args.data_dir:
        application.set_env("chat", "data_dir", args.data_dir)
    cfg = ChatConfig.model_validate(application.get_all_env("chat"))
    if cfg.storage == "tables":
        from otp import tables

        tables.start(os.path.join(cfg.data_dir, "tables"))
    application.start("chat", type="permanent")
    _tune_gc()
    host, port = connection.address()
    scheme = "tls" if cfg.listen.tls else "tcp"
    print(f"chat server listening on {scheme}://{host}:{port} (pid {os.getpid()})", flush=True)
    print(f"data directory: {os.path.abspath(cfg.data_dir)}", flush=True)
    if cfg.sms.adapter == "console":
        print("PINs appear in this terminal, as 'PIN for +...: 123456' lines", flush=True)
    else:
        print(f"PINs go out through the {cfg.sms.adapter} SMS gateway", flush=True)
    stop_signal.recv(1)  # serve until SIGTERM / Ctrl-C (cooperative: the node runs)
    print("stopping: closing the listener, then the applications in reverse order", flush=True)
    application.stop_all()


def _tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes for a long-running server. The message path
    makes almost no reference cycles (everything it allocates is freed by reference
    counting), but with the default thresholds the collector ran every few hundred
    allocations and, every few seconds, a full pass over every live process and session
    (tens of ms to over 100 ms, each one a pause of the whole node: the p99 latency).
    What exists at start is moved out of the collector's view for good (``freeze``).

    A pause lasts as long as the pass's generation is big: the middle generation holds
    what survived the young passes since its last pass (under load, the state of new
    conversations: hundreds of thousands of objects after 20 young passes, a 50-65 ms
    pause every ~15 s at 7 000 msgs/s). So the middle pass runs after 4 young passes
    (~10 ms), and the young one every 10 000 allocations (a few ms); the full pass comes
    as seldom as before (every 40 M allocations at most)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])


#: allocations (net) between young-generation passes; young passes per middle pass;
#: middle passes per full pass (a full pass also waits for the live set to grow by 25 %)
GC_THRESHOLDS = (10_000, 4, 1000)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if logging.getLogger().level > logging.DEBUG:
        # progress reports (a line per user process started) only when debugging
        logging.getLogger("otp.report").setLevel(logging.WARNING)
    # A signal handler runs in whatever greenlet holds the CPU: it only writes to a
    # socket that the serving process waits on, which then stops the applications.
    wake_r, wake_w = socket.socketpair()
    count = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        count["n"] += 1
        if count["n"] > 1:  # a second Ctrl-C / SIGTERM: do not wait for the drain
            os._exit(130)
        os.write(wake_w.fileno(), b"s")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    from otp.errors import ApplicationError, ConfigError, StartError

    try:
        otp.run(serve, args, wake_r)
    except (ConfigError, ApplicationError, StartError, OSError) as e:
        print(f"chat server: cannot start: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        wake_r.close()
        wake_w.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

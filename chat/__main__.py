"""Run the chat server in the foreground: ``python -m chat [--config config/dev.yaml]``.

Prints where it listens and where PINs appear, then serves until Ctrl-C / SIGTERM (a
graceful stop: the listener closes first, the store last). ``make run`` runs exactly
this with the dev config. It is the same entry point as a release's ``bin/chat start``
(``otp.serve``): logging, signals, and the GC settings of the config's ``node.gc``
section (``GC`` when the config has none).
"""

from __future__ import annotations

import otp

otp.patch()  # before anything else imports socket/ssl

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from otp import serve  # noqa: E402

#: Fewer, cheaper cyclic-GC passes for a long-running server (the ``node.gc`` section of
#: ``config/dev.yaml`` and ``config/prod.yaml`` says the same; this is for a config
#: without one). The message path makes almost no reference cycles (everything it
#: allocates is freed by reference counting), but with the default thresholds the
#: collector ran every few hundred allocations and, every few seconds, a full pass over
#: every live process and session (tens of ms to over 100 ms, each one a pause of the
#: whole node: the p99 latency). What exists at start is moved out of the collector's
#: view for good (``freeze``).
#:
#: A pause lasts as long as the pass's generation is big: the middle generation holds
#: what survived the young passes since its last pass (under load, the state of new
#: conversations: hundreds of thousands of objects after 20 young passes, a 50-65 ms
#: pause every ~15 s at 7 000 msgs/s). So the middle pass runs after 4 young passes
#: (~10 ms), and the young one every 10 000 allocations (a few ms); the full pass comes
#: as seldom as before (every 40 M allocations at most).
GC_THRESHOLDS = (10_000, 4, 1000)
GC = serve.GcSettings(thresholds=GC_THRESHOLDS, freeze=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chat", description="Run the chat server.")
    p.add_argument("--config", default="config/dev.yaml", help="YAML config file")
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--data-dir", help="override data_dir")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _start(args: argparse.Namespace, _config: Any) -> None:
    from chat import connection
    from chat.config import ChatConfig
    from otp import application

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
    host, port = connection.address()
    scheme = "tls" if cfg.listen.tls else "tcp"
    print(f"chat server listening on {scheme}://{host}:{port} (pid {os.getpid()})", flush=True)
    if cfg.media is not None:
        from chat import media

        mhost, mport = media.address()
        mscheme = "https" if cfg.listen.tls else "http"
        print(f"media endpoint on {mscheme}://{mhost}:{mport}/media", flush=True)
    print(f"data directory: {os.path.abspath(cfg.data_dir)}", flush=True)
    if cfg.sms.adapter == "console":
        print("PINs appear in this terminal, as 'PIN for +...: 123456' lines", flush=True)
    else:
        print(f"PINs go out through the {cfg.sms.adapter} SMS gateway", flush=True)


def _stopping() -> None:
    print("stopping: closing the listener, then the applications in reverse order", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    status = serve.run(lambda config: _start(args, config), config_paths=[args.config],
                       label="chat server", log_level=args.log_level, gc=GC,
                       on_stop=_stopping)
    if status == 0:
        print("stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

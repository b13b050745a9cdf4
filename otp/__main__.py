"""The ``otp`` command line: ``otp run MODULE:FUNCTION [ARGS...]``, ``otp serve APP...
--config FILE`` (start applications and serve until SIGTERM / Ctrl-C: ``otp.serve``),
and ``otp release build SPEC`` plus the release commands (``otp.cli``).

Runs ``FUNCTION(*ARGS)`` as the first process of a fresh node, after applying gevent's
monkey-patching (first, before anything else is imported), and exits with status 0 when
it returns, 1 when it raises. ``python -m otp run examples.hello:main`` is the same.
"""

from __future__ import annotations

# Monkey-patching must happen before anything else imports socket, ssl, subprocess...
# (importing otp itself first is safe: it imports none of them).
import otp

otp.patch()

import importlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

__all__ = ["main"]


def resolve(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` to the function, with a clear error."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:FUNCTION, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise click.BadParameter(f"cannot import {module_name!r}: {e}") from None
    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise click.BadParameter(f"{target!r} is not callable")
    return fn


@click.group()
@click.version_option(otp.__version__, prog_name="otp")
def cli() -> None:
    """Erlang/OTP for Python: run and operate nodes."""


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("args", nargs=-1)
@click.option("--name", default="nonode@nohost", show_default=True, help="node name")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--config",
    "config_paths",
    multiple=True,
    type=click.Path(exists=True),
    help="YAML config file or directory (repeatable; later ones win)",
)
def run(
    target: str, args: tuple[str, ...], name: str, log_level: str, config_paths: tuple[str, ...]
) -> None:
    """Run MODULE:FUNCTION(*ARGS) as the first process of a fresh node."""
    from otp import application, config, logger

    logger.setup(log_level.upper())
    sys.path.insert(0, ".")
    fn = resolve(target)
    cfg = config.load(*config_paths) if config_paths else None

    def boot() -> Any:
        if cfg is not None:
            application.configure(cfg)
        return fn(*args)

    try:
        result = otp.run(boot, name=name)
    except KeyboardInterrupt:
        sys.exit(130)
    if result is not None:
        click.echo(repr(result))


@cli.command()
@click.argument("apps", nargs=-1, required=True)
@click.option(
    "--config",
    "config_paths",
    multiple=True,
    type=click.Path(exists=True),
    help="YAML config file or directory (repeatable; later ones win)",
)
@click.option("--name", default="nonode@nohost", show_default=True, help="node name")
@click.option("--log-level", default="INFO", show_default=True)
def serve(apps: tuple[str, ...], config_paths: tuple[str, ...], name: str,
          log_level: str) -> None:
    """Start the applications APPS (permanent) and serve until Ctrl-C or SIGTERM.

    The entry point of `python -m chat` and of a release's `bin/<name> start`
    (otp.serve): logging, a graceful stop on SIGTERM/SIGINT, the config's node.gc."""
    import os

    from otp import application
    from otp import serve as _serve

    sys.path.insert(0, ".")

    def start(_config: Any) -> None:
        for app in apps:
            application.start(app, type="permanent")
        click.echo(f"serving {', '.join(apps)} on {name} (pid {os.getpid()}); Ctrl-C or "
                   "SIGTERM stops it")

    status = _serve.run(start, config_paths=config_paths, label=" ".join(apps), name=name,
                        log_level=log_level)
    if status == 0:
        click.echo("stopped")
    sys.exit(status)


def _add_release_commands() -> None:
    from otp.cli import node, release

    cli.add_command(release)
    cli.add_command(node)


_add_release_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

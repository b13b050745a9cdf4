"""The release command line: ``otp release build`` and what ``bin/<name>`` runs.

Conventions of ``mix release`` and relx::

    otp release build releases/chat.yaml --out _build   # -> _build/chat-0.1.0.tar.gz
    otp release appup _build/chat-0.1.0.tar.gz releases/chat.yaml --write
    otp release build releases/chat.yaml --upgrade-from _build/chat-0.1.0.tar.gz

    bin/chat start            foreground; Ctrl-C or SIGTERM stops gracefully
    bin/chat daemon           in the background (returns once it is up; log in run/)
    bin/chat daemon --config dev   the same with another config shipped in the bundle
    bin/chat stop             graceful: stop accepting, drain, applications in reverse
    bin/chat restart          restart the applications inside the running node
    bin/chat pid | ping | status
    bin/chat remote           an interactive Python shell inside the running node
    bin/chat rpc EXPR         evaluate EXPR inside the running node, print its repr
    bin/chat eval EXPR        evaluate EXPR in a fresh node (config loaded, nothing
                              started), without connecting to the running one
    bin/chat versions         releases of this root and their status
    bin/chat unpack VSN|PATH  unpack releases/<name>-<VSN>.tar.gz (or PATH) for upgrade
    bin/chat upgrade VSN      install VSN live and make it permanent (--no-permanent;
                              --dry-run; --health CMD --within 30s)
    bin/chat downgrade VSN    go back to an older installed VSN
    bin/chat remove VSN       delete an unpacked release that is not running
    bin/chat top [--once]     live: summary, alarms, processes by queue length, dequeue
                              rate, drain time or memory (keys: u o i d m, Enter, q)
    bin/chat sar [--last 10m] the activity reporter's samples as columns (--plot F.png)
    bin/chat alarms           the alarms raised now

Every command that talks to the node says so and exits 1 when it is not running. The
same commands are ``otp release <command> --root DIR`` (or ``$OTP_RELEASE_ROOT``).

Exit status: 0 on success, 1 when the node is not running or the request failed (the
node's error on stderr), 2 for a usage error.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from otp import release as _release
from otp import remote_shell

__all__ = ["release", "release_main"]


class _Root:
    """The release root a command works on, and its boot version's spec (lazily)."""

    def __init__(self, root: str | None) -> None:
        self.given = root
        self._spec: _release.ReleaseSpec | None = None

    @property
    def root(self) -> Path:
        if not self.given:
            raise click.UsageError(
                "no release root: run bin/<name> from an unpacked release, or pass "
                "--root DIR (or set OTP_RELEASE_ROOT)")
        return Path(self.given).resolve()

    @property
    def spec(self) -> _release.ReleaseSpec:
        if self._spec is None:
            try:
                self._spec = _release.load_release(self.root)
            except _release.ReleaseError as e:
                raise click.ClickException(str(e)) from None
        return self._spec

    @property
    def paths(self) -> dict[str, Path]:
        return _release.release_paths(self.root, self.spec)

    def request(self, op: str, /, *, timeout: float | None = 30.0, **args: Any) -> Any:
        """Send a request to the running node; exits 1 with a clear message if it is not
        running or the request failed."""
        try:
            return remote_shell.request(self.paths["socket"], op, timeout=timeout, **args)
        except remote_shell.NodeNotRunning:
            _fail(f"{self.spec.name} is not running (no node answers on "
                  f"{self.paths['socket']})")
        except remote_shell.RemoteError as e:
            _fail(str(e).rstrip())
        except TimeoutError:
            _fail(f"{self.spec.name}: no answer from the node within {timeout} s")

    def running_pid(self) -> int | None:
        try:
            return int(remote_shell.request(self.paths["socket"], "pid", timeout=10.0))
        except (remote_shell.NodeNotRunning, remote_shell.RemoteError, TimeoutError, OSError):
            return None


def _fail(message: str) -> Any:
    click.echo(message, err=True)
    sys.exit(1)


@click.group("release")
@click.option("--root", envvar="OTP_RELEASE_ROOT", default=None,
              help="the release root (default: $OTP_RELEASE_ROOT; bin/<name> sets it)")
@click.pass_context
def release(ctx: click.Context, root: str | None) -> None:
    """Build release bundles; start, stop and operate a release's node."""
    ctx.obj = _Root(root)


pass_root = click.make_pass_decorator(_Root)


@release.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="_build", show_default=True, help="output directory")
@click.option("--upgrade-from", "upgrade_from", multiple=True, metavar="OLD",
              help="a bundle (or spec) of an earlier release: refuse to build unless the "
                   "spec's upgrade from it names every module that changed")
def build(spec: str, out: str, upgrade_from: tuple[str, ...]) -> None:
    """Build the release SPEC (releases/<name>.yaml) into OUT/<name>-<vsn>.tar.gz."""
    try:
        parsed = _release.load_spec(spec)
        if upgrade_from:
            from otp import release_appup

            for old in upgrade_from:
                release_appup.check(parsed, release_appup.diff(old, spec))
        existed = (Path(out) / f"{parsed.name}-{parsed.version}.tar.gz").exists()
        tarball = _release.build(spec, out)
    except _release.ReleaseError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(tarball))
    if existed:
        click.echo(f"(replaced the earlier {tarball.name}: a spec of another name "
                   "builds a bundle of its own)", err=True)


@release.command()
@click.argument("old")
@click.argument("new", type=click.Path(exists=True))
@click.option("--write", is_flag=True,
              help="put the entry into NEW's upgrades (NEW must be a spec)")
def appup(old: str, new: str, write: bool) -> None:
    """Upgrade instructions from release OLD to NEW, generated from their modules.

    OLD: a bundle (_build/chat-0.1.0.tar.gz), a bundle directory or a release root
    (ROOT@VSN for one of its releases). NEW: the release spec (releases/chat.yaml) or a
    bundle. Prints the upgrades entry for NEW's spec (--write: puts it there)."""
    from otp import release_appup

    try:
        d = release_appup.diff(old, new)
        entry = release_appup.generate_from(d, old, new)
        text = release_appup.format_entry(entry, d)
        if write:
            release_appup.write_entry(new, text, d.from_vsn)
    except _release.ReleaseError as e:
        raise click.ClickException(str(e)) from None
    click.echo(text, nl=False)
    if write:
        click.echo(f"(written to {new}: read and edit it, then build)", err=True)


def _config_option(fn: Any) -> Any:
    return click.option(
        "--config", "profile", metavar="NAME", default=None,
        help="boot with another config shipped in the bundle (the spec's profiles, e.g. "
             "dev for a trial on this machine); default: the release's own config")(fn)


def _check_profile(r: _Root, profile: str | None) -> None:
    try:
        _release.config_files(r.spec, profile)
    except _release.ReleaseError as e:
        raise click.BadParameter(str(e), param_hint="--config") from None


@release.command()
@click.option("--log-level", default="INFO", show_default=True)
@_config_option
@pass_root
def start(r: _Root, log_level: str, profile: str | None) -> None:
    """Run the node in the foreground until Ctrl-C, SIGTERM or `stop`."""
    _check_profile(r, profile)
    sys.exit(_release.run_node(r.root, vsn=r.spec.version, log_level=log_level,
                               profile=profile))


@release.command()
@click.option("--timeout", default=60.0, show_default=True,
              help="seconds to wait for the node to be up")
@_config_option
@pass_root
def daemon(r: _Root, timeout: float, profile: str | None) -> None:
    """Start the node in the background; returns once it is up (pid file written)."""
    paths = r.paths
    _check_profile(r, profile)
    if r.running_pid() is not None:
        _fail(f"{r.spec.name} is already running (pid {r.running_pid()})")
    paths["run"].mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        paths["pid"].unlink()
    log = open(paths["log"], "ab")
    offset = log.tell()  # this run's lines start here
    try:
        proc = subprocess.Popen(
            [str(r.root / "bin" / r.spec.name), "start",
             *(["--config", profile] if profile else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(r.root), start_new_session=True,
            # bin/<name> runs $OTP_PYTHON: this interpreter has what the node needs
            env={**os.environ, "OTP_PYTHON": os.environ.get("OTP_PYTHON", sys.executable)},
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _fail(_not_started(r, profile, proc.returncode, offset))
        try:
            if int(paths["pid"].read_text().strip()) == proc.pid:
                with_config = f" with config {profile}" if profile else ""
                click.echo(f"{r.spec.name} {r.spec.version} started{with_config} "
                           f"(pid {proc.pid}); log: {paths['log']}")
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    _fail(f"{r.spec.name} is not up after {timeout} s (pid {proc.pid}, still starting?); "
          f"see {paths['log']}")


def _tail(path: Path, n: int = 20, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-n:])


def _not_started(r: _Root, profile: str | None, status: int, offset: int) -> str:
    """Why ``daemon``'s node exited: the node's one-line reason when it gave one (the
    whole end of the log otherwise), and where a trial config is."""
    log = r.paths["log"]
    lines = _tail(log, 200, offset).splitlines()
    reason = next((ln for ln in reversed(lines)
                   if ln.startswith(f"{r.spec.name}: cannot start:")
                   or ln.startswith(f"{r.spec.name}: node halted:")), None)
    text = (f"{r.spec.name} did not start (exit status {status}): {reason}\n(log: {log})"
            if reason else
            f"{r.spec.name} did not start (exit status {status}); the end of {log}:\n"
            + "\n".join(lines[-20:]))
    if profile is None and r.spec.profiles:
        name = next(iter(r.spec.profiles))
        text += (f"\nfor a trial on this machine with the config shipped as {name!r}: "
                 f"bin/{r.spec.name} daemon --config {name}")
    return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (its parent has not reaped it yet) has stopped
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@release.command()
@click.option("--timeout", default=60.0, show_default=True,
              help="seconds to wait for the node to exit")
@pass_root
def stop(r: _Root, timeout: float) -> None:
    """Stop the node gracefully and wait until its OS process has exited."""
    pid = r.request("pid")
    r.request("stop")
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            _fail(f"{r.spec.name} (pid {pid}) still running after {timeout} s")
        time.sleep(0.05)
    click.echo(f"{r.spec.name} stopped")


@release.command()
@pass_root
def restart(r: _Root) -> None:
    """Restart the applications inside the running node (same OS process)."""
    result = r.request("restart", timeout=None)
    if isinstance(result, str):
        _fail(f"{r.spec.name}: restart {result}")
    click.echo(f"{r.spec.name} restarted: {', '.join(result)}")


@release.command()
@pass_root
def pid(r: _Root) -> None:
    """Print the node's OS pid."""
    click.echo(r.request("pid"))


@release.command()
@pass_root
def ping(r: _Root) -> None:
    """Print pong if the node is running."""
    click.echo(r.request("ping", timeout=10.0))


def _replication_lines(repl: dict[str, Any] | None) -> list[str]:
    """``status``'s lines for the replicated tables (none when the node has none)."""
    if not repl:
        return []
    where = "in the majority" if repl["majority"] else "CUT OFF from the majority"
    lines = [f"  replication   {', '.join(repl['held']) or '(no copies)'} at log position "
             f"{repl['position']} of {repl['log_end']} (lag {repl['lag']}), {where}, "
             f"{repl['engine']}"]
    if repl.get("last_error"):
        lines.append(f"    last error: {repl['last_error']}")
    return lines


@release.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@pass_root
def status(r: _Root, as_json: bool) -> None:
    """The node's version, uptime, applications, process count and memory."""
    st = r.request("status")
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    rss = st.get("rss")
    click.echo(f"{st['name']} {st['version']} running on {st['node']} (pid {st['pid']})")
    click.echo(f"  uptime        {st['uptime']} s")
    click.echo(f"  applications  {', '.join(f'{a} {v}' for a, v in st['applications'])}")
    click.echo(f"  processes     {st['processes']}")
    if st.get("nodes") is not None:
        click.echo(f"  nodes         {', '.join(st['nodes']) or '(none connected)'}")
    if rss is not None:
        click.echo(f"  memory (rss)  {rss / 1e6:.1f} MB")
    if st.get("config"):
        click.echo(f"  config        {', '.join(st['config'])}")
    click.echo(f"  root          {st['root']}")
    up = st.get("last_upgrade")
    if up:
        click.echo(f"  last {up['word']:<9} {up['from']} -> {up['to']}: {up['outcome']} at "
                   f"{up['at']} ({up['seconds']} s, longest suspension "
                   f"{up['longest_suspension_ms']} ms)")
        for step in up["steps"]:
            click.echo(f"    {step}")
        if up.get("error"):
            click.echo(f"    error: {up['error']}")
    for line in _replication_lines(st.get("replication")):
        click.echo(line)
    for alarm in st.get("alarms") or []:
        click.echo(f"  ALARM         {alarm}")


@release.command()
@click.argument("expr")
@pass_root
def rpc(r: _Root, expr: str) -> None:
    """Evaluate EXPR inside the running node; print its output and value."""
    result = r.request("rpc", timeout=None, expr=expr)
    if result.get("out"):
        click.echo(result["out"], nl=False)
    if result.get("value") is not None:
        click.echo(result["value"])


@release.command("eval")
@click.argument("expr")
@_config_option
@pass_root
def eval_(r: _Root, expr: str, profile: str | None) -> None:
    """Evaluate EXPR in a fresh node (config loaded, no application started)."""
    import otp
    import otp.config
    from otp import application

    _check_profile(r, profile)
    spec = r.spec
    root = r.root

    def main() -> tuple[bool, str | None]:
        paths = [root / c for c in _release.config_files(spec, profile)]
        application.configure(otp.config.load(*paths) if paths else None)
        return remote_shell.evaluate(expr)

    ok, text = otp.run(main, name=f"{spec.name}_eval@localhost")
    if not ok:
        _fail((text or "").rstrip())
    if text is not None:
        click.echo(text)


@release.command()
@pass_root
def remote(r: _Root) -> None:
    """Attach an interactive Python shell running inside the node (Ctrl-D detaches)."""
    history = os.path.expanduser(f"~/.{r.spec.name}_remote_history")
    try:
        code = remote_shell.interactive(r.paths["socket"], history=history)
    except remote_shell.NodeNotRunning:
        _fail(f"{r.spec.name} is not running (no node answers on {r.paths['socket']})")
    sys.exit(code)


@release.command()
@pass_root
def versions(r: _Root) -> None:
    """The releases of this root and their status (asks the node if it runs)."""
    try:
        rows = remote_shell.request(r.paths["socket"], "versions", timeout=30.0)
    except remote_shell.NodeNotRunning:
        rows = [[e["version"], e["status"]] for e in _release.read_releases(r.root)]
    except remote_shell.RemoteError as e:
        _fail(str(e))
    for vsn, st in rows:
        click.echo(f"{vsn:<16} {st}")


@release.command()
@click.argument("target")
@pass_root
def unpack(r: _Root, target: str) -> None:
    """Unpack a release for upgrade: a VSN (releases/<name>-VSN.tar.gz) or a PATH."""
    if os.path.exists(target):
        target = os.path.abspath(target)
    click.echo(f"unpacked {r.request('unpack', timeout=None, path=target)}")


def _seconds(value: str) -> float:
    try:
        return float(value[:-1]) if value.endswith("s") else float(value)
    except ValueError:
        raise click.BadParameter(f"expected seconds like 30s or 30, got {value!r}",
                                 param_hint="--within") from None


@release.command()
@click.argument("vsn")
@click.option("--permanent/--no-permanent", default=True, show_default=True,
              help="make VSN permanent once installed")
@click.option("--dry-run", is_flag=True,
              help="run every code_change on copies of the live states and report; "
                   "the node is untouched")
@click.option("--health", metavar="CMD_OR_CHECK", default=None,
              help="keep VSN only if this passes within --within: a shell command (exit "
                   "0) run in the root, or rpc:EXPR (true in the node); else roll back")
@click.option("--within", default="30s", show_default=True, metavar="SECONDS",
              help="how long --health may take to pass")
@pass_root
def upgrade(r: _Root, vsn: str, permanent: bool, dry_run: bool, health: str | None,
            within: str) -> None:
    """Upgrade the running node to VSN (unpacked first); rolled back if a step fails."""
    click.echo(r.request("upgrade", timeout=None, vsn=vsn, permanent=permanent,
                         dry_run=dry_run, health=health, within=_seconds(within)))


@release.command()
@click.argument("vsn")
@click.option("--permanent/--no-permanent", default=True, show_default=True)
@click.option("--dry-run", is_flag=True,
              help="run every code_change down on copies of the live states and report")
@pass_root
def downgrade(r: _Root, vsn: str, permanent: bool, dry_run: bool) -> None:
    """Downgrade the running node to the older installed VSN."""
    click.echo(r.request("downgrade", timeout=None, vsn=vsn, permanent=permanent,
                         dry_run=dry_run))


@release.command()
@click.argument("vsn")
@pass_root
def remove(r: _Root, vsn: str) -> None:
    """Delete the unpacked (not running, not permanent) release VSN from the root."""
    click.echo(r.request("remove", vsn=vsn))


@release.command("make-permanent")
@click.argument("vsn")
@pass_root
def make_permanent(r: _Root, vsn: str) -> None:
    """Make the installed VSN the one the node boots next time."""
    click.echo(r.request("make_permanent", vsn=vsn))


@release.command()
@click.option("--sort", type=click.Choice(["queue", "memory", "messages", "out", "in", "drain"]),
              default="queue", show_default=True,
              help="message-queue length, memory (an estimate), messages handled (--once: "
                   "turns on counting in every behaviour process), dequeue/enqueue rate, "
                   "projected drain time")
@click.option("-n", "--limit", default=20, show_default=True)
@click.option("--interval", default=2.0, show_default=True, help="refresh, seconds")
@click.option("--once", is_flag=True, help="print once and exit")
@click.option("--cluster", is_flag=True, help="every connected node too (otp.rpc)")
@pass_root
def top(r: _Root, sort: str, limit: int, interval: float, once: bool, cluster: bool) -> None:
    """The node live: summary, alarms and processes by queue, rates, drain time, memory."""
    from otp import top as live

    if once and sort in ("queue", "memory", "messages") and not cluster:
        click.echo(remote_shell.format_top(r.request("top", sort=sort, limit=limit)))
        return
    if sort == "messages":
        sort = "out"

    def fetch(by: str, n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        got = r.request("ops_top", sort=by, limit=n, cluster=cluster)
        if cluster:
            got["summary"] = {**got["summary"], "nodes": got["nodes"]}
        return got["summary"], got["rows"]

    if once:
        click.echo(live.render_text(*fetch(sort, limit), sort))
        return
    try:
        live.run(fetch, lambda pid: r.request("ops_inspect", pid=pid), sort=sort, limit=limit,
                 interval=interval)
    except KeyboardInterrupt:
        return


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    try:
        if text[-1:] in _UNITS:
            return float(text[:-1]) * _UNITS[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"expected a duration like 90, 90s, 10m or 1h, got {text!r}",
                                 param_hint="--last") from None


@release.command()
@click.option("--last", default="10m", show_default=True,
              help="how far back: seconds, or 90s, 10m, 1h")
@click.option("--interval", default=1.0, show_default=True,
              help="seconds per row (every Nth sample)")
@click.option("--file", "from_file", default=None, type=click.Path(exists=True),
              help="read the samples from a file the reporter appended to, not the node")
@click.option("--plot", default=None, metavar="FILE.png", help="draw the series into a PNG")
@click.option("--json", "as_json", is_flag=True, help="the samples as JSON lines")
@click.option("--cluster", is_flag=True, help="every connected node too, one table each")
@pass_root
def sar(r: _Root, last: str, interval: float, from_file: str | None, plot: str | None,
        as_json: bool, cluster: bool) -> None:
    """The system activity reporter's samples: CPU, switches, memory, descriptors,
    network, processes, queued, messages/s, hub utilisation, GC."""
    from otp import sar as _sar

    seconds = _duration(last)
    if cluster:
        for view in r.request("ops_sar", last=seconds, cluster=True):
            click.echo(f"== {view['node']}")
            if as_json:
                for row in view["samples"]:
                    click.echo(json.dumps({"node": view["node"], **row}))
            else:
                click.echo(_sar.format_table(view["samples"]) if view["samples"]
                           else "(no samples)")
        return
    if from_file is not None:
        rows: list[Any] = [s._asdict() for s in _sar.read_file(from_file, seconds)]
    else:
        rows = r.request("ops_sar", last=seconds)
    if interval > 1 and rows:
        step = max(1, round(interval / _sample_interval(rows)))
        rows = rows[step - 1::step]
    if plot:
        try:
            click.echo(_sar.plot(rows, plot))
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no samples yet (the reporter samples every second)", err=True)
        return
    click.echo(_sar.format_table(rows))


def _sample_interval(rows: list[dict[str, Any]]) -> float:
    if len(rows) < 2:
        return 1.0
    return max(1e-3, (rows[-1]["t"] - rows[0]["t"]) / (len(rows) - 1))


@release.command()
@click.option("--json", "as_json", is_flag=True)
@pass_root
def alarms(r: _Root, as_json: bool) -> None:
    """The alarms raised now (queue backlogs, memory, descriptors, hub, GC)."""
    from otp.ops import describe_alarm

    got = r.request("ops_alarms")
    if as_json:
        click.echo(json.dumps(got, indent=2))
        return
    if not got:
        click.echo("no alarms")
    for a in got:
        click.echo(describe_alarm(a))


@click.command("node")
@click.option("--name", required=True, help="the node's name, e.g. a@127.0.0.1")
@click.option("--cookie", default=None, help="the cookie (else --cookie-file, else "
              "~/.erlang.cookie)")
@click.option("--cookie-file", default=None, type=click.Path(exists=True))
@click.option("--seed", "seeds", multiple=True, help="join a cluster through this node "
              "(repeatable)")
@click.option("--epmd-port", default=None, type=int,
              help="EPMD's port (else $ERL_EPMD_PORT, else 4369)")
def node(name: str, cookie: str | None, cookie_file: str | None, seeds: tuple[str, ...],
         epmd_port: int | None) -> None:
    """A distributed node with a shell on this terminal (otp.node_shell)."""
    from otp.node_shell import run_shell

    sys.path.insert(0, ".")
    run_shell(name, cookie=cookie, cookie_file=cookie_file, seeds=seeds,
              epmd_port=epmd_port)


def release_main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """What ``bin/<name>`` runs (``bin/boot.py`` sets ``$OTP_RELEASE_ROOT``)."""
    release.main(args=argv, prog_name=prog_name)

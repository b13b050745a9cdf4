"""Release bundles: build a release spec into a self-describing tarball, and boot one.

A *release* is the unit an operator deploys: a versioned bundle with the code of every
application it runs (``otp`` itself included, like ERTS in an OTP release), their
config, the upgrade instructions from earlier versions, and a ``bin/<name>`` script::

    otp release build releases/chat.yaml --out _build    # -> _build/chat-0.1.0.tar.gz
    mkdir /opt/chat && tar -xzf _build/chat-0.1.0.tar.gz -C /opt/chat
    /opt/chat/bin/chat daemon        # or start (foreground), stop, remote, rpc, ...

From code::

    from otp import release
    tarball = release.build("releases/chat.yaml", out="_build")
    release.verify_manifest("/opt/chat")          # [] when every checksum matches

The spec (``releases/<name>.yaml``)::

    name: chat
    version: 0.1.0
    applications:                  # started in this order at boot (OTP's boot script)
      - {name: chat, version: 0.1.0, start_type: permanent}   # path: optional source dir
    config: [config/prod.yaml]     # later files win; then OTP_<APP>__<KEY> variables
    profiles: {dev: [config/dev.yaml]}   # other configs: bin/chat start --config dev
    entry: chat.__main__:main      # how to run it *without* a release (not used at boot)
    upgrades: []                   # per-version instructions for the release handler

Paths in the spec are relative to the project root (the parent of ``releases/``).
An application's code is the package of that name (found by import, or ``path``); the
package's ``APP.vsn`` must equal the version the spec gives it.

Bundle layout (the release root, shared with ``otp.release_handler``)::

    MANIFEST                        "<sha256>  <path>" for every other file
    bin/<name>                      sh: finds the root from its own path, runs bin/boot.py
    bin/boot.py                     picks the boot version, puts its lib/ on the path
    lib/<app>-<vsn>/<app>/          each application's code, otp included
    releases/RELEASES               YAML index: [{version, status}]
    releases/<vsn>/release.yaml     the resolved spec (+ ``lib``: app -> lib dir)
    releases/<vsn>/<config>.yaml    its config files
    run/                            created at boot, mode 0700: pid file, control socket
                                    (``<name>.sock``), node log, remote-shell audit log

Boot (``bin/<name> start [--config NAME]``, served by ``otp.serve``, as ``python -m
chat``): the boot version is ``$OTP_RELEASE_VSN`` if set, else the
permanent release in ``RELEASES`` (docs/semantics.md A6: a node restarted after an
un-permanent upgrade boots the last permanent one). The node changes directory to the
root, loads the config files (the spec's ``config``, or the profile NAME's), starts
the applications in order, then opens the control
socket and writes ``run/<name>.pid``: the pid file appearing means "up". ``stop`` (or
SIGTERM, or Ctrl-C in the foreground) stops gracefully: the control socket stops
accepting, applications stop most recent first (each supervisor stops its children in
reverse order: the chat listener first, the store last), the pid file goes.

Failure semantics: ``build`` raises ``ReleaseError`` naming the spec file and the field
(a missing package, a version that does not match ``APP.vsn``, a missing config file).
A node whose permanent application stops halts (``otp.application``); the pid file and
socket are removed and ``start`` exits 1.

When not to use: for development, run the application directly (``python -m chat``);
a release is for deployment and live upgrades.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from otp.errors import (
    ReleaseError,
)

log = logging.getLogger("otp.release")

__all__ = [
    "AppEntry",
    "ReleaseError",
    "ReleaseSpec",
    "boot_version",
    "build",
    "config_files",
    "load_release",
    "load_spec",
    "read_releases",
    "release_paths",
    "run_node",
    "verify_manifest",
    "write_manifest",
]

#: the runtime bundled into every release (ERTS, kernel and stdlib in OTP's terms)
RUNTIME = "otp"



class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppEntry(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    version: str = Field(min_length=1)
    start_type: Literal["permanent", "transient", "temporary", "load"] = "permanent"
    #: the package's source directory (default: found by importing ``name``)
    path: str | None = None


class ReleaseSpec(_Model):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    applications: list[AppEntry] = Field(min_length=1)
    config: list[str] = Field(default_factory=list)
    #: other configs shipped in the bundle, by name: ``bin/<name> start --config NAME``
    profiles: dict[str, list[str]] = Field(default_factory=dict)
    entry: str | None = None
    upgrades: list[Any] = Field(default_factory=list)
    #: filled in a built bundle: app name -> lib dir relative to the root
    lib: dict[str, str] = Field(default_factory=dict)
    otp: str | None = None
    built: str | None = None


def load_spec(path: str | os.PathLike[str]) -> ReleaseSpec:
    """Read and validate a release spec (or a bundle's ``release.yaml``)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ReleaseError(f"{p}: cannot read the release spec: {e}") from None
    except yaml.YAMLError as e:
        raise ReleaseError(f"{p}: not valid YAML: {e}") from None
    try:
        return ReleaseSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']} "
            f"(got {err.get('input')!r:.60})"
            for err in e.errors()
        )
        raise ReleaseError(f"{p}: {problems}") from None


# ------------------------------------------------------------------------------ build


def _project_root(spec_path: Path) -> Path:
    parent = spec_path.resolve().parent
    return parent.parent if parent.name == "releases" else parent


def _package_dir(name: str, path: str | None, root: Path, where: str) -> Path:
    if path is not None:
        d = (root / path).resolve()
        if not (d / "__init__.py").is_file():
            raise ReleaseError(f"{where}: path expects a package directory, got {d}")
        return d
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        raise ReleaseError(f"{where}: cannot find the package {name!r}: {e}") from None
    if found is None or not found.submodule_search_locations:
        raise ReleaseError(
            f"{where}: expected an importable package named {name!r}, got "
            f"{'nothing' if found is None else 'a module'} (give its directory as path)"
        )
    return Path(next(iter(found.submodule_search_locations))).resolve()


def _app_vsn(name: str) -> str | None:
    """The ``APP.vsn`` of an application package (None for a plain library)."""
    mod = importlib.import_module(name)
    spec = getattr(mod, "APP", None)
    vsn = getattr(spec, "vsn", None)
    if vsn is None and name == RUNTIME:
        vsn = getattr(mod, "__version__", None)
    return vsn if isinstance(vsn, str) else None


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}


def build(
    spec_path: str | os.PathLike[str],
    out: str | os.PathLike[str] = "_build",
    *,
    check_versions: bool = True,
) -> Path:
    """Build ``spec_path`` into ``<out>/<name>-<vsn>.tar.gz``; returns its path.

    ``check_versions`` compares each application's ``APP.vsn`` with the spec (importing
    the package). The tarball has no top directory: unpack it into the release root.
    """
    from otp import _release_instructions

    spec_file = Path(spec_path)
    spec = load_spec(spec_file)
    _release_instructions.check_entries(spec, str(spec_file))
    proj = _project_root(spec_file)
    entries = list(spec.applications)
    if not any(a.name == RUNTIME for a in entries):
        import otp

        entries.append(AppEntry(name=RUNTIME, version=otp.__version__, start_type="load",
                                path=str(Path(otp.__file__).parent)))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-build-") as tmp:
        stage = Path(tmp)
        lib: dict[str, str] = {}
        for i, app in enumerate(entries):
            where = f"{spec_file}: applications[{i}] ({app.name})"
            src = _package_dir(app.name, app.path, proj, where)
            if check_versions and app.path is None:
                got = _app_vsn(app.name)
                if got is not None and got != app.version:
                    raise ReleaseError(
                        f"{where}: version {app.version!r} does not match the package's "
                        f"APP.vsn {got!r} ({src}); bump one of them"
                    )
            rel = f"lib/{app.name}-{app.version}"
            shutil.copytree(src, stage / rel / app.name, ignore=_ignore)
            lib[app.name] = rel
        vdir = stage / "releases" / spec.version
        vdir.mkdir(parents=True)
        taken: set[str] = set()

        def copy_config(c: str, where: str) -> str:
            src = (proj / c).resolve()
            if not src.is_file():
                raise ReleaseError(f"{spec_file}: {where}: no such file {src}")
            name, n = src.name, 1
            while name in taken:
                n += 1
                name = f"{n}-{src.name}"
            taken.add(name)
            shutil.copy2(src, vdir / name)
            return f"releases/{spec.version}/{name}"

        configs = [copy_config(c, f"config[{i}]") for i, c in enumerate(spec.config)]
        profiles = {
            p: [copy_config(c, f"profiles.{p}[{i}]") for i, c in enumerate(files)]
            for p, files in spec.profiles.items()
        }
        import otp

        resolved = spec.model_copy(update={
            "applications": [a.model_copy(update={"path": None}) for a in entries],
            "config": configs,
            "profiles": profiles,
            "lib": lib,
            "otp": otp.__version__,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        data = resolved.model_dump(exclude_none=True)
        for a in data["applications"]:
            a.pop("path", None)
        (vdir / "release.yaml").write_text(
            f"# release {spec.name} {spec.version}, built by `otp release build` from "
            f"{spec_file.name}\n" + yaml.safe_dump(data, sort_keys=False)
        )
        (stage / "releases" / "RELEASES").write_text(
            _releases_text([{"version": spec.version, "status": "permanent"}])
        )
        bindir = stage / "bin"
        bindir.mkdir()
        (bindir / spec.name).write_text(BIN_SH.replace("@NAME@", spec.name)
                                        .replace("@VSN@", spec.version))
        (bindir / "boot.py").write_text(BOOT_PY)
        os.chmod(bindir / spec.name, 0o755)
        write_manifest(stage)
        tarball = out_dir / f"{spec.name}-{spec.version}.tar.gz"
        tmp_tar = out_dir / f".{tarball.name}.part"
        with tarfile.open(tmp_tar, "w:gz") as tar:
            for path in sorted(stage.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(stage)), recursive=False)
        os.replace(tmp_tar, tarball)
    return tarball


def _releases_text(entries: Sequence[dict[str, str]]) -> str:
    return "# releases of this root and their status (otp.release_handler)\n" + (
        yaml.safe_dump(list(entries), sort_keys=False)
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: str | os.PathLike[str]) -> Path:
    """Write ``<root>/MANIFEST``: ``<sha256>  <relative path>`` for every other file."""
    r = Path(root)
    lines = [
        f"{_sha256(p)}  {p.relative_to(r).as_posix()}"
        for p in sorted(r.rglob("*"))
        if p.is_file() and p.relative_to(r).as_posix() != "MANIFEST"
    ]
    (r / "MANIFEST").write_text("\n".join(lines) + "\n")
    return r / "MANIFEST"


def verify_manifest(root: str | os.PathLike[str]) -> list[str]:
    """Check every file the ``MANIFEST`` lists; returns the problems ([] if all match).

    Files created at run time (``run/``, ``__pycache__``, unpacked later versions) are
    not checked: only what the manifest names."""
    r = Path(root)
    try:
        text = (r / "MANIFEST").read_text()
    except OSError as e:
        return [f"MANIFEST: {e}"]
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"MANIFEST line {n}: expected '<sha256>  <path>', got {line!r}")
            continue
        p = r / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif _sha256(p) != digest:
            problems.append(f"{rel}: checksum mismatch")
    return problems


# ------------------------------------------------------------------------ a root


def read_releases(root: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The entries of ``<root>/releases/RELEASES`` (``version``, ``status``)."""
    path = Path(root) / "releases" / "RELEASES"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ReleaseError(f"{path}: cannot read the releases index: {e}") from None
    return _normalise_releases(data)


def _normalise_releases(data: Any) -> list[dict[str, str]]:
    # Accept both a list of entries and a mapping (``releases: [...]`` or vsn -> status).
    if isinstance(data, dict) and "releases" in data:
        data = data["releases"]
    if isinstance(data, dict):
        data = [{"version": k, "status": v if isinstance(v, str) else v.get("status")}
                for k, v in data.items()]
    out = []
    for e in data or []:
        if isinstance(e, dict):
            vsn = e.get("version", e.get("vsn"))
            if vsn is not None:
                out.append({"version": str(vsn), "status": str(e.get("status", "unpacked"))})
    return out


def boot_version(root: str | os.PathLike[str]) -> str:
    """The version a node started from ``root`` boots: ``$OTP_RELEASE_VSN``, else the
    permanent one in ``RELEASES`` (the same rule as ``bin/boot.py``)."""
    env = os.environ.get("OTP_RELEASE_VSN")
    if env:
        return env
    return permanent_or_last(root, read_releases(root))


def permanent_or_last(root: str | os.PathLike[str], entries: list[dict[str, str]]) -> str:
    """The version of the permanent entry of ``RELEASES``, else of the last one listed
    (A6: a release installed but not made permanent is abandoned at the next boot)."""
    for e in entries:
        if e["status"] == "permanent":
            return e["version"]
    if entries:
        return entries[-1]["version"]
    raise ReleaseError(f"{root}: no release in releases/RELEASES")


def load_release(root: str | os.PathLike[str], vsn: str | None = None) -> ReleaseSpec:
    """The resolved spec of version ``vsn`` (default: the boot version) in ``root``."""
    vsn = vsn or boot_version(root)
    return load_spec(Path(root) / "releases" / vsn / "release.yaml")


def release_paths(root: str | os.PathLike[str], spec: ReleaseSpec) -> dict[str, Path]:
    """Where a running release keeps its files (all under ``<root>/run``)."""
    run = Path(root) / "run"
    return {
        "run": run,
        "pid": run / f"{spec.name}.pid",
        "socket": run / f"{spec.name}.sock",
        "log": run / f"{spec.name}.log",
        "audit": run / "remote.log",
    }


# --------------------------------------------------------------------------- boot

def config_files(spec: ReleaseSpec, profile: str | None = None) -> list[str]:
    """The config files (relative to the root) a node of ``spec`` boots with: the
    spec's ``config``, or those of the named ``profile`` (``start --config NAME``)."""
    if profile is None or profile == "default":
        return list(spec.config)
    try:
        return list(spec.profiles[profile])
    except KeyError:
        have = ", ".join(["default", *spec.profiles])
        raise ReleaseError(f"{spec.name} {spec.version}: no config {profile!r} in this "
                           f"release (it has: {have})") from None


def run_node(root: str | os.PathLike[str], *, vsn: str | None = None,
             log_level: str = "INFO", profile: str | None = None) -> int:
    """Boot the release in ``root`` in this OS process (foreground) until it is stopped;
    returns the exit status (0 after a graceful stop, 1 if it could not start or
    halted). ``profile`` picks another config shipped in the bundle (the spec's
    ``profiles``; default: its ``config``). Call it after ``otp.patch()``, before other
    imports (``bin/boot.py`` does). Logging, signals and the GC settings (the config's
    ``node.gc``) are ``otp.serve``'s, as for ``python -m chat``."""
    import socket

    from otp import remote_shell, serve

    root = Path(root).resolve()
    spec = load_release(root, vsn)
    paths = release_paths(root, spec)
    try:
        configs = config_files(spec, profile)
    except ReleaseError as e:
        print(f"{spec.name}: cannot start: {e}", file=sys.stderr, flush=True)
        return 1
    paths["run"].mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths["run"], 0o700)
    try:
        remote_shell.request(paths["socket"], "ping", timeout=5.0)
    except (remote_shell.NodeNotRunning, OSError):
        pass
    else:
        print(f"{spec.name}: already running (a node answers on {paths['socket']})",
              file=sys.stderr)
        return 1
    os.chdir(root)
    started = time.monotonic()

    def start(_config: Any) -> None:
        _boot(root, spec, paths, started, configs)

    def on_message(msg: Any) -> bool:
        match msg:
            case ("restart", caller):
                from otp import application
                from otp.process import send

                try:
                    application.stop_all()
                    running = _running_spec(root, spec)
                    send(caller, ("restarted", tuple(_start_apps(running, configs))))
                except Exception as e:  # reported to the operator, then the node stops
                    send(caller, ("restarted", f"failed: {e}"))
                    return True
        return False

    def on_stop() -> None:
        # Graceful stop: no new control connections, then applications most recent
        # first (each top supervisor stops its children in reverse start order).
        log.info("%s %s: stopping", spec.name, _running_version(root, spec))
        remote_shell.stop_server()

    try:
        status = serve.run(start, config_paths=configs, label=spec.name,
                           name=f"{spec.name}@{socket.gethostname().split('.')[0] or 'localhost'}",
                           log_level=log_level, on_message=on_message, on_stop=on_stop)
    finally:
        _remove_pid_file(paths["pid"])
        with contextlib.suppress(OSError):
            os.unlink(paths["socket"])
    if status == 0:
        print(f"{spec.name} {_running_version(root, spec)} stopped", flush=True)
    return status


def _remove_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def _start_apps(spec: ReleaseSpec, configs: list[str] | None = None) -> list[str]:
    """(Re)configure from ``configs`` (default: the spec's) and start the applications."""
    import otp.config
    from otp import application

    files = spec.config if configs is None else configs
    application.configure(otp.config.load(*files) if files else None)
    started = []
    for app in spec.applications:
        if app.start_type == "load":
            continue
        started += application.start(app.name, type=app.start_type)
    _start_ops(spec)  # (not in the list: it says what the release itself started)
    return started


def _start_ops(spec: ReleaseSpec) -> list[str]:
    """The operations application (otp.ops), after the release's own, unless the spec
    lists it itself or its config says ``otp_ops: {enabled: false}``."""
    from otp import application

    if any(a.name == "otp_ops" for a in spec.applications):
        return []
    if application.get_env("otp_ops", "enabled", True) is False:
        return []
    return application.ensure_all_started("otp_ops")


def _boot(root: Path, spec: ReleaseSpec, paths: dict[str, Path], started: float,
          configs: list[str]) -> None:
    """Start the release inside the serving process: the release handler's view of the
    root, the applications, the control socket, then the pid file ("up")."""
    from otp import remote_shell

    try:
        rh = _release_handler()
    except ReleaseError:
        pass
    else:
        rh.boot(root)  # lib dirs on the code path; a stale "current" release forgotten (A6)
    _start_apps(spec, configs)
    banner = f"{spec.name} {spec.version} on {_node_name()} (pid {os.getpid()})"
    remote_shell.start_server(paths["socket"], handlers=_handlers(root, spec, paths, configs),
                              banner=banner, audit=paths["audit"], interrupt_signal=True)
    tmp = paths["pid"].with_suffix(".pid.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, paths["pid"])
    ms = (time.monotonic() - started) * 1000
    print(f"{banner} started in {ms:.0f} ms; control socket {paths['socket']}", flush=True)


def _running_spec(root: Path, booted: ReleaseSpec) -> ReleaseSpec:
    """The spec of the release running now (after live upgrades), else the booted one."""
    try:
        vsn = _release_handler().current(str(root))
    except ReleaseError:
        return booted
    return booted if vsn == booted.version else load_release(root, vsn)


def _last_upgrade(root: Path) -> dict[str, Any] | None:
    """The last install/downgrade of this node, for ``status``."""
    try:
        rec = _release_handler().last_upgrade(str(root))
    except Exception:
        return None
    if rec is None:
        return None
    return {"word": rec.word, "from": rec.from_vsn, "to": rec.to_vsn,
            "outcome": rec.outcome,
            "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.at)),
            "seconds": round(rec.seconds, 3),
            "longest_suspension_ms": round(rec.longest_suspension * 1e3, 2),
            "steps": list(rec.steps), "error": rec.error}


def _health_check(check: str, root: Path) -> Any:
    """``upgrade --health``: ``rpc:EXPR`` is a Python expression evaluated in the node
    (healthy when true); anything else a shell command run in the root (healthy when
    it exits 0 within 10 s)."""
    if check.startswith("rpc:"):
        expr = check[4:]

        def py() -> bool:
            import otp

            return bool(eval(expr, {"otp": otp}))  # the operator's own check

        return py

    def sh() -> bool:
        import subprocess

        try:
            return subprocess.run(check, shell=True, cwd=root, timeout=10,
                                  capture_output=True).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    return sh


def _running_version(root: Path, booted: ReleaseSpec) -> str:
    """The version running now (after live upgrades), else the booted one."""
    try:
        return str(_release_handler().current(str(root)))
    except Exception:
        return booted.version


def _node_name() -> str:
    from otp.lowlevel import current_node

    return current_node().name


def _connected_nodes() -> list[str]:
    from otp import dist

    return dist.nodes()


def _rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _replication() -> dict[str, Any] | None:
    """The replicated tables' log position, lag and majority (None when this node does
    not replicate)."""
    try:
        from otp import tables

        info = tables.replication_info()
    except Exception:  # the tables application is not running here
        return None
    if info is None:
        return None
    return {k: info[k] for k in ("engine", "position", "log_end", "lag", "majority",
                                 "synced", "held", "last_error")}


def _alarms() -> list[Any]:
    from otp import ops

    return [ops.describe_alarm(a) for a in ops.snapshot_alarms()]


def _release_handler() -> Any:
    try:
        return importlib.import_module("otp.release_handler")
    except ImportError as e:
        if e.name != "otp.release_handler":
            raise
        raise ReleaseError("release handler not available in this node "
                           "(otp.release_handler is not part of its otp)") from None


def _handlers(root: Path, spec: ReleaseSpec, paths: dict[str, Path],
              configs: list[str] | None = None) -> dict[str, Any]:
    from otp import application, remote_shell, serve
    from otp.process import processes, receive, self, send

    boot_started = time.time()

    def status(_req: dict[str, Any]) -> dict[str, Any]:
        try:
            current = _release_handler().current(str(root))
        except Exception:  # no release handler yet: the booted version
            current = spec.version
        return {
            "name": spec.name,
            "version": current,
            "booted": spec.version,
            "node": _node_name(),
            "nodes": _connected_nodes(),
            "pid": os.getpid(),
            "uptime": round(time.time() - boot_started, 1),
            "applications": [[a.name, a.vsn] for a in application.which_applications()],
            "processes": len(processes()),
            "rss": _rss(),
            "alarms": _alarms(),
            "replication": _replication(),
            "root": str(root),
            "socket": str(paths["socket"]),
            "config": list(spec.config if configs is None else configs),
            "last_upgrade": _last_upgrade(root),
        }

    def rpc(req: dict[str, Any]) -> dict[str, Any]:
        out: list[str] = []
        ok, text = remote_shell.evaluate(str(req.get("expr", "")),
                                         on_output=out.append)
        if not ok:
            raise remote_shell.RemoteError("".join(out) + (text or ""))
        return {"out": "".join(out), "value": text}

    def stop(_req: dict[str, Any]) -> str:
        serve.stop()
        return "stopping"

    def restart(_req: dict[str, Any]) -> Any:
        send(serve.NAME, ("restart", self()))
        return receive(lambda m: isinstance(m, tuple) and m[0] == "restarted")[1]

    def versions(_req: dict[str, Any]) -> list[list[str]]:
        try:
            rh = _release_handler()
        except ReleaseError:
            return [[e["version"], e["status"]] for e in read_releases(root)]
        return [[str(v), str(s)] for v, s in rh.which_releases(str(root))]

    def unpack(req: dict[str, Any]) -> str:
        target = str(req["path"])
        if not os.path.exists(target):
            candidate = root / "releases" / f"{spec.name}-{target}.tar.gz"
            if not candidate.exists():
                raise ReleaseError(
                    f"unpack expects a version whose bundle is in releases/ "
                    f"({candidate.name}) or a path to a bundle, got {target!r}")
            target = str(candidate)
        return str(_release_handler().unpack(str(root), os.path.abspath(target)))

    def dry_run(rh: Any, vsn: str, direction: str) -> str:
        rep = rh.dry_run(str(root), vsn, direction)
        head = (f"dry run of the {rep.word} from {rep.from_vsn} to {vsn}: "
                f"{len(rep.steps)} instruction(s), code_change run on copies of "
                f"{rep.processes} process state(s); the node is untouched")
        if rep.failures:
            raise ReleaseError(head + f"\n{len(rep.failures)} failure(s):\n  "
                               + "\n  ".join(rep.failures))
        return head + "\nno failure: the upgrade would go through"

    def upgrade(req: dict[str, Any]) -> str:
        rh = _release_handler()
        vsn = str(req["vsn"])
        if req.get("dry_run"):
            return dry_run(rh, vsn, "up")
        health = req.get("health")
        check = None
        if health:
            check = _health_check(str(health), root)
        rh.install(str(root), vsn, health=check, within=float(req.get("within") or 30.0))
        rec = rh.last_upgrade(str(root))
        took = ""
        if rec is not None:
            took = f" in {rec.seconds:.2f} s" + (
                f", no process suspended longer than {rec.longest_suspension * 1e3:.1f} ms"
                if rec.longest_suspension else "")
        gate = f"; healthy ({health})" if health else ""
        if req.get("permanent", True):
            rh.make_permanent(str(root), vsn)
            return f"upgraded to {vsn} (permanent){took}{gate}"
        return (f"upgraded to {vsn} (not permanent: a restart boots the previous "
                f"release){took}{gate}")

    def downgrade(req: dict[str, Any]) -> str:
        rh = _release_handler()
        vsn = str(req["vsn"])
        if req.get("dry_run"):
            return dry_run(rh, vsn, "down")
        rh.downgrade(str(root), vsn)
        if req.get("permanent", True):
            rh.make_permanent(str(root), vsn)
        return f"downgraded to {vsn}"

    def remove(req: dict[str, Any]) -> str:
        gone = _release_handler().remove(str(root), str(req["vsn"]))
        return f"removed {req['vsn']} ({', '.join(gone) or 'nothing on disk'})"

    def make_permanent(req: dict[str, Any]) -> str:
        _release_handler().make_permanent(str(root), str(req["vsn"]))
        return f"{req['vsn']} is permanent"

    def top(req: dict[str, Any]) -> list[dict[str, Any]]:
        return remote_shell.top_rows(sort=str(req.get("sort", "queue")),
                                     limit=int(req.get("limit", 20)))

    return {
        "ping": lambda _req: "pong",
        "pid": lambda _req: os.getpid(),
        "status": status,
        "rpc": rpc,
        "stop": stop,
        "restart": restart,
        "versions": versions,
        "unpack": unpack,
        "upgrade": upgrade,
        "downgrade": downgrade,
        "remove": remove,
        "make_permanent": make_permanent,
        "top": top,
    } | _ops_handlers()


def _ops_handlers() -> dict[str, Any]:
    from otp import ops

    return ops.control_handlers()


# ------------------------------------------------------------------- generated files

BIN_SH = r"""#!/bin/sh
# @NAME@ release (built at @VSN@ by `otp release build`): start, daemon, stop, remote, ...
# Run `bin/@NAME@ --help`. Python: $OTP_PYTHON, else python3 on the PATH; it must have
# the project's dependencies (gevent, greenlet, msgpack, PyYAML, click, pydantic).
set -e
SELF="$0"
while [ -h "$SELF" ]; do
    LINK=$(readlink "$SELF")
    case "$LINK" in
        /*) SELF="$LINK" ;;
        *) SELF="$(dirname "$SELF")/$LINK" ;;
    esac
done
ROOT=$(cd "$(dirname "$SELF")/.." && pwd -P)
PY="${OTP_PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
    if [ -n "$OTP_PYTHON" ]; then FROM='$OTP_PYTHON'; else FROM='the PATH: OTP_PYTHON is unset'; fi
    echo "@NAME@: no Python interpreter '$PY' (from $FROM);" \
         "set OTP_PYTHON to a Python 3.10+ with gevent, greenlet, msgpack, PyYAML, click" \
         "and pydantic, e.g. export OTP_PYTHON=/path/to/venv/bin/python" >&2
    exit 1
fi
exec "$PY" "$ROOT/bin/boot.py" "$ROOT" "@NAME@" "$@"
"""

BOOT_PY = r'''"""Release boot: pick the boot version, put its lib/ first on the path, run the CLI.

Generated by `otp release build`. Imports nothing of the release before sys.path is set,
and applies gevent's monkey-patching before anything else for commands that run a node.
"""
import os
import sys

NODE_COMMANDS = {"start", "foreground", "console", "eval"}


def main():
    root, name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    how = ("set OTP_PYTHON to a Python 3.10+ that has gevent, greenlet, msgpack, PyYAML, "
           "click and pydantic (e.g. export OTP_PYTHON=/path/to/venv/bin/python), or "
           "install them into this one")
    which = "$OTP_PYTHON" if os.environ.get("OTP_PYTHON") else "python3 on the PATH"
    if sys.version_info < (3, 10):
        sys.exit(f"{name}: {sys.executable} ({which}) is Python "
                 f"{sys.version.split()[0]}; the release needs 3.10+: {how}")
    try:
        if argv and argv[0] in NODE_COMMANDS:
            from gevent import monkey

            monkey.patch_all()
        import click, gevent, greenlet, msgpack, pydantic, yaml  # noqa: F401,E401
    except ImportError as e:
        sys.exit(f"{name}: {sys.executable} ({which}) lacks the release's dependencies "
                 f"({e}): {how}")

    vsn = os.environ.get("OTP_RELEASE_VSN")
    if not vsn:
        path = os.path.join(root, "releases", "RELEASES")
        with open(path) as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict) and "releases" in data:
            data = data["releases"]
        if isinstance(data, dict):
            data = [{"version": k, "status": v if isinstance(v, str) else v.get("status")}
                    for k, v in data.items()]
        entries = [e for e in data or [] if isinstance(e, dict)]
        permanent = [e for e in entries if e.get("status") == "permanent"]
        chosen = (permanent or entries or [None])[-1]
        if chosen is None:
            sys.exit(f"{name}: no release in {path}")
        vsn = str(chosen.get("version", chosen.get("vsn")))
    with open(os.path.join(root, "releases", vsn, "release.yaml")) as f:
        spec = yaml.safe_load(f)
    libs = [os.path.join(root, d) for d in spec.get("lib", {}).values()]
    sys.path[:0] = libs
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(libs + ([old] if old else []))
    os.environ["OTP_RELEASE_ROOT"] = root
    os.environ["OTP_RELEASE_VSN"] = vsn
    os.environ["OTP_RELEASE_NAME"] = name
    from otp import cli

    cli.release_main(argv, prog_name=name)


main()
'''


"""Private: ``unpack`` and ``remove`` of ``otp.release_handler`` (see its docstring):
copying a checked bundle into a release root, deleting a release from one."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path

import otp.release_handler as rh
from otp import _release_bundle as _bundle
from otp import _release_instructions as _instr
from otp.release import ReleaseError, load_spec


def unpack(root: str | os.PathLike[str], bundle: str | os.PathLike[str]) -> str:
    """Unpack a release bundle (a directory, or a tarball made by ``otp release
    build``) into ``root``; returns its version, now ``unpacked``.

    Copies ``releases/<vsn>/`` and the ``lib/<app>-<vsn>/`` dirs it lacks (a lib dir
    already there must have the same contents); keeps the bundle's ``MANIFEST`` as
    ``releases/<vsn>/MANIFEST``. Into an empty root, ``bin/`` and ``MANIFEST`` are
    copied too. ``ReleaseError`` (nothing written) for a bad bundle."""
    r = Path(root)
    src = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="otp-unpack-") as tmp:
        if src.is_dir():
            base = src
        elif src.is_file():
            base = _bundle.extract(src, Path(tmp))
        else:
            raise ReleaseError(f"no release bundle at {src}")
        specs = sorted((base / "releases").glob("*/release.yaml"))
        if len(specs) != 1:
            raise ReleaseError(
                f"bundle {src}: expected exactly one releases/<vsn>/release.yaml, found "
                f"{[str(p.relative_to(base)) for p in specs] or 'none'}"
            )
        vsn = specs[0].parent.name
        spec = load_spec(specs[0])
        if spec.version != vsn:
            raise ReleaseError(
                f"bundle {src}: releases/{vsn}/release.yaml says version {spec.version!r}"
            )
        if (base / "MANIFEST").is_file():
            _bundle.check_manifest(base, str(src))
        _instr.check_entries(spec, f"bundle {src}, releases/{vsn}/release.yaml")
        known = dict(rh.which_releases(r))
        if vsn in known or (r / "releases" / vsn).exists():
            state = known.get(vsn, "a directory without a RELEASES entry")
            how = (f"`bin/{spec.name} remove {vsn}` (otp.release_handler.remove) deletes "
                   f"it, then unpack again to replace it"
                   if known.get(vsn) in ("unpacked", "old") or vsn not in known else
                   f"it is {state}: upgrade or downgrade to another release first, "
                   f"then remove it to replace it; or give the new bundle a new version")
            raise ReleaseError(f"release {vsn} is already in {root} ({state}): {how}")
        copies: list[tuple[Path, Path]] = []
        for app in spec.applications:
            rel = spec.lib.get(app.name, f"lib/{app.name}-{app.version}")
            s, d = base / rel, r / rel
            if not s.is_dir():
                raise ReleaseError(f"bundle {src}: application {app.name} has no {rel}/")
            if d.exists():
                if not _bundle.same_tree(s, d):
                    raise ReleaseError(
                        f"{d} is already unpacked with other contents than bundle {src} "
                        f"has: give application {app.name} a new version"
                    )
            else:
                copies.append((s, d))
        copies.append((base / "releases" / vsn, r / "releases" / vsn))
        if not (r / "bin").exists() and (base / "bin").is_dir():
            copies.append((base / "bin", r / "bin"))
        done: list[Path] = []
        try:
            for s, d in copies:
                d.parent.mkdir(parents=True, exist_ok=True)
                part = d.with_name(f".{d.name}.part")
                shutil.rmtree(part, ignore_errors=True)
                shutil.copytree(s, part, symlinks=False)
                os.replace(part, d)
                done.append(d)
            if (base / "MANIFEST").is_file():
                shutil.copy2(base / "MANIFEST", r / "releases" / vsn / "MANIFEST")
                if not (r / "MANIFEST").exists():
                    shutil.copy2(base / "MANIFEST", r / "MANIFEST")
        except OSError as e:
            for d in reversed(done):
                shutil.rmtree(d, ignore_errors=True)
            raise ReleaseError(f"unpacking {src} into {root} failed: {e}") from e
    entries = rh._read(r)
    entries.append({"version": vsn, "status": "unpacked"})
    rh._write(r, entries)
    return vsn


def remove(root: str | os.PathLike[str], vsn: str) -> list[str]:
    """Delete release ``vsn`` from ``root`` (OTP's ``remove_release``): its
    ``releases/<vsn>/`` and the lib dirs no other release of the root uses, and its
    ``RELEASES`` entry. Refused for the running release and the permanent one.
    Returns the directories deleted (relative to the root)."""
    r = Path(root)
    status = dict(rh.which_releases(r))
    vdir = r / "releases" / vsn
    if vsn not in status and not vdir.exists():
        raise ReleaseError(f"release {vsn} is not in {root} (releases: {sorted(status)})")
    running = None
    with suppress(ReleaseError):
        running = rh.current(r)
    if vsn == running or status.get(vsn) in ("permanent", "current"):
        raise ReleaseError(
            f"release {vsn} is {'running' if vsn == running else status[vsn]} in {root}: "
            f"only an unpacked or old release can be removed (upgrade or downgrade to "
            f"another release, and make it permanent, first)"
        )
    used: set[str] = set()
    for other in status:
        if other != vsn and (r / "releases" / other / "release.yaml").is_file():
            used.update(rh._spec(r, other).lib.values())
    mine: set[str] = set()
    if (vdir / "release.yaml").is_file():
        mine = set(rh._spec(r, vsn).lib.values())
    gone = []
    for rel in sorted(mine - used):
        d = r / rel
        if d.is_dir() and d.resolve().is_relative_to(r.resolve()):
            shutil.rmtree(d)
            gone.append(rel)
    if vdir.exists():
        shutil.rmtree(vdir)
        gone.append(f"releases/{vsn}")
    rh._write(r, [e for e in rh._read(r) if e["version"] != vsn])
    rh.log.info("release %s removed from %s: %s", vsn, r, gone)
    return gone

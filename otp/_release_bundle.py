"""Private: the files of a release bundle for ``otp.release_handler.unpack``: its
``MANIFEST`` check, safe tarball extraction, and comparing a lib dir with one already
unpacked."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

from otp.release import ReleaseError


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def files(base: Path) -> Iterator[Path]:
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base)
        if p.is_file() and "__pycache__" not in rel.parts and p.suffix not in (".pyc", ".pyo"):
            yield p


def check_manifest(base: Path, where: str) -> None:
    problems = []
    listed: dict[str, str] = {}
    for n, line in enumerate((base / "MANIFEST").read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"MANIFEST line {n}: expected '<sha256>  <path>', got {line!r}")
        else:
            listed[rel] = digest
    for rel, digest in listed.items():
        p = base / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"{rel}: a path outside the bundle")
        elif not p.is_file():
            problems.append(f"{rel}: listed in MANIFEST but missing")
        elif sha256(p) != digest:
            problems.append(f"{rel}: bad checksum (MANIFEST says {digest[:12]}..., "
                            f"the file has {sha256(p)[:12]}...)")  # fmt: skip
    for p in files(base):
        rel = p.relative_to(base).as_posix()
        if rel != "MANIFEST" and rel not in listed and rel.split("/")[0] in ("lib", "releases"):
            problems.append(f"{rel}: not listed in MANIFEST")
    if problems:
        raise ReleaseError(
            f"bundle {where} refused, nothing unpacked: " + "; ".join(problems[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        )


def extract(tarball: Path, into: Path) -> Path:
    try:
        with tarfile.open(tarball) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                for m in tar.getmembers():
                    if m.name.startswith("/") or ".." in Path(m.name).parts or m.issym() \
                            or m.islnk():  # fmt: skip
                        raise ReleaseError(f"{tarball}: unsafe member {m.name!r}")
                tar.extractall(into)
    except (tarfile.TarError, OSError) as e:
        raise ReleaseError(f"{tarball}: not a readable release tarball: {e}") from None
    if not (into / "releases").is_dir():
        subs = [p for p in into.iterdir() if p.is_dir()]
        if len(subs) == 1 and (subs[0] / "releases").is_dir():
            return subs[0]
    return into


def same_tree(a: Path, b: Path) -> bool:
    fa = {p.relative_to(a).as_posix(): p for p in files(a)}
    fb = {p.relative_to(b).as_posix(): p for p in files(b)}
    return fa.keys() == fb.keys() and all(sha256(fa[k]) == sha256(fb[k]) for k in fa)

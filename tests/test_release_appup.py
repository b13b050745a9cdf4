"""otp.release_appup: upgrade instructions generated from two versions' modules, written
into the spec, and ``build --upgrade-from`` refusing an empty or incomplete upgrade."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otp import release, release_appup
from otp.release import ReleaseError
from tests.test_release_handler import SERVER_V1, SERVER_V2, make_bundle, write_app

SPEC = """\
# the rh_kv release
name: rhk
version: 2.0.0
applications:
  - name: rh_kv
    version: 2.0.0
    start_type: temporary
    path: src/rh_kv
upgrades: []   # none yet
"""


def project(tmp: Path, extra: dict | None = None) -> Path:
    """A project whose rh_kv 2.0.0 changes server (a behaviour), util (a library) and
    adds media; returns the spec's path."""
    write_app(tmp / "work", "2.0.0", SERVER_V2, "v2", extra)
    (tmp / "src").mkdir()
    (tmp / "work" / "rh_kv-2.0.0" / "rh_kv").rename(tmp / "src" / "rh_kv")
    (tmp / "releases").mkdir()
    spec = tmp / "releases" / "rhk.yaml"
    spec.write_text(SPEC)
    return spec


def test_appup_writes_update_for_behaviours_and_load_module_for_libraries(tmp_path):
    old = make_bundle(tmp_path, "1.0.0", SERVER_V1, "v1")
    spec = project(tmp_path, {"media.py": "LIMIT = 10\n"})
    d = release_appup.diff(old, spec)
    assert sorted(d.changed) == ["rh_kv.server", "rh_kv.util"]
    assert d.added == ["rh_kv.media"] and d.deleted == []
    assert d.version_only == ["rh_kv"]  # only APP's version changed in __init__
    entry = release_appup.generate(old, spec)
    assert entry == {"from": "1.0.0", "instructions": [
        ["add_module", "rh_kv.media"], ["load_module", "rh_kv.util"],
        ["update", "rh_kv.server"]]}  # fmt: skip
    # written into the spec, comments kept, the spec still valid; a second time refused
    release_appup.write_entry(spec, release_appup.format_entry(entry, d), "1.0.0")
    text = spec.read_text()
    assert text.startswith("# the rh_kv release\n")
    parsed = release.load_spec(spec)
    assert parsed.upgrades == [entry]
    with pytest.raises(ReleaseError, match=r"has an upgrades entry from 1\.0\.0 already"):
        release_appup.write_entry(spec, release_appup.format_entry(entry, d), "1.0.0")


def test_a_deleted_module_is_deleted_last(tmp_path):
    old = make_bundle(tmp_path, "1.0.0", SERVER_V1, "v1", extra={"gone.py": "X = 1\n"})
    spec = project(tmp_path)
    steps = release_appup.generate(old, spec)["instructions"]
    assert steps[-1] == ["delete_module", "rh_kv.gone"]


def test_check_refuses_a_missing_empty_or_incomplete_upgrade(tmp_path):
    old = make_bundle(tmp_path, "1.0.0", SERVER_V1, "v1")
    spec = project(tmp_path)
    d = release_appup.diff(old, spec)
    with pytest.raises(ReleaseError, match=r"no upgrade from 1\.0\.0.*otp release appup"):
        release_appup.check(release.load_spec(spec), d)
    data = yaml.safe_load(spec.read_text())
    data["upgrades"] = [{"from": "1.0.0", "instructions": [["load_module", "rh_kv.util"]]}]
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(ReleaseError, match=r"incomplete: rh_kv\.server changed but no "
                                           r"instruction names it"):
        release_appup.check(release.load_spec(spec), d)
    data["upgrades"][0]["instructions"].append(["update", "rh_kv.server"])
    spec.write_text(yaml.safe_dump(data))
    release_appup.check(release.load_spec(spec), d)


def test_build_refuses_empty_instructions(tmp_path):
    spec = project(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["upgrades"] = [{"from": "1.0.0", "instructions": []}]
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(ReleaseError, match=r"upgrades\[0\] \(from 1\.0\.0\) has no "
                                           r"instructions"):  # fmt: skip
        release.build(spec, tmp_path / "_build", check_versions=False)


def otp_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otp", "release", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_generates_then_builds_with_upgrade_from(tmp_path):
    old = make_bundle(tmp_path, "1.0.0", SERVER_V1, "v1")
    spec = project(tmp_path)
    r = otp_cli("build", str(spec), "--out", "_build", "--upgrade-from", str(old),
                cwd=tmp_path)
    assert r.returncode == 1 and "no upgrade from 1.0.0" in r.stderr, r.stderr
    r = otp_cli("appup", str(old), str(spec), "--write", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "- [update, rh_kv.server]" in r.stdout and "written to" in r.stderr
    r = otp_cli("build", str(spec), "--out", "_build", "--upgrade-from", str(old),
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "_build" / "rhk-2.0.0.tar.gz").is_file()

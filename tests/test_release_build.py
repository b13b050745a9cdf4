"""Release bundles: ``otp release build`` (otp.release.build), the bundle's layout and
manifest, and how a root picks the version it boots."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import otp
from otp import release
from otp.__main__ import cli
from otp.release import ReleaseError
from tests.release_helpers import SPEC, write_project


def _unpack(tarball: Path, dest: Path) -> Path:
    dest.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(dest)
    return dest


def test_build_produces_a_versioned_tarball_in_the_otp_layout(tmp_path: Path) -> None:
    tarball = release.build(write_project(tmp_path / "src"), tmp_path / "_build")
    assert tarball == tmp_path / "_build" / "chat-0.1.0.tar.gz"
    root = _unpack(tarball, tmp_path / "rel")
    assert (root / "lib" / "chat-0.1.0" / "chat" / "__init__.py").is_file()
    assert (root / "lib" / f"otp-{otp.__version__}" / "otp" / "__init__.py").is_file()
    assert not list(root.rglob("__pycache__"))
    assert (root / "releases" / "0.1.0" / "test.yaml").is_file()
    assert os.access(root / "bin" / "chat", os.X_OK)
    spec = release.load_release(root)
    assert spec.version == "0.1.0"
    assert spec.config == ["releases/0.1.0/test.yaml"]
    assert spec.lib == {"chat": "lib/chat-0.1.0", "otp": f"lib/otp-{otp.__version__}"}
    assert [a.name for a in spec.applications] == ["chat", "otp"]
    assert release.read_releases(root) == [{"version": "0.1.0", "status": "permanent"}]


def test_manifest_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    root = _unpack(release.build(write_project(tmp_path / "src"), tmp_path / "b"),
                   tmp_path / "rel")
    listed = {line.split("  ", 1)[1] for line in (root / "MANIFEST").read_text().splitlines()}
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert listed == files - {"MANIFEST"}
    assert release.verify_manifest(root) == []


def test_manifest_check_names_a_modified_and_a_missing_file(tmp_path: Path) -> None:
    root = _unpack(release.build(write_project(tmp_path / "src"), tmp_path / "b"),
                   tmp_path / "rel")
    (root / "releases" / "0.1.0" / "test.yaml").write_text("chat: {}\n")
    (root / "bin" / "boot.py").unlink()
    assert sorted(release.verify_manifest(root)) == [
        "bin/boot.py: missing", "releases/0.1.0/test.yaml: checksum mismatch"]


def test_upgrade_instructions_from_the_spec_are_in_the_bundle(tmp_path: Path) -> None:
    instructions = [{"from": "0.0.9", "instructions": [["load_module", "chat.users"]]}]
    spec = SPEC.replace("upgrades: []", "upgrades: " + yaml.safe_dump(instructions,
                                                                       default_flow_style=True))
    root = _unpack(release.build(write_project(tmp_path / "src", spec), tmp_path / "b"),
                   tmp_path / "rel")
    assert release.load_release(root).upgrades == instructions


def test_build_refuses_a_version_that_does_not_match_the_app_vsn(tmp_path: Path) -> None:
    spec = SPEC.replace("    version: 0.1.0\n", "    version: 9.9.9\n")
    with pytest.raises(ReleaseError, match=r"applications\[0\] \(chat\).*'9.9.9'.*'0.1.0'"):
        release.build(write_project(tmp_path / "src", spec), tmp_path / "b")


def test_build_refuses_a_missing_config_file(tmp_path: Path) -> None:
    spec_path = write_project(tmp_path / "src")
    (tmp_path / "src" / "config" / "test.yaml").unlink()
    with pytest.raises(ReleaseError, match=r"config\[0\]: no such file"):
        release.build(spec_path, tmp_path / "b")


def test_build_refuses_an_application_that_is_not_a_package(tmp_path: Path) -> None:
    spec = SPEC.replace("  - name: chat\n", "  - name: no_such_app_xyz\n")
    with pytest.raises(ReleaseError, match="no_such_app_xyz"):
        release.build(write_project(tmp_path / "src", spec), tmp_path / "b")


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    spec = SPEC.replace("version: 0.1.0\napplications", "version: 'bad version'\napplications")
    with pytest.raises(ReleaseError, match=r"chat.yaml: version: String should match"):
        release.build(write_project(tmp_path / "src", spec), tmp_path / "b")


def test_a_root_boots_its_permanent_release_not_the_newest(tmp_path: Path) -> None:
    # docs/semantics.md A6: an installed but not permanent release is abandoned on restart.
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "RELEASES").write_text(yaml.safe_dump([
        {"version": "0.1.0", "status": "permanent"},
        {"version": "0.2.0", "status": "current"},
    ]))
    assert release.boot_version(tmp_path) == "0.1.0"


def test_the_releases_index_may_be_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "RELEASES").write_text(
        "releases:\n  - {vsn: 0.1.0, status: old}\n  - {vsn: 0.2.0, status: permanent}\n")
    assert release.boot_version(tmp_path) == "0.2.0"


def test_otp_release_build_through_the_cli(tmp_path: Path) -> None:
    spec_path = write_project(tmp_path / "src")
    result = CliRunner().invoke(cli, ["release", "build", str(spec_path),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "out" / "chat-0.1.0.tar.gz")
    mode = (tmp_path / "out" / "chat-0.1.0.tar.gz").stat().st_mode
    assert stat.S_ISREG(mode)


def test_otp_release_build_reports_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    spec_path = write_project(tmp_path / "src", SPEC.replace("name: chat\nversion", "version"))
    result = CliRunner().invoke(cli, ["release", "build", str(spec_path)])
    assert result.exit_code == 1
    assert "name: Field required" in result.output


def test_a_node_command_without_a_root_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["release", "ping"], env={"OTP_RELEASE_ROOT": ""})
    assert result.exit_code == 2
    assert "no release root" in result.output


def test_bin_script_without_the_dependencies_says_what_is_missing(tmp_path: Path) -> None:
    import shutil
    import subprocess

    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3")
    probe = subprocess.run([system_python, "-c", "import gevent"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the system python3 has gevent")
    root = _unpack(release.build(write_project(tmp_path / "src"), tmp_path / "b"),
                   tmp_path / "rel")
    res = subprocess.run([str(root / "bin" / "chat"), "start"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "OTP_PYTHON": system_python},
                         timeout=60)
    assert res.returncode == 1
    assert "lacks the release's dependencies" in res.stderr
    assert "$OTP_PYTHON" in res.stderr


def test_the_shipped_chat_spec_builds(tmp_path: Path) -> None:
    spec_path = Path(__file__).resolve().parent.parent / "releases" / "chat.yaml"
    tarball = release.build(spec_path, tmp_path)
    root = _unpack(tarball, tmp_path / "rel")
    spec = release.load_release(root)
    assert tarball.name == f"chat-{spec.version}.tar.gz"
    assert spec.config == [f"releases/{spec.version}/prod.yaml"]
    assert release.verify_manifest(root) == []


def test_otp_release_build_says_when_it_replaces_a_bundle(tmp_path: Path) -> None:
    """A copy of a spec that keeps its name builds over the original's bundle: said."""
    spec_path = write_project(tmp_path / "src")
    args = ["release", "build", str(spec_path), "--out", str(tmp_path / "out")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "replaced" not in first.output, first.output
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == str(tmp_path / "out" / "chat-0.1.0.tar.gz")
    assert "replaced the earlier chat-0.1.0.tar.gz" in second.stderr

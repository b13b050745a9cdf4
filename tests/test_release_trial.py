"""The shipped release spec out of the box: the README's trial walkthrough (build,
unpack, ``bin/chat daemon --config dev``, ping, status, rpc, stop) run as written, the
production config's one-line error on a machine without its certificate, and
``bin/chat``'s check of its interpreter. Loopback only; only our own pids are killed."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from otp import release
from tests.release_helpers import bin_chat, env, kill_by_pid

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "releases" / "chat.yaml"
# the trial's port: the dev config's 5280 may be taken on a test machine
ANY_PORT = {"OTP_CHAT__LISTEN__PORT": "0"}


def sh_blocks(path: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def commands(block: str) -> list[str]:
    """The block's command lines, comments dropped."""
    out = []
    for line in block.splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("shipped")
    tarball = release.build(SHIPPED, base / "_build")
    root = base / "rel"
    root.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(root)
    return root


def test_the_shipped_bundle_carries_the_dev_config_for_a_trial(shipped_root: Path) -> None:
    spec = release.load_release(shipped_root)
    assert spec.profiles == {"dev": [f"releases/{spec.version}/dev.yaml"]}
    assert (shipped_root / spec.profiles["dev"][0]).is_file()
    assert release.verify_manifest(shipped_root) == []


def test_the_production_config_names_the_missing_certificate_and_its_key(
        shipped_root: Path) -> None:
    cert = "/etc/chat/tls/cert.pem"
    if os.path.exists(cert):
        pytest.skip(f"{cert} exists on this machine")
    res = bin_chat(shipped_root, "daemon")
    assert res.returncode == 1, res.stdout + res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("chat did not start (exit status 1): chat: cannot start: "), first
    assert "listen.tls.certfile" in first and cert in first, first
    assert "OTP_CHAT__LISTEN__TLS__CERTFILE" in first
    assert "bin/chat daemon --config dev" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (shipped_root / "run" / "chat.pid").exists()


def test_an_unknown_config_name_is_a_usage_error(shipped_root: Path) -> None:
    res = bin_chat(shipped_root, "daemon", "--config", "staging")
    assert res.returncode == 2
    assert "no config 'staging' in this release (it has: default, dev)" in res.stderr


def test_readme_release_trial_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's "Operating a release" block, with its paths in a temporary directory
    and any free port; the interactive commands (remote, top) are left out."""
    block = next(b for b in sh_blocks(REPO / "README.md") if "daemon --config dev" in b)
    trial = tmp_path / "chat-trial"
    e = {**env(tmp_path), **ANY_PORT, "PATH": f"{Path(sys.executable).parent}:"
         f"{os.environ.get('PATH', '/usr/bin:/bin')}"}
    outputs: dict[str, str] = {}
    try:
        for cmd in commands(block):
            cmd = (cmd.replace("/tmp/chat-trial", str(trial))
                   .replace("--out _build", f"--out {tmp_path / '_build'}")
                   .replace("_build/", f"{tmp_path / '_build'}/")
                   .replace(".venv/bin/otp", f"{shlex.quote(sys.executable)} -m otp"))
            if cmd.startswith("export OTP_PYTHON="):
                continue  # env() sets it to this interpreter
            if cmd.split()[0].endswith("bin/chat") and cmd.split()[1] in ("remote", "top"):
                continue  # interactive
            res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                                 env=e, cwd=REPO, timeout=120)
            assert res.returncode == 0, f"{cmd}: {res.stdout}{res.stderr}"
            outputs[cmd.split()[1] if "bin/chat" in cmd else cmd] = res.stdout
    finally:
        pid_file = trial / "run" / "chat.pid"
        if pid_file.exists():
            kill_by_pid(int(pid_file.read_text()))
    assert "chat 0.1.0 started with config dev" in outputs["daemon"]
    assert outputs["ping"] == "pong\n"
    assert "applications  chat 0.1.0" in outputs["status"]
    assert "config        releases/0.1.0/dev.yaml" in outputs["status"]
    host, port = ast.literal_eval(outputs["rpc"])
    assert host == "127.0.0.1" and port > 0
    assert outputs["stop"] == "chat stopped\n"
    log = (trial / "run" / "chat.log").read_text()
    assert "Traceback" not in log, log


def test_a_release_node_applies_the_configs_gc_settings(shipped_root: Path,
                                                        tmp_path: Path) -> None:
    """``node.gc`` of the config (config/dev.yaml: chat's thresholds, frozen start-up
    objects) is applied by the release's start, as by ``python -m chat``."""
    res = bin_chat(shipped_root, "daemon", "--config", "dev", extra_env=ANY_PORT)
    assert res.returncode == 0, res.stderr
    pid = int((shipped_root / "run" / "chat.pid").read_text())
    try:
        res = bin_chat(shipped_root, "rpc", "import gc; print((gc.get_threshold(), "
                                            "gc.get_freeze_count() > 0))")
        assert res.stdout.strip() == "((10000, 4, 1000), True)", res.stdout + res.stderr
        res = bin_chat(shipped_root, "stop")
        assert res.returncode == 0, res.stderr
    finally:
        kill_by_pid(pid)


def test_bin_chat_without_a_usable_python_says_to_set_otp_python(shipped_root: Path) -> None:
    res = subprocess.run([str(shipped_root / "bin" / "chat"), "ping"], capture_output=True,
                         text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "OTP_PYTHON": "/nonexistent/python3"})
    assert res.returncode == 1
    assert "no Python interpreter '/nonexistent/python3' (from $OTP_PYTHON)" in res.stderr
    assert "set OTP_PYTHON" in res.stderr

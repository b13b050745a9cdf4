"""otp.serve, the node-serving entry point: the ``node:`` section of the config (GC
settings), and the one-line reason of a start that failed. (Serving itself runs in
subprocesses: tests/test_chat_cli.py, tests/test_release_cli.py, test_release_trial.py.)"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import otp.config
from otp import serve
from otp.errors import ApplicationError, ConfigError, StartError

REPO = Path(__file__).resolve().parent.parent


def test_node_gc_settings_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("node:\n  gc: {thresholds: [5000, 5, 50], freeze: true}\n")
    settings = serve.node_settings(otp.config.load(tmp_path / "a.yaml"))
    assert settings == serve.GcSettings(thresholds=(5000, 5, 50), freeze=True)
    assert serve.node_settings(None) is None
    (tmp_path / "b.yaml").write_text("chat: {env: dev}\n")
    assert serve.node_settings(otp.config.load(tmp_path / "b.yaml")) is None


def test_a_bad_node_setting_names_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("node:\n  gc:\n    thresholds: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"a\.yaml.*node\.gc\.thresholds"):
        serve.node_settings(otp.config.load(tmp_path / "a.yaml"))
    (tmp_path / "b.yaml").write_text("node:\n  gcc: {}\n")
    with pytest.raises(ConfigError, match=r"b\.yaml.*node\.gcc: Extra inputs"):
        serve.node_settings(otp.config.load(tmp_path / "b.yaml"))


def test_apply_gc_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        serve.apply_gc(serve.GcSettings(thresholds=(1234, 5, 6)))
        assert gc.get_threshold() == (1234, 5, 6)
        serve.apply_gc(None)
        assert gc.get_threshold() == (1234, 5, 6)
    finally:
        gc.set_threshold(*before)


def test_why_gives_the_innermost_reason_of_a_failed_start() -> None:
    inner = OSError(2, "No such file or directory", "/etc/chat/tls/cert.pem")
    e = ApplicationError("application 'chat' failed to start",
                         ("failed_to_start_child", "listener", StartError(inner)))
    assert serve.why(e) == "No such file or directory: /etc/chat/tls/cert.pem"
    assert serve.why(ApplicationError("x", ConfigError("chat port: bad"))) == "chat port: bad"
    assert serve.why(ConfigError("plain")) == "plain"


def _otp_serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTP_")},
           "OTP_CHAT__LISTEN__PORT": "0", "OTP_CHAT__DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen([sys.executable, "-m", "otp", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def test_otp_serve_starts_applications_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    proc = _otp_serve(tmp_path, "chat", "--config", "config/dev.yaml", "--log-level", "WARNING")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # ends if the node dies: the assert says so
        assert line.startswith("serving chat on nonode@nohost"), line + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out == "stopped\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_otp_serve_of_an_unknown_application_says_so_in_one_line(tmp_path: Path) -> None:
    proc = _otp_serve(tmp_path, "no_such_app_xyz")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no_such_app_xyz: cannot start: "), err

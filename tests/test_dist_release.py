"""A release's distribution: the ``node.dist`` keys of its config (otp.serve) start
distribution before the applications, join the seeds, and ``bin/<release> status``
lists the connected nodes while ``rpc`` keeps working over the Unix socket."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest

import otp.config
from otp import serve
from otp.errors import ConfigError
from otp.testing_dist import Cluster
from tests.release_helpers import CONFIG, SPEC, bin_chat, daemon, write_project


def test_node_dist_settings_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "node:\n  dist:\n    name: a@127.0.0.1\n    cookie_file: /etc/c\n"
        "    seeds: [b@127.0.0.1, c@127.0.0.1]\n"
        "    tls: {certfile: n.pem, keyfile: n.key, cafile: ca.pem}\n"
    )
    got = serve.dist_settings(otp.config.load(tmp_path / "a.yaml"))
    assert got == serve.DistSettings(
        name="a@127.0.0.1", cookie_file="/etc/c", seeds=("b@127.0.0.1", "c@127.0.0.1"),
        tls=serve.TlsFiles(certfile="n.pem", keyfile="n.key", cafile="ca.pem"),
    )  # fmt: skip
    assert got.listen == "127.0.0.1"
    assert got.busy_wait_us == 200.0
    assert serve.dist_settings(None) is None
    (tmp_path / "c.yaml").write_text("node:\n  dist: {name: a@h, busy_wait_us: -5}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*node\.dist\.busy_wait_us"):
        serve.dist_settings(otp.config.load(tmp_path / "c.yaml"))
    (tmp_path / "b.yaml").write_text("node:\n  dist: {name: a@h, seed: [x]}\n")
    with pytest.raises(ConfigError, match=r"b\.yaml.*node\.dist\.seed: Extra inputs"):
        serve.dist_settings(otp.config.load(tmp_path / "b.yaml"))


def test_start_dist_without_a_name_does_nothing() -> None:
    assert serve.start_dist(None) is None
    assert serve.start_dist(serve.DistSettings()) is None


def _until(what: str, fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.1)


def test_release_node_joins_its_seed_and_status_lists_nodes(tmp_path: Path) -> None:
    from otp import release

    cookie = tmp_path / "cookie"
    cookie.write_text("otpy-test")
    os.chmod(cookie, 0o400)
    with Cluster(tmp_path / "logs") as c:
        seed = c.otpy("seed")
        seed.exec("dist.join([])")
        config = CONFIG + (
            "node:\n  dist:\n    name: rel@127.0.0.1\n"
            f"    cookie_file: {cookie}\n    epmd_port: {c.epmd_port}\n"
            f"    seeds: [{seed.name}]\n"
        )
        tarball = release.build(write_project(tmp_path / "src", SPEC, config), tmp_path / "_build")
        root = tmp_path / "rel"
        root.mkdir()
        with tarfile.open(tarball) as tar:
            tar.extractall(root)
        with daemon(root):

            def status() -> dict:  # type: ignore[type-arg]
                res = bin_chat(root, "status", "--json")
                assert res.returncode == 0, res.stdout + res.stderr
                return json.loads(res.stdout)  # type: ignore[no-any-return]

            st = _until("nodes", lambda: (s := status())["nodes"] and s)
            assert st["node"] == "rel@127.0.0.1"
            assert st["nodes"] == [seed.name]
            assert seed.eval("dist.ping('rel@127.0.0.1')") == "pong"
            res = bin_chat(root, "rpc", "1 + 1")
            assert res.returncode == 0 and "2" in res.stdout, res.stdout + res.stderr
            text = bin_chat(root, "status").stdout
            assert f"nodes         {seed.name}" in text

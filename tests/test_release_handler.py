"""otp.release_handler: unpack, install with rollback, make_permanent, downgrade, boot
(docs/semantics.md A4, A6, A7). A small application ``rh_kv`` (a registered key-counter
server) is generated in versions into tmp_path as release bundles."""

from __future__ import annotations

import importlib
import re
import sys
import tarfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from otp import application, code, gen_server, release
from otp import release_handler as rh
from otp import sys as otp_sys
from otp.process import whereis
from otp.release import ReleaseError, write_manifest

APP_INIT = """
from otp.application import AppSpec
from rh_kv.app import KvApp

APP = AppSpec("rh_kv", "{vsn}", KvApp)
"""

APP_MOD = """
from otp import gen_server
from otp.application import Application
from rh_kv import server

class KvApp(Application):
    def start(self, start_type, args):
        return gen_server.start_link(server.Store, 0, name="rh_store")
"""

SERVER_V1 = """
from otp.gen_server import GenServer, NoReply, Reply
from rh_kv import util

class Store(GenServer):
    # state: the count (an int)
    def handle_call(self, request, from_, state):
        match request:
            case "get":
                return Reply((util.TAG, state), state)
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        match request:
            case ("add", n):
                return NoReply(state + n)
        return super().handle_cast(request, state)
"""

SERVER_V2 = """
from otp.gen_server import GenServer, NoReply, Reply
from rh_kv import util

class Store(GenServer):
    # state: ("v2", count, label)
    def handle_call(self, request, from_, state):
        match request:
            case "get":
                return Reply((util.TAG, state[1]), state)
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        match request:
            case ("add", n):
                return NoReply(("v2", state[1] + n, state[2]))
        return super().handle_cast(request, state)

    def code_change(self, old_vsn, state, extra):
        match old_vsn:
            case ("down", _):
                return state[1]
        if state == 7:
            raise ValueError("cannot migrate a count of 7")
        return ("v2", state, (old_vsn, dict(extra or ()).get("label")))
"""


def write_app(lib: Path, vsn: str, server: str, tag: str, extra: dict | None = None) -> None:
    pkg = lib / f"rh_kv-{vsn}" / "rh_kv"
    pkg.mkdir(parents=True)
    files = {
        "__init__.py": APP_INIT.format(vsn=vsn),
        "app.py": APP_MOD,
        "server.py": server,
        "util.py": f"TAG = {tag!r}\n",
        **(extra or {}),
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))


EXTRA_INIT = """
from otp import gen_server
from otp.application import AppSpec, Application
from otp.gen_server import GenServer

class ExtraApp(Application):
    def start(self, start_type, args):
        return gen_server.start_link(GenServer, "extra", name="rh_extra_srv")

APP = AppSpec("rh_extra", "1.0.0", ExtraApp)
"""


def make_bundle(tmp: Path, vsn: str, server: str, tag: str, upgrades=(), extra=None,
                start_type: str = "temporary", with_extra_app: bool = False) -> Path:  # fmt: skip
    base = tmp / "bundles" / vsn
    write_app(base / "lib", vsn, server, tag, extra)
    rel = base / "releases" / vsn
    rel.mkdir(parents=True)
    spec = {
        "name": "rhk",
        "version": vsn,
        "applications": [{"name": "rh_kv", "version": vsn, "start_type": start_type}],
        "lib": {"rh_kv": f"lib/rh_kv-{vsn}"},
        "upgrades": list(upgrades),
    }
    if with_extra_app:
        pkg = base / "lib" / "rh_extra-1.0.0" / "rh_extra"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(EXTRA_INIT)
        spec["applications"].append(
            {"name": "rh_extra", "version": "1.0.0", "start_type": "temporary"}
        )
        spec["lib"]["rh_extra"] = "lib/rh_extra-1.0.0"
    (rel / "release.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_manifest(base)
    return base


UPDATE_2 = [{"from": "1.0.0", "instructions": [
    ["load_module", "rh_kv.util"],
    ["update", "rh_kv.server", {"extra": {"label": "migrated"}}],
]}]  # fmt: skip


@pytest.fixture
def world(tmp_path):
    """Restores the code path, sys.modules and the code table after the test."""
    path = list(sys.path)
    try:
        yield tmp_path
    finally:
        sys.path[:] = path
        rh._running.clear()
        for name in list(sys.modules):
            if name.startswith(("rh_kv", "rh_extra", "ikv")):
                del sys.modules[name]
        for name in list(code._table):
            if name.startswith(("rh_kv", "rh_extra", "ikv")):
                del code._table[name]
        importlib.invalidate_caches()


@contextmanager
def running_v1(tmp: Path):
    """A root with 1.0.0 unpacked, permanent and booted, rh_kv started."""
    root = tmp / "root"
    v1 = make_bundle(tmp, "1.0.0", SERVER_V1, "v1")
    assert rh.unpack(root, v1) == "1.0.0"
    rh.make_permanent(root, "1.0.0")
    rh.boot(root)
    application.start("rh_kv")
    try:
        yield root
    finally:
        application.stop_all()


def test_unpack_lists_the_release_unpacked_and_the_first_one_can_be_made_permanent(
    node, world
):
    root = world / "root"
    assert rh.unpack(root, make_bundle(world, "1.0.0", SERVER_V1, "v1")) == "1.0.0"
    assert rh.which_releases(root) == [("1.0.0", "unpacked")]
    assert (root / "lib" / "rh_kv-1.0.0" / "rh_kv" / "server.py").is_file()
    assert (root / "releases" / "1.0.0" / "MANIFEST").is_file()
    rh.make_permanent(root, "1.0.0")
    assert rh.which_releases(root) == [("1.0.0", "permanent")]
    assert rh.current(root) == rh.permanent(root) == rh.boot_version(root) == "1.0.0"
    with pytest.raises(ReleaseError, match="already in"):
        rh.unpack(root, make_bundle(world / "again", "1.0.0", SERVER_V1, "v1"))


def test_a7_install_update_migrates_state_and_the_next_message_runs_new_code(node, world):
    with running_v1(world) as root:
        gen_server.cast("rh_store", ("add", 5))
        assert gen_server.call("rh_store", "get") == ("v1", 5)
        pid = whereis("rh_store")
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        plan = rh.check_install(root, "2.0.0")
        assert plan == [("load_module", "rh_kv.util"),
                        ("update", "rh_kv.server", {"extra": (("label", "migrated"),)})]
        assert rh.install(root, "2.0.0") == "1.0.0"
        # Same process, new code, migrated state; the code_change saw the app's old vsn.
        assert whereis("rh_store") == pid
        assert otp_sys.get_state("rh_store") == ("v2", 5, ("1.0.0", "migrated"))
        gen_server.cast("rh_store", ("add", 1))
        assert gen_server.call("rh_store", "get") == ("v2", 6)
        assert code.which("rh_kv.server") == str(
            root / "lib" / "rh_kv-2.0.0" / "rh_kv" / "server.py"
        )
        assert rh.which_releases(root) == [("1.0.0", "permanent"), ("2.0.0", "current")]
        assert rh.current(root) == "2.0.0"


def test_update_by_registered_name_moves_only_that_process(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        other = gen_server.start(v1.Store, 3)
        upgrades = [{"from": "1.0.0", "instructions": [{"update": "rh_store"}]}]
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v1", upgrades))
        rh.install(root, "2.0.0")
        assert otp_sys.get_state("rh_store") == ("v2", 0, ("1.0.0", None))
        assert otp_sys.get_state(other) == 3  # still v1 code: untouched
        assert code.check_process_code(other, "rh_kv.server")
        gen_server.stop(other)


def test_a6_an_install_not_made_permanent_is_abandoned_at_the_next_boot(node, world):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        rh.install(root, "2.0.0")
        assert rh.current(root) == "2.0.0"
        assert rh.boot_version(root) == "1.0.0"
    # A node restarting on this root (a fresh handler: only the files are shared).
    spec = rh.boot(root)
    assert spec.version == "1.0.0" and rh.boot_version(root) == "1.0.0"
    assert rh.which_releases(root) == [("1.0.0", "permanent"), ("2.0.0", "unpacked")]


def test_a6_a_node_booted_by_the_release_script_does_not_run_a_release_left_current(
    node, world, monkeypatch
):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        rh.install(root, "2.0.0")
    # The next OS process, started by bin/<name> (which sets these), without boot():
    rh._running.clear()
    monkeypatch.setenv("OTP_RELEASE_ROOT", str(root))
    monkeypatch.setenv("OTP_RELEASE_VSN", "1.0.0")
    assert rh.current(root) == rh.boot_version(root) == "1.0.0"


def test_a6_make_permanent_makes_the_next_boot_boot_the_new_release(node, world):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(ReleaseError, match="not installed"):
            rh.make_permanent(root, "2.0.0")
        rh.install(root, "2.0.0")
        rh.make_permanent(root, "2.0.0")
        assert rh.which_releases(root) == [("1.0.0", "old"), ("2.0.0", "permanent")]
        assert rh.boot_version(root) == rh.current(root) == "2.0.0"


def test_a_module_of_v2_that_fails_to_import_rolls_back_and_v1_keeps_serving(node, world):
    with running_v1(world) as root:
        gen_server.cast("rh_store", ("add", 2))
        broken = SERVER_V2 + "\nraise RuntimeError('v2 needs a setting that is missing')\n"
        rh.unpack(root, make_bundle(world, "2.0.0", broken, "v2", UPDATE_2))
        rh.check_install(root, "2.0.0")  # it compiles: the failure comes at load
        with pytest.raises(rh.UpgradeError) as e:
            rh.install(root, "2.0.0")
        msg = str(e.value)
        assert "1.0.0 to 2.0.0" in msg and "rh_kv.server" in msg
        assert "v2 needs a setting that is missing" in msg and "rolled back" in msg
        assert e.value.rollback_problems == []
        # Everything as before: the process resumed on v1 code and state, the util
        # module back to v1, the code path back on 1.0.0's lib dir.
        assert gen_server.call("rh_store", "get") == ("v1", 2)
        assert sys.modules["rh_kv.util"].TAG == "v1"
        assert code.which("rh_kv.server").startswith(str(root / "lib" / "rh_kv-1.0.0"))
        assert not any("rh_kv-2.0.0" in p for p in sys.path)
        assert rh.which_releases(root) == [("1.0.0", "permanent"), ("2.0.0", "unpacked")]


def test_a_syntax_error_in_v2_is_refused_by_check_install_before_anything_changes(
    node, world
):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", "class Store(:\n", "v2", UPDATE_2))
        with pytest.raises(ReleaseError, match=r"rh_kv.server does not compile.*line 1"):
            rh.install(root, "2.0.0")
        assert gen_server.call("rh_store", "get") == ("v1", 0)
        assert rh.current(root) == "1.0.0"


def test_a4_a_code_change_that_raises_rolls_back_every_step(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        gen_server.cast("rh_store", ("add", 4))
        seven = gen_server.start(v1.Store, 7)  # its code_change raises
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(rh.UpgradeError) as e:
            rh.install(root, "2.0.0")
        assert "cannot migrate a count of 7" in str(e.value)
        assert "instruction 1 ['update', 'rh_kv.server']" in str(e.value)
        # rh_store had been migrated before the failure: it is back on v1 and its state.
        assert otp_sys.get_status("rh_store").module == "rh_kv.server.Store"
        assert otp_sys.get_state("rh_store") == 4
        assert gen_server.call("rh_store", "get") == ("v1", 4)
        assert gen_server.call(seven, "get") == ("v1", 7)
        assert otp_sys.get_status(seven).status == "running"
        assert sys.modules["rh_kv.server"] is v1
        assert rh.current(root) == "1.0.0"
        gen_server.stop(seven)


def test_a_bundle_with_a_bad_checksum_is_refused(node, world):
    with running_v1(world) as root:
        bundle = make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2)
        (bundle / "lib" / "rh_kv-2.0.0" / "rh_kv" / "util.py").write_text("TAG = 'evil'\n")
        with pytest.raises(ReleaseError) as e:
            rh.unpack(root, bundle)
        assert "lib/rh_kv-2.0.0/rh_kv/util.py: bad checksum" in str(e.value)
        assert "nothing unpacked" in str(e.value)
        assert not (root / "lib" / "rh_kv-2.0.0").exists()
        assert not (root / "releases" / "2.0.0").exists()
        assert rh.which_releases(root) == [("1.0.0", "permanent")]


def test_a_bundle_with_a_file_the_manifest_does_not_list_is_refused(node, world):
    root = world / "root"
    bundle = make_bundle(world, "1.0.0", SERVER_V1, "v1")
    (bundle / "lib" / "rh_kv-1.0.0" / "rh_kv" / "extra.py").write_text("X = 1\n")
    with pytest.raises(ReleaseError, match=re.escape("extra.py: not listed in MANIFEST")):
        rh.unpack(root, bundle)


def test_an_upgrade_to_a_version_that_is_not_unpacked_is_refused(node, world):
    with running_v1(world) as root:
        with pytest.raises(ReleaseError, match=re.escape("3.0.0 is not unpacked")):
            rh.install(root, "3.0.0")
        with pytest.raises(ReleaseError, match="already the running release"):
            rh.install(root, "1.0.0")


def test_an_upgrade_without_instructions_from_the_running_version_is_refused(node, world):
    with running_v1(world) as root:
        upgrades = [{"from": "0.9.0", "instructions": [["load_module", "rh_kv.util"]]}]
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", upgrades))
        no_path = re.escape("no upgrade path between 1.0.0 and 2.0.0")
        with pytest.raises(ReleaseError, match=no_path):
            rh.check_install(root, "2.0.0")


def test_check_install_names_an_unknown_module_or_process(node, world):
    with running_v1(world) as root:
        upgrades = [{"from": "1.0.0", "instructions": [["load_module", "rh_kv.nothere"]]}]
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", upgrades))
        missing = re.escape("module rh_kv.nothere is not in release 2.0.0")
        with pytest.raises(ReleaseError, match=missing):
            rh.check_install(root, "2.0.0")
        upgrades = [{"from": "1.0.0", "instructions": [["update", "no_such_server"]]}]
        rh.unpack(root, make_bundle(world, "2.0.1", SERVER_V2, "v2", upgrades))
        with pytest.raises(ReleaseError, match="no process is registered as 'no_such_server'"):
            rh.check_install(root, "2.0.1")
        upgrades = [{"from": "1.0.0", "instructions": [["reboot", "x"]]}]
        with pytest.raises(ReleaseError, match="unknown instruction 'reboot'"):
            rh.unpack(root, make_bundle(world, "2.0.2", SERVER_V2, "v2", upgrades))


def test_downgrade_runs_code_change_down_in_the_newer_code_and_loads_the_old(node, world):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        rh.install(root, "2.0.0")
        gen_server.cast("rh_store", ("add", 3))
        assert gen_server.call("rh_store", "get") == ("v2", 3)
        assert rh.downgrade(root, "1.0.0") == "2.0.0"
        assert otp_sys.get_state("rh_store") == 3
        assert gen_server.call("rh_store", "get") == ("v1", 3)
        assert code.which("rh_kv.server").startswith(str(root / "lib" / "rh_kv-1.0.0"))
        assert rh.which_releases(root) == [("1.0.0", "permanent"), ("2.0.0", "unpacked")]
        assert rh.current(root) == "1.0.0"


def test_restart_application_starts_the_new_version_of_the_application(node, world):
    with running_v1(world) as root:
        gen_server.cast("rh_store", ("add", 3))
        upgrades = [{"from": "1.0.0", "instructions": [["restart_application", "rh_kv"]]}]
        server_v2_fresh = SERVER_V2 + (
            "\n    def init(self, arg):\n        from otp.gen_server import Ok\n"
            "        return Ok(('v2', arg, None))\n"
        )
        rh.unpack(root, make_bundle(world, "2.0.0", server_v2_fresh, "v2", upgrades))
        rh.install(root, "2.0.0")
        assert [(a.name, a.vsn) for a in application.which_applications()] == [
            ("rh_kv", "2.0.0")
        ]
        assert gen_server.call("rh_store", "get") == ("v2", 0)  # restarted: fresh state


def test_a_failing_restart_application_starts_the_old_version_again(node, world):
    with running_v1(world) as root:
        upgrades = [{"from": "1.0.0", "instructions": [["restart_application", "rh_kv"]]}]
        # v2's Store cannot start: its init crashes on the old int argument.
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2 + (
            "\n    def init(self, arg):\n        raise RuntimeError('no v2 today')\n"
        ), "v2", upgrades))
        with pytest.raises(rh.UpgradeError, match="restart_application"):
            rh.install(root, "2.0.0")
        assert [(a.name, a.vsn) for a in application.which_applications()] == [
            ("rh_kv", "1.0.0")
        ]
        assert gen_server.call("rh_store", "get") == ("v1", 0)


def test_unpack_of_a_tarball_made_by_otp_release_layout(node, world):
    bundle = make_bundle(world, "1.0.0", SERVER_V1, "v1")
    tarball = world / "rhk-1.0.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(bundle.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(bundle)), recursive=False)
    root = world / "root"
    assert rh.unpack(root, tarball) == "1.0.0"
    assert (root / "lib" / "rh_kv-1.0.0" / "rh_kv" / "app.py").is_file()
    with pytest.raises(ReleaseError, match="not a readable release tarball"):
        rh.unpack(world / "root2", world / "bundles" / "1.0.0" / "MANIFEST")


def test_an_application_the_new_release_adds_is_started_and_a_downgrade_stops_it(
    node, world
):
    with running_v1(world) as root:
        bundle = make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2, with_extra_app=True)
        rh.unpack(root, bundle)
        rh.install(root, "2.0.0")
        assert [a.name for a in application.which_applications()] == ["rh_kv", "rh_extra"]
        assert otp_sys.get_state("rh_extra_srv") == "extra"
        rh.downgrade(root, "1.0.0")
        assert [a.name for a in application.which_applications()] == ["rh_kv"]
        assert whereis("rh_extra_srv") is None
        assert gen_server.call("rh_store", "get") == ("v1", 0)


IKV_SERVER = """
from otp.gen_server import GenServer, Reply

class Store(GenServer):
    def handle_call(self, request, from_, state):
        return Reply(({tag!r}, state), state)

    def code_change(self, old_vsn, state, extra):
        return ("migrated from", old_vsn, state)
"""


def ikv_project(base: Path, vsn: str, upgrades) -> Path:
    """A project with one application, built by otp.release into a tarball."""
    src = base / vsn / "src" / "ikv"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(textwrap.dedent(f"""
        from otp import gen_server
        from otp.application import AppSpec, Application

        class IkvApp(Application):
            def start(self, start_type, args):
                from ikv import server
                return gen_server.start_link(server.Store, 0, name="ikv")

        APP = AppSpec("ikv", "{vsn}", IkvApp)
    """))
    (src / "server.py").write_text(textwrap.dedent(IKV_SERVER.format(tag=vsn)))
    spec = base / vsn / "releases" / "ikv.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({
        "name": "ikv", "version": vsn, "upgrades": upgrades,
        "applications": [{"name": "ikv", "version": vsn, "start_type": "temporary",
                          "path": "src/ikv"}],
    }))  # fmt: skip
    return release.build(spec, out=base / "_build")


def test_a_release_built_by_otp_release_is_unpacked_and_upgraded_live(node, world):
    t1 = ikv_project(world, "1.0.0", [])
    t2 = ikv_project(world, "1.1.0", [{"from": "1.0.0", "instructions": [["update", "ikv"]]}])
    root = world / "root"
    root.mkdir()
    with tarfile.open(t1) as tar:  # the first install: the operator untars the bundle
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
    assert rh.which_releases(root) == [("1.0.0", "permanent")]
    rh.boot(root)
    application.start("ikv")
    try:
        assert gen_server.call("ikv", "x") == ("1.0.0", 0)
        assert rh.unpack(root, t2) == "1.1.0"
        rh.install(root, "1.1.0")
        assert gen_server.call("ikv", "x") == ("1.1.0", ("migrated from", "1.0.0", 0))
        rh.make_permanent(root, "1.1.0")
        assert rh.which_releases(root) == [("1.0.0", "old"), ("1.1.0", "permanent")]
    finally:
        application.stop_all()


def test_check_install_refuses_a_module_whose_old_version_a_process_still_runs(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        code.load("rh_kv.server")  # v1 is old now; rh_store still runs it
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(ReleaseError, match=r"still run the old version of rh_kv\.server"):
            rh.check_install(root, "2.0.0")
        assert code.check_process_code(whereis("rh_store"), "rh_kv.server")
        assert gen_server.call("rh_store", "get") == ("v1", 0) and v1


def test_rollback_unloads_a_module_the_failed_upgrade_added(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        seven = gen_server.start(v1.Store, 7)  # its code_change raises
        upgrades = [{"from": "1.0.0", "apps": {"rh_kv": [
            {"add_module": "rh_kv.media"},
            {"update": "rh_kv.server", "extra": ["a", "b"]},
        ]}}]  # fmt: skip
        bundle = make_bundle(world, "2.0.0", SERVER_V2, "v2", upgrades,
                             extra={"media.py": "LIMIT = 10\n"})  # fmt: skip
        rh.unpack(root, bundle)
        assert rh.check_install(root, "2.0.0") == [
            ("add_module", "rh_kv.media"), ("update", "rh_kv.server", {"extra": ("a", "b")})
        ]
        with pytest.raises(rh.UpgradeError):
            rh.install(root, "2.0.0")
        assert "rh_kv.media" not in sys.modules and not code.is_loaded("rh_kv.media")
        assert not hasattr(sys.modules["rh_kv"], "media")
        gen_server.stop(seven)


def test_downgrade_uses_the_down_instructions_when_the_release_gives_them(node, world):
    with running_v1(world) as root:
        upgrades = [{
            "from": "1.0.0",
            "instructions": [["add_module", "rh_kv.media"], ["update", "rh_store"]],
            "down": [["update", "rh_store", {"extra": "going back"}],
                     ["delete_module", "rh_kv.media"]],
        }]  # fmt: skip
        bundle = make_bundle(world, "2.0.0", SERVER_V2, "v2", upgrades,
                             extra={"media.py": "LIMIT = 10\n"})  # fmt: skip
        rh.unpack(root, bundle)
        rh.install(root, "2.0.0")
        assert sys.modules["rh_kv.media"].LIMIT == 10
        assert otp_sys.get_state("rh_store") == ("v2", 0, ("1.0.0", None))
        rh.downgrade(root, "1.0.0")
        assert not code.is_loaded("rh_kv.media")
        assert otp_sys.get_state("rh_store") == 0
        assert gen_server.call("rh_store", "get") == ("v1", 0)

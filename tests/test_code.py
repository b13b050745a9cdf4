"""otp.code: two versions per module, purging, load failures, and what a load does to
running servers (docs/semantics.md A3, A7). Modules are generated into tmp_path."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

import pytest

from otp import code, gen_server
from otp import sys as otp_sys
from otp.errors import CallError
from otp.process import Down, monitor, receive
from otp.testing import assert_receive

SERVER = """
from otp.gen_server import GenServer, Ok, Reply

VERSION = {v}

def version():
    return VERSION

class Store(GenServer):
    def handle_call(self, request, from_, state):
        match request:
            case "vsn":
                return Reply(({v!r}, state), state)
        return super().handle_call(request, from_, state)

    def code_change(self, old_vsn, state, extra):
        return ("migrated", old_vsn, state, extra)
"""


def write(directory, name, source):
    path = directory / (name.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return path


@pytest.fixture
def modpath(tmp_path):
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]
        for name in list(code._table):
            if name not in before:
                del code._table[name]


def server_module(modpath, v, name="cs_store"):
    write(modpath, name, SERVER.format(v=v))


def load_v1(modpath, name="cs_store"):
    server_module(modpath, 1, name)
    return importlib.import_module(name)


# --- A3: two versions at most --------------------------------------------------------


def test_a3_load_keeps_the_previous_version_as_old(node, modpath):
    v1 = load_v1(modpath)
    server_module(modpath, 2)
    v2 = code.load("cs_store")
    assert sys.modules["cs_store"] is v2 and v2 is not v1
    assert [v.status for v in code.versions("cs_store")] == ["current", "old"]
    assert [v.module for v in code.versions("cs_store")] == [v2, v1]
    # The old version is intact: its functions still see their own module.
    assert v1.version() == 1 and v2.version() == 2


def test_a3_loading_a_third_version_purges_the_oldest_and_kills_its_processes(node, modpath):
    v1 = load_v1(modpath)
    pid = gen_server.start(v1.Store, 0)
    ref = monitor(pid)
    server_module(modpath, 2)
    v2 = code.load("cs_store")
    assert code.check_process_code(pid, "cs_store")  # runs old code, still alive
    server_module(modpath, 3)
    v3 = code.load("cs_store")
    assert assert_receive(Down).reason == "killed" and ref
    assert [v.module for v in code.versions("cs_store")] == [v3, v2]


def test_a3_soft_load_of_a_third_version_is_refused_while_a_process_runs_the_oldest(
    node, modpath
):
    v1 = load_v1(modpath)
    pid = gen_server.start(v1.Store, 0)
    server_module(modpath, 2)
    v2 = code.load("cs_store")
    server_module(modpath, 3)
    with pytest.raises(code.NotPurged) as e:
        code.load("cs_store", soft=True)
    assert e.value.pids == [pid]
    assert "cs_store" in str(e.value) and "old version" in str(e.value)
    assert [v.module for v in code.versions("cs_store")] == [v2, v1]
    assert gen_server.call(pid, "vsn") == (1, 0)
    gen_server.stop(pid)
    assert code.load("cs_store", soft=True).VERSION == 3


def test_soft_purge_refuses_while_old_code_runs_and_purge_kills_it(node, modpath):
    v1 = load_v1(modpath)
    pid = gen_server.start(v1.Store, 0)
    monitor(pid)
    server_module(modpath, 2)
    code.load("cs_store")
    assert code.soft_purge("cs_store") is False
    assert len(code.versions("cs_store")) == 2
    assert code.purge("cs_store") is True
    assert assert_receive(Down).reason == "killed"
    assert [v.status for v in code.versions("cs_store")] == ["current"]
    assert code.soft_purge("cs_store") is True and code.purge("cs_store") is False


def test_delete_then_purge_unloads_a_module(node, modpath):
    load_v1(modpath)
    assert code.delete("cs_store") is True
    assert not code.is_loaded("cs_store")
    assert [v.status for v in code.versions("cs_store")] == ["old"]
    assert code.delete("cs_store") is False  # an old version is there: purge first
    code.purge("cs_store")
    assert code.versions("cs_store") == []


# --- A7: a load is not an upgrade ------------------------------------------------------


def test_a7_a_running_server_keeps_its_class_after_load_until_change_code(node, modpath):
    v1 = load_v1(modpath)
    pid = gen_server.start(v1.Store, 0)
    server_module(modpath, 2)
    v2 = code.load("cs_store")
    assert gen_server.call(pid, "vsn") == (1, 0)  # importlib alone moved nothing
    assert code.processes_running("cs_store", old=True) == [pid]
    otp_sys.suspend(pid)
    otp_sys.change_code(pid, v2, "1", extra="x")
    otp_sys.resume(pid)
    assert gen_server.call(pid, "vsn") == (2, ("migrated", "1", 0, "x"))
    assert code.processes_running("cs_store") == [pid]
    assert code.processes_running("cs_store", old=True) == []
    assert code.soft_purge("cs_store") is True
    gen_server.stop(pid)


def test_a7_a_server_started_after_the_load_runs_the_new_version(node, modpath):
    v1 = load_v1(modpath)
    server_module(modpath, 2)
    v2 = code.load("cs_store")
    assert code.current(v1.Store) is v2.Store
    pid = gen_server.start(v1.Store, 0)  # e.g. a supervisor's restart, spec unchanged
    assert gen_server.call(pid, "vsn") == (2, 0)
    gen_server.stop(pid)


def test_current_of_a_class_the_code_server_never_loaded_is_itself(node, modpath):
    v1 = load_v1(modpath)
    assert code.current(v1.Store) is v1.Store
    assert code.current(CallError) is CallError


# --- load failures ---------------------------------------------------------------------


def test_a_syntax_error_in_the_new_version_leaves_the_running_one(node, modpath):
    v1 = load_v1(modpath)
    pid = gen_server.start(v1.Store, 0)
    path = write(modpath, "cs_store", "def broken(:\n    pass\n")
    with pytest.raises(code.CodeLoadError) as e:
        code.load("cs_store")
    assert "cs_store" in str(e.value) and "syntax error" in str(e.value)
    assert str(path) in str(e.value) and "line 1" in str(e.value)
    assert sys.modules["cs_store"] is v1
    assert [v.module for v in code.versions("cs_store")] == [v1]
    assert gen_server.call(pid, "vsn") == (1, 0)
    gen_server.stop(pid)


def test_an_exception_while_the_new_version_runs_leaves_the_running_one(node, modpath):
    v1 = load_v1(modpath)
    server_module(modpath, 2)
    code.load("cs_store")  # v2 current, v1 old
    pid = gen_server.start(v1.Store, 0)
    write(modpath, "cs_store", "raise RuntimeError('no database configured')\n")
    with pytest.raises(code.CodeLoadError) as e:
        code.load("cs_store")
    assert "no database configured" in str(e.value) and "unchanged" in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)
    assert [v.status for v in code.versions("cs_store")] == ["current", "old"]
    assert sys.modules["cs_store"].VERSION == 2
    assert gen_server.call(pid, "vsn") == (2, 0)  # nothing was purged
    gen_server.stop(pid)


def test_loading_a_module_that_is_not_on_the_path_fails_clearly(node, modpath):
    with pytest.raises(code.CodeLoadError, match="no such module"):
        code.load("cs_nowhere")
    assert code.which("cs_nowhere") is None


# --- queries -------------------------------------------------------------------------------


def test_modified_modules_compares_mtime_then_content(node, modpath):
    path = write(modpath, "cs_plain", "X = 1\n")
    code.ensure_loaded("cs_plain")
    assert code.modified_modules() == []
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert code.modified_modules() == []  # touched, same content
    path.write_text("X = 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    assert code.modified_modules() == ["cs_plain"]
    assert code.load("cs_plain").X == 2
    assert code.modified_modules() == []


def test_load_reads_the_source_not_a_stale_bytecode_cache(node, modpath):
    path = write(modpath, "cs_plain", "X = 1\n")
    importlib.import_module("cs_plain")  # writes a .pyc
    st = os.stat(path)
    path.write_text("X = 3\n")  # same size, same mtime: the .pyc would look fresh
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert code.load("cs_plain").X == 3


def test_which_is_loaded_and_versions(node, modpath):
    path = write(modpath, "cs_plain", "__vsn__ = '1.2.0'\n")
    assert not code.is_loaded("cs_plain")
    assert code.which("cs_plain") == str(path)
    code.ensure_loaded("cs_plain")
    assert code.is_loaded("cs_plain") and code.which("cs_plain") == str(path)
    [v] = code.versions("cs_plain")
    assert (v.status, v.vsn, v.file) == ("current", "1.2.0", str(path))
    with pytest.raises(code.CodeError, match="module name"):
        code.load(42)  # type: ignore[arg-type]


def test_replace_path_moves_a_loaded_package_to_the_new_directory(node, modpath):
    old, new = modpath / "lib_a-1", modpath / "lib_a-2"
    write(old, "cs_pkg.__init__", "")
    write(old, "cs_pkg.mod", "V = 1\n")
    write(new, "cs_pkg.__init__", "")
    write(new, "cs_pkg.mod", "V = 2\n")
    code.add_path(old)
    try:
        assert importlib.import_module("cs_pkg.mod").V == 1
        assert code.replace_path(old, new) == ["cs_pkg"]
        assert str(new) in sys.path and str(old) not in sys.path
        assert code.which("cs_pkg.mod").startswith(str(old))  # not reloaded yet
        assert code.load("cs_pkg.mod").V == 2
        assert code.which("cs_pkg.mod").startswith(str(new))
        assert sys.modules["cs_pkg"].mod is sys.modules["cs_pkg.mod"]
    finally:
        code.del_path(new)
        code.del_path(old)


def test_a_reloaded_package_keeps_its_loaded_submodules(node, modpath):
    write(modpath, "cs_pkg2.__init__", "V = 1\n")
    write(modpath, "cs_pkg2.sub", "S = 1\n")
    sub = importlib.import_module("cs_pkg2.sub")
    write(modpath, "cs_pkg2.__init__", "V = 2\n")
    pkg = code.load("cs_pkg2")
    assert pkg.V == 2 and pkg.sub is sub


def test_a3_purge_kills_only_the_processes_running_the_old_version(node, modpath):
    v1 = load_v1(modpath)
    old_pid = gen_server.start(v1.Store, 0)
    server_module(modpath, 2)
    code.load("cs_store")
    new_pid = gen_server.start(v1.Store, 0)  # resolves to v2
    ref = monitor(old_pid)
    code.purge("cs_store")
    msg = receive(lambda m: isinstance(m, Down) and m.ref == ref, 5)
    assert msg.reason == "killed"
    assert gen_server.call(new_pid, "vsn") == (2, 0)
    gen_server.stop(new_pid)

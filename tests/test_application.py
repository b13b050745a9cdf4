"""otp.application: start types (A1), env precedence and config errors (A2), dependencies."""

from __future__ import annotations

import logging
import textwrap

import pytest
from pydantic import BaseModel

import otp
from otp import application, config, gen_server, supervisor
from otp.application import AppInfo, Application, AppSpec
from otp.errors import ApplicationError, ConfigError, NodeHalted
from otp.gen_server import GenServer, Ok, Reply, Stop
from otp.process import Down, exit, monitor, receive, self, send, whereis
from otp.supervisor import ChildSpec, Supervisor, SupFlags
from otp.testing import MockClock, assert_receive, refute_receive

# ------------------------------------------------------------------------- fixtures


class Worker(GenServer):
    def init(self, arg):
        return Ok(arg)

    def handle_call(self, request, from_, state):
        match request:
            case "stop_normal":
                return Stop("normal", state, reply="ok")
            case "ping":
                return Reply("pong", state)
        return super().handle_call(request, from_, state)


class Top(Application):
    """Starts one registered Worker; reports start/stop to ``watcher``.
    start_args = (watcher pid, registered name)."""

    def start(self, start_type, args):
        watcher, name = args
        send(watcher, ("started", name, start_type))
        return gen_server.start_link(Worker, name, name=name), (watcher, name)

    def stop(self, state):
        watcher, name = state
        send(watcher, ("stopped", name))


def spec(name, *, deps=(), **kw):
    return AppSpec(name, "1.0", Top, applications=deps, start_args=(self(), name), **kw)


def _wait_forever():
    while True:
        receive()


def run_halting(main):
    """Run ``main`` on a fresh node; return the reason the node was halted with."""
    with pytest.raises(NodeHalted) as ei:
        otp.run(main, clock=MockClock(), strict=True, timeout=30)
    return ei.value.reason


# ------------------------------------------------------------------------- A1


def test_a1_permanent_application_stopping_takes_the_node_down():
    stopped = []

    class Recording(Top):
        def stop(self, state):
            stopped.append(state[1])

    def main():
        application.start(AppSpec("dep", "1", Recording, start_args=(self(), "dep")))
        application.start(
            AppSpec("perm", "1", Recording, applications=("dep",), start_args=(self(), "perm")),
            "permanent",
        )
        exit(whereis("perm"), "boom")
        _wait_forever()  # the halt kills us here

    assert run_halting(main) == ("application_terminated", "perm", "boom")
    # the permanent app's own stop callback ran, then the others were stopped
    assert stopped == ["perm", "dep"]


def test_a1_permanent_application_stopping_normally_also_takes_the_node_down():
    def main():
        application.start(AppSpec("perm", "1", Top, start_args=(self(), "perm")), "permanent")
        gen_server.call("perm", "stop_normal")
        _wait_forever()

    assert run_halting(main) == ("application_terminated", "perm", "normal")


def test_a1_transient_application_takes_the_node_down_for_an_abnormal_reason():
    def main():
        application.start(AppSpec("tr", "1", Top, start_args=(self(), "tr")), "transient")
        exit(whereis("tr"), "boom")
        _wait_forever()

    assert run_halting(main) == ("application_terminated", "tr", "boom")


def test_a1_transient_application_stopping_normally_leaves_the_node_running(node):
    application.start(spec("tr"), "transient")
    assert_receive(("started", "tr", "transient"))
    ref = monitor(whereis("application_controller"))
    assert gen_server.call("tr", "stop_normal") == "ok"
    assert_receive(("stopped", "tr"))
    assert_receive(Down(ref, ANY_PID, "normal"))  # the app is gone, the node is not
    assert application.which_applications() == []


def test_a1_temporary_application_never_takes_the_node_down(node, caplog):
    caplog.set_level(logging.INFO, logger="otp.report")
    application.start(spec("tmp"))
    ref = monitor(whereis("application_controller"))
    exit(whereis("tmp"), "boom")
    assert_receive(("stopped", "tmp"))
    assert_receive(Down(ref, ANY_PID, "normal"))  # nothing left to run: it goes
    assert application.which_applications() == []
    exits = [r.report for r in caplog.records if getattr(r, "report", {}).get("label")
             == "application_controller:exit"]
    assert exits == [
        {"label": "application_controller:exit", "application": "tmp", "exited": "boom",
         "type": "temporary"}
    ]


def test_a1_explicit_stop_of_a_permanent_application_does_not_halt(node):
    application.start(spec("perm"), "permanent")
    top = whereis("perm")
    ref = monitor(top)
    application.stop("perm")
    assert_receive(Down(ref, top, "shutdown"))
    assert_receive(("stopped", "perm"))
    assert application.which_applications() == []
    # and the node still runs applications
    application.start(spec("perm"), "permanent")
    application.stop("perm")


def test_a1_dependencies_start_first_and_stop_last(node):
    application.load(spec("c"))
    application.load(spec("b", deps=("c",)))
    started = application.start(spec("a", deps=("b", "c")), "permanent")
    assert started == ["c", "b", "a"]
    for name in ("c", "b", "a"):
        assert_receive(("started", name, "permanent"))
    assert [i.name for i in application.which_applications()] == ["c", "b", "a"]
    assert application.start("a") == []  # already started is fine
    assert application.stop_all() == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        assert receive() == ("stopped", name)


def test_a1_supervisor_giving_up_is_an_abnormal_exit_for_the_application():
    class Sup(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one", intensity=0, period=5.0), [
                ChildSpec(id="w", start=(_start_named_worker, ("w",)))
            ]

    class App(Application):
        def start(self, start_type, args):
            return supervisor.start_link(Sup, None)

    def main():
        application.start(AppSpec("sup_app", "1", App), "transient")
        exit(whereis("w"), "boom")  # intensity 0: the supervisor gives up
        _wait_forever()

    assert run_halting(main) == ("application_terminated", "sup_app", "shutdown")


def _start_named_worker(name):
    return gen_server.start_link(Worker, name, name=name)


def test_stop_takes_the_supervision_tree_down_in_order(node):
    class Sup(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one"), [
                ChildSpec(id="w1", start=(_start_named_worker, ("w1",))),
                ChildSpec(id="w2", start=(_start_named_worker, ("w2",))),
            ]

    class App(Application):
        def start(self, start_type, args):
            return supervisor.start_link(Sup, None)

    application.start(AppSpec("tree", "1", App))
    r1, r2 = monitor(whereis("w1")), monitor(whereis("w2"))
    application.stop("tree")
    assert receive(Down).ref == r2  # reverse start order
    assert receive(Down).ref == r1


# ------------------------------------------------------------------------- A2


class ChatEnv(BaseModel):
    port: int = 5222
    host: str = "localhost"
    tag: str = "none"


def test_a2_env_defaults_then_config_files_then_environment_then_set_env(node, tmp_path):
    f1 = tmp_path / "base.yaml"
    f1.write_text("chat:\n  port: 6000\n  host: base\n  tag: base\n")
    f2 = tmp_path / "prod.yaml"
    f2.write_text("chat:\n  host: prod\n  tag: prod\n")
    application.configure(config.load(f1, f2), environ={"OTP_CHAT__TAG": "env"})
    app = AppSpec("chat", "1", Top, env={"port": 1}, schema=ChatEnv,
                  start_args=(self(), "chat"))
    application.start(app)
    assert application.get_all_env("chat") == {"port": 6000, "host": "prod", "tag": "env"}
    application.set_env("chat", "tag", "runtime")
    assert application.get_env("chat", "tag") == "runtime"
    application.set_env("chat", "port", "7000")
    assert application.get_env("chat", "port") == 7000  # converted by the schema
    assert application.get_env("chat", "nope", "dflt") == "dflt"
    assert application.get_env("not_loaded", "x", 3) == 3
    application.stop("chat")
    # set_env survives a reload, above every other source
    application.load("chat")
    assert application.get_env("chat", "tag") == "runtime"


def test_a2_defaults_apply_when_nothing_is_configured(node):
    application.configure(environ={})
    application.load(AppSpec("chat", "1", None, env={"host": "h"}, schema=ChatEnv))
    assert application.get_all_env("chat") == {"port": 5222, "host": "h", "tag": "none"}


def test_a2_bad_config_value_fails_the_start_naming_the_key(node, tmp_path):
    f = tmp_path / "dev.yaml"
    f.write_text("chat:\n  port: fast\n")
    application.configure(config.load(f), environ={})
    with pytest.raises(ConfigError) as ei:
        application.start(AppSpec("chat", "1", Top, schema=ChatEnv, start_args=(self(), "c")))
    assert str(ei.value).startswith(f"{f}, line 2: app 'chat', key 'port': expected int")
    assert application.which_applications() == []
    refute_receive(("started", "c", "temporary"))


def test_a2_bad_config_of_a_dependency_starts_nothing(node):
    application.configure(environ={})
    application.load(AppSpec("dep", "1", Top, schema=ChatEnv, start_args=(self(), "dep")))
    application.configure(environ={"OTP_DEP__PORT": "x"})  # start re-reads the config
    with pytest.raises(ConfigError, match="environment variable OTP_DEP__PORT: app 'dep', key"):
        application.start(spec("main", deps=("dep",)))
    assert application.which_applications() == []


def test_a2_set_env_is_checked_against_the_schema(node):
    application.configure(environ={})
    application.load(AppSpec("chat", "1", None, schema=ChatEnv))
    with pytest.raises(ConfigError, match="set_env: app 'chat', key 'port': expected int"):
        application.set_env("chat", "port", "fast")
    with pytest.raises(ConfigError, match="set_env: app 'chat' has no key 'prot'"):
        application.set_env("chat", "prot", 1)


# ------------------------------------------------------------------------- loading


def test_load_finds_the_spec_in_the_package_by_name(node, tmp_path, monkeypatch):
    (tmp_path / "otpy_test_pkgapp.py").write_text(textwrap.dedent("""
        from otp.application import AppSpec
        APP = AppSpec("otpy_test_pkgapp", "2.1", None, env={"size": 3},
                      description="a library app")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    application.configure(environ={})
    assert application.start("otpy_test_pkgapp") == ["otpy_test_pkgapp"]
    assert application.which_applications() == [
        AppInfo("otpy_test_pkgapp", "a library app", "2.1")
    ]
    assert application.get_env("otpy_test_pkgapp", "size") == 3
    application.stop("otpy_test_pkgapp")
    assert application.which_applications() == []


def test_missing_spec_cycle_and_bad_type_are_application_errors(node):
    with pytest.raises(ApplicationError, match="application 'no_such_app_x': no spec loaded"):
        application.start("no_such_app_x")
    application.load(AppSpec("x1", "1", None, applications=("x2",)))
    application.load(AppSpec("x2", "1", None, applications=("x1",)))
    with pytest.raises(ApplicationError, match="cycle: x1 -> x2 -> x1"):
        application.start("x1")
    with pytest.raises(ApplicationError, match="start type expects one of"):
        application.start("x1", "forever")  # type: ignore[arg-type]
    with pytest.raises(ApplicationError, match="'nope' is not started"):
        application.stop("nope")
    with pytest.raises(ApplicationError, match="applications expects a tuple of names"):
        AppSpec("y", "1", None, applications="x1")  # type: ignore[arg-type]


def test_a_failing_start_stops_the_dependencies_it_started(node):
    class Broken(Application):
        def start(self, start_type, args):
            raise RuntimeError("no disk")

    application.load(spec("dep"))
    with pytest.raises(ApplicationError, match="application 'broken' failed to start") as ei:
        application.start(AppSpec("broken", "1", Broken, applications=("dep",)))
    assert isinstance(ei.value.reason, RuntimeError)
    assert_receive(("started", "dep", "temporary"))
    assert_receive(("stopped", "dep"))
    assert application.which_applications() == []


def test_a_start_returning_no_pid_fails_with_bad_return(node):
    class Bad(Application):
        def start(self, start_type, args):
            return "not a pid"

    with pytest.raises(ApplicationError) as ei:
        application.start(AppSpec("bad", "1", Bad))
    assert ei.value.reason == ("bad_return", ("test_a_start_returning_no_pid_fails_with_bad_"
                                              "return.<locals>.Bad.start", "not a pid"))


class _AnyPid:
    def __eq__(self, other):
        return isinstance(other, otp.Pid)


ANY_PID = _AnyPid()


def test_prep_stop_runs_before_the_tree_stops_and_stop_after(node):
    me = self()

    class Ordered(Application):
        def start(self, start_type, args):
            return gen_server.start_link(Worker, None, name="ordered_top"), "st"

        def prep_stop(self, state):
            send(me, ("prep_stop", state, whereis("ordered_top") is not None))
            return state + "+prepped"

        def stop(self, state):
            send(me, ("stop", state, whereis("ordered_top") is not None))

    application.start(AppSpec("ordered", "1", Ordered))
    application.stop("ordered")
    assert receive() == ("prep_stop", "st", True)
    assert receive() == ("stop", "st+prepped", False)


def test_a_registered_name_already_taken_fails_the_start(node):
    blocker = gen_server.start(Worker, None, name="taken_name")
    try:
        with pytest.raises(ApplicationError) as ei:
            application.start(spec("clash", registered=("taken_name",)))
        assert ei.value.reason == ("registered_name_taken", "taken_name", blocker)
        refute_receive(("started", "clash", "temporary"))
    finally:
        gen_server.stop(blocker)


def _doc_example(doc: str, first: str, last: str) -> str:
    start = doc.index(first)
    end = doc.index("\n", doc.index(last)) + 1
    return textwrap.dedent(doc[start:end])


def test_the_module_example_runs():
    code = _doc_example(application.__doc__, "    import otp\n", "assert otp.run(main)")
    exec(compile(code, "otp.application docstring", "exec"), {})


# ------------------------------------------------------------------------- OTP's helpers


def test_a1_ensure_all_started_returns_what_it_started_dependencies_first(node):
    application.load(spec("c"))
    application.load(spec("b", deps=("c",)))
    application.start("c")
    assert application.ensure_all_started(spec("a", deps=("b", "c")), "permanent") == [
        "b", "a"]  # fmt: skip
    assert application.ensure_all_started("a") == []
    assert [i.name for i in application.which_applications()] == ["c", "b", "a"]
    application.stop_all()


def test_a1_ensure_started_starts_once_and_returns_none(node):
    assert application.ensure_started(spec("once")) is None
    assert_receive(("started", "once", "temporary"))
    assert application.ensure_started("once") is None
    refute_receive(("started", "once", "temporary"))
    application.stop("once")


def test_get_application_names_the_app_of_its_master_and_its_whole_tree(node):
    class Sup(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one"), [
                ChildSpec(id="w1", start=(_start_named_worker, ("w1",))),
                ChildSpec(id="inner", start=(supervisor.start_link, (Inner, None)),
                          type="supervisor"),
            ]

    class Inner(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one"), [
                ChildSpec(id="w2", start=(_start_named_worker, ("w2",)))]

    class App(Application):
        def start(self, start_type, args):
            return supervisor.start_link(Sup, None, name="tree_sup")

    assert application.get_application() is None  # no application runs
    application.start(AppSpec("tree", "1", App))
    application.start(spec("other"))
    for name in ("tree_sup", "w1", "w2"):
        assert application.get_application(whereis(name)) == "tree"
    assert application.get_application(whereis("other")) == "other"
    assert application.get_application() is None  # the test process is in none

    asker = supervisor.start_child("tree_sup", ChildSpec(
        id="asker", start=(gen_server.start_link, (Asker, self())), restart="temporary"))
    assert_receive(("app", "tree"))  # a child added later asks for itself
    application.stop_all()
    assert application.get_application(asker) is None  # ended with its tree


class Asker(GenServer):
    """Reports, from its init, the application it belongs to."""

    def init(self, to):
        send(to, ("app", application.get_application()))
        return Ok(to)


def test_get_key_reads_the_descriptor_of_a_loaded_application(node):
    application.load(AppSpec("lib", "2.1.0", applications=("dep_x",), registered=("r",),
                             env={"k": 1}, description="a library"))
    assert application.get_key("lib", "vsn") == "2.1.0"
    assert application.get_key("lib", "description") == "a library"
    assert application.get_key("lib", "applications") == ("dep_x",)
    assert application.get_key("lib", "registered") == ("r",)
    assert application.get_key("lib", "mod") is None
    assert application.get_key("lib", "env") == {"k": 1}
    assert application.get_key("nope", "vsn") is None
    assert application.get_key("nope", "vsn", "?") == "?"
    assert application.get_all_key("lib")["vsn"] == "2.1.0"
    assert application.get_all_key("nope") is None
    with pytest.raises(ApplicationError, match="expected a key among"):
        application.get_key("lib", "version")
    application.unload("lib")

"""Remote procedure calls (Erlang's ``rpc``): run a module-level function on another
node and get its result.

Every distributed node runs a server registered as ``rex`` (started by
``otp.dist.start``, as ``erl`` starts its ``rex``). A call names the function as
``"module:function"`` (or passes the function itself, which must be module-level:
its ``module:qualname`` is what crosses); the callee imports the module with
``importlib`` and applies the function to ``args`` in a new process, so a slow call
never holds ``rex`` up. Lambdas, nested functions and names starting with ``_`` are
refused.

>>> ref("math:floor")
'math:floor'
>>> import os.path
>>> ref(os.path.join)
'posixpath:join'

On a distributed node (inside a process)::

    from otp import rpc

    rpc.call("b@127.0.0.1", "math:floor", (2.5,))             # 2
    rpc.cast("b@127.0.0.1", "logging:info", ("hello",))        # never waits
    results, bad = rpc.multicall(["a@127.0.0.1", "b@127.0.0.1"], "os:getpid")

Failure semantics: ``call`` raises ``BadRpc`` with ``reason`` ``"nodedown"`` (the
node cannot be reached or was lost during the call), ``"timeout"``, ``"undef"`` (no
such module or function) or ``("EXIT", "Type: message")`` (the function raised).
``multicall`` never raises for one node: an unreachable node is in ``bad_nodes``, a
function that failed there gives a ``BadRpc`` in ``results``.

From Erlang, a call to ``rex`` (``gen_server:call({rex, OtpyNode}, {call, M, F, A,
GroupLeader})``, what ``rpc:call`` sent before OTP 23) is answered, and a
``{cast, M, F, A, GroupLeader}`` cast is applied. OTP 23 and later make
``rpc:call``/``rpc:cast`` with ``erpc`` (a spawn request of ``erpc:execute_call``),
which is served the same way (``otp.dist._control``). What a BEAM caller may
call: ``erlang:node/0``, ``erlang:nodes/0``, ``erlang:is_alive/0``,
``erlang:registered/0`` (the node's registered names, as atoms),
``erlang:whereis/1``, and any Python module-level function as
``'module':'function'`` (the same rule as between otpy nodes: the cookie is the
trust, as with Erlang's own ``rpc``); anything else answers ``{badrpc, {'EXIT',
{undef, ...}}}``. Arguments from BEAM arrive in the BEAM value mapping (binaries as
``bytes``), see docs/distribution.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from otp import _gen, gen_server
from otp.dist import Atom
from otp.errors import BadArg, CallError, CallTimeout, OTPError
from otp.gen_server import GenServer, NoReply, Ok
from otp.process import Pid, node, nodes, registered, spawn, whereis

__all__ = ["BadRpc", "call", "cast", "multicall", "ref"]

#: The name of the server answering calls on every distributed node.
REX = "rex"


class BadRpc(OTPError):
    """A remote call failed: ``reason`` is ``"nodedown"``, ``"timeout"``, ``"undef"``
    or ``("EXIT", "Type: message")``; ``node`` and ``fn`` say which call."""

    def __init__(self, reason: Any, node: str = "", fn: str = "") -> None:
        super().__init__(f"rpc of {fn} on {node} failed: {reason!r}")
        self.reason = reason
        self.node = node
        self.fn = fn


def ref(fn: Any) -> str:
    """The ``"module:function"`` that names ``fn`` across nodes (a str is checked and
    returned). Refuses lambdas, nested functions and names starting with ``_``."""
    if isinstance(fn, str):
        mod, sep, name = fn.partition(":")
        if not sep or not mod or not name or ":" in name:
            raise BadArg(f'expected "module:function", got {fn!r}')
        return fn
    where: Any = getattr(fn, "__module__", None)
    qual: Any = getattr(fn, "__qualname__", None)
    if not callable(fn) or not where or not qual:
        raise BadArg(f'expected a module-level function or "module:function", got {fn!r}')
    if "<" in qual or "." in qual:
        raise BadArg(
            f"only module-level functions cross nodes (named by module:function); "
            f"{fn!r} is a lambda or a nested function or method: define it at module level"
        )
    return f"{where}:{qual}"


# --- the caller's side --------------------------------------------------------------


def _request(fn: str, args: Any) -> tuple[str, str, tuple[Any, ...]]:
    return ("$otpy_apply", fn, tuple(args))


def call(target: str, fn: Any, args: Any = (), *, timeout: float = 5.0) -> Any:
    """Apply ``fn`` (a module-level function or ``"module:function"``) to ``args`` on
    node ``target`` and return its value; raises ``BadRpc`` (see the module doc)."""
    name = ref(fn)
    try:
        ok, value = _gen.call(
            (REX, target),  # type: ignore[arg-type]
            _request(name, args),
            timeout,
        )
    except CallTimeout:
        raise BadRpc("timeout", target, name) from None
    except CallError as e:
        raise BadRpc("nodedown", target, name) from e
    if not ok:
        raise BadRpc(value, target, name)
    return value


def cast(target: str, fn: Any, args: Any = ()) -> None:
    """Apply ``fn`` to ``args`` on node ``target`` in a new process there; never waits
    and never fails (dropped when the node cannot be reached)."""
    gen_server.cast((REX, target), _request(ref(fn), args))


def multicall(
    targets: list[str], fn: Any, args: Any = (), *, timeout: float = 5.0
) -> tuple[list[Any], list[str]]:
    """Apply ``fn`` to ``args`` on each of ``targets`` at once; returns ``(results,
    bad_nodes)``: ``results`` in the order of the nodes that answered (a ``BadRpc``
    where the function failed there), ``bad_nodes`` those that could not be reached or
    did not answer within ``timeout``."""
    name = ref(fn)
    replies, bad = gen_server.multi_call(list(targets), REX, _request(name, args), timeout)
    got = dict(replies)
    results: list[Any] = []
    for n in targets:
        if n in got:
            ok, value = got[n]
            results.append(value if ok else BadRpc(value, n, name))
    return results, list(bad)


# --- the callee's side: rex ---------------------------------------------------------


def _resolve(fn: str) -> Any:
    mod, _, name = fn.partition(":")
    if name.startswith("_"):
        return None
    try:
        module = importlib.import_module(mod)
    except ImportError:
        return None
    f = getattr(module, name, None)
    return f if callable(f) else None


def _apply(fn: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    f = _resolve(fn)
    if f is None:
        return False, "undef"
    try:
        return True, f(*args)
    except Exception as e:
        return False, ("EXIT", f"{type(e).__name__}: {e}")


_ERLANG: dict[tuple[str, int], Any] = {
    ("node", 0): lambda: Atom(node()),
    ("nodes", 0): lambda: [Atom(n) for n in nodes()],
    ("is_alive", 0): lambda: True,
    ("registered", 0): lambda: [Atom(n) for n in registered()],
    ("whereis", 1): lambda n: whereis(str(n)) or Atom("undefined"),
}


def _apply_beam(m: Any, f: Any, a: Any) -> Any:
    """An Erlang ``rpc:call``'s answer: the value or ``{badrpc, Reason}``."""
    args = list(a) if isinstance(a, list) else None
    undef: Any = (Atom("badrpc"), (Atom("EXIT"), (Atom("undef"), [(m, f, a, [])])))
    if args is None or not isinstance(m, str) or not isinstance(f, str):
        return (Atom("badrpc"), (Atom("EXIT"), Atom("badarg")))
    if m == "erlang":
        g = _ERLANG.get((str(f), len(args)))
        return undef if g is None else g(*args)
    ok, value = _apply(f"{m}:{f}", tuple(args))
    if ok:
        return value
    if value == "undef":
        return undef
    return (Atom("badrpc"), (Atom("EXIT"), value[1]))


def _worker(from_: Any, req: Any) -> None:
    if req[0] == "$otpy_apply":
        _gen.reply(from_, _apply(req[1], req[2]))
    else:  # {call, M, F, A, GroupLeader} from Erlang's rpc
        _gen.reply(from_, _apply_beam(req[1], req[2], req[3]))


def _cast_worker(req: Any) -> None:
    if req[0] == "$otpy_apply":
        _apply(req[1], req[2])
    else:
        _apply_beam(req[1], req[2], req[3])


def _known(req: Any) -> bool:
    if req.__class__ is not tuple or not req:
        return False
    if req[0] == "$otpy_apply":
        return len(req) == 3 and isinstance(req[1], str)
    return req[0] in ("call", "cast") and len(req) == 5


class Rex(GenServer):
    """The ``rex`` server: each request is applied in a new process."""

    def init(self, arg: Any) -> Ok:
        return Ok(None)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        if _known(request):
            spawn(_worker, from_, request)
        else:
            _gen.reply(from_, (Atom("badrpc"), (Atom("EXIT"), Atom("unknown_call"))))
        return NoReply(state)

    def handle_cast(self, request: Any, state: Any) -> Any:
        if _known(request):
            spawn(_cast_worker, request)
        return NoReply(state)


def start_server() -> Pid:
    """Start and register ``rex`` on this node unless it runs (``otp.dist.start`` does
    this); returns its pid."""
    pid = whereis(REX)
    if pid is not None:
        return pid
    started = gen_server.start(Rex, None, name=REX)
    assert started is not None
    return started

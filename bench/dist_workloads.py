"""The distribution workloads.

``dist_codec``: encode then decode a chat-sized message with the External Term Format
codec of ``otp.dist`` (the otpy mapping, the one otpy nodes use between them), and its
floor, msgpack on the same value.

``dist_ping_pong``, ``dist_call``, ``dist_throughput``: two nodes in separate OS
processes (started with ``otp.testing_dist.Cluster``, a private EPMD), the loop timed on
the first node and only there (node start-up and connection set-up are not timed: a
warm-up exchange makes the connection first). The ``erl`` system runs the same three on
two ``erl`` nodes, with the loops compiled (``bench/erl/bench_dist.erl``) and timed with
``erlang:monotonic_time``; it is n/a when ``erl`` is not installed.

The otpy nodes run with ``otp.dist.start``'s default busy wait (they poll their
sockets for 200 µs before sleeping), as the ``erl`` nodes run with their schedulers'
default busy wait (``+sbwt medium``): on an idle host a wake-up from sleep costs more
than the round trip itself.

The message is what a chat server hands another node for a delivery: a tuple of a few
strs, two ints, a 200-byte body and the recipient's Pid (msgpack, which has no Pid,
carries the pid's id as an int instead).

``python -m bench.dist_workloads`` prints the codec's speed on the distribution's
control tuples, C accelerator against the Python codec and msgpack (``codec_table``).
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time
from typing import Any

from bench._measure import Result, Workload, micros_each, per_second

UNAVAILABLE: str | None = None
ERL_UNAVAILABLE: str | None = None if shutil.which("erl") else "erl is not installed"
try:
    import msgpack
except ImportError as exc:
    UNAVAILABLE = f"msgpack not installed ({exc})"

_BODY = "x" * 200
BUSY_WAIT = 0.0002  # otp.dist.start's default


def _message(pid: Any) -> tuple[Any, ...]:
    return ("deliver", "alice", "bob", 1_733_600_000_123, 42, _BODY, pid)


def dist_codec(n: int) -> Result:
    from otp.dist._etf import decode, encode
    from otp.lowlevel import Pid

    msg = _message(Pid("chat@host", 1234, 1))
    assert decode(encode(msg))[0] == msg
    start = time.perf_counter()
    for _ in range(n):
        decode(encode(msg))
    return micros_each(n, time.perf_counter() - start), "us/message", n


def codec_table(n: int = 50_000, repeat: int = 7) -> str:
    """The codec's speed on the control tuples of the distribution protocol and a chat
    message: encode and decode, each in µs (the median of ``repeat`` runs of ``n``), for
    the C accelerator, the Python codec (and how many times slower it is, encode and
    decode together) and msgpack (a pid as an int). Wall-clock: on a shared machine
    every column moves; compare within a row.
    ``python -m bench.dist_workloads`` prints it."""
    import statistics
    import timeit

    from otp.dist import _etf
    from otp.dist._etf_types import Atom, ImproperList
    from otp.lowlevel import Down, Pid, Ref

    a, b = Pid("a@host", 1234, 1), Pid("b@host", 99, 2)
    ref = Ref("a@host", 5)
    alias = ImproperList((Atom("alias"),), ref)  # the tag of a gen_server call: [alias | Ref]
    cases: list[tuple[str, Any, Any]] = [
        ("SEND header (22, Pid, Pid)", (22, a, b), (22, 1234, 99)),
        ("REG_SEND (6, Pid, '', Atom)", (6, a, Atom(""), Atom("bench_ponger")),
         (6, 1234, "", "bench_ponger")),
        ("message ('ping', Pid)", ("ping", a), ("ping", 1234)),
        ("call ($gen_call, (Pid, Ref), req)", (Atom("$gen_call"), (a, ref), ("get", 1)),
         ("$gen_call", (1234, 5), ("get", 1))),
        ("call ((Pid, [alias|Ref]), 'incr')",
         (Atom("$gen_call"), (a, alias), "incr"), ("$gen_call", (1234, ("alias", 5)), "incr")),
        ("reply ([alias|Ref], 1)", (alias, 1), (("alias", 5), 1)),
        ("Down record", Down(ref, a, "normal"), (5, 1234, "normal")),
        ("chat message", _message(a), _message(1234)),
    ]  # fmt: skip
    impls = [("C", _etf.encode, _etf.decode), ("Python", _etf._py_encode, _etf._py_decode)]
    if not _etf.ACCELERATED:
        impls = impls[1:]

    def us(f: Any, k: int) -> float:
        return statistics.median(timeit.repeat(f, number=k, repeat=repeat)) / k * 1e6

    head = "".join(f"{name + ' enc':>11}{name + ' dec':>11}" for name, _, _ in impls)
    ratio = f"{'Python / C':>12}" if len(impls) == 2 else ""
    lines = [f"{'µs, median of ' + str(repeat):34}{head}{ratio}{'msgpack':>11}{'C / msgpack':>13}"]
    for label, term, plain in cases:
        row, sums = "", []
        for name, enc, dec in impls:
            data = enc(term)
            k = n if name == "C" else n // 5
            e, d = us(lambda: enc(term), k), us(lambda: dec(data), k)  # noqa: B023
            row += f"{e:11.2f}{d:11.2f}"
            sums.append(e + d)
        if len(sums) == 2:  # enc + dec, the Python codec against the C one
            row += f"{sums[1] / sums[0]:11.2f}×"
        packed = msgpack.packb(plain)
        mp = us(lambda: msgpack.packb(plain), n) + us(lambda: msgpack.unpackb(packed), n)  # noqa: B023
        lines.append(f"{label:34}{row}{mp:11.2f}{sums[0] / mp:12.2f}×")
    return "\n".join(lines)


def msgpack_codec(n: int) -> Result:
    msg = _message(1234)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    start = time.perf_counter()
    for _ in range(n):
        unpackb(packb(msg))
    return micros_each(n, time.perf_counter() - start), "us/message", n


# --- two otpy nodes ------------------------------------------------------------------

_OTPY_PEER = """
def _pong():
    while True:
        m = receive()
        if m == 'stop':
            return
        send(m[1], 'pong')

def _sink():
    count = 0
    while True:
        m = receive()
        if m.__class__ is tuple and m[0] == 'sync':
            send(m[1], ('count', count))
            count = 0
        elif m == 'stop':
            return
        else:
            count += 1

class _Counter(gen_server.GenServer):
    def init(self, arg):
        return gen_server.Ok(0)
    def handle_call(self, request, from_, state):
        return gen_server.Reply(state + 1, state + 1)

register('bench_ponger', spawn(_pong))
register('bench_sink', spawn(_sink))
gen_server.start(_Counter, None, name='bench_counter')
"""

_OTPY_LOOPS = """
import time

def _ping(k, peer):
    to, msg = ('bench_ponger', peer), ('ping', self())
    for _ in range(k):
        send(to, msg)
        receive()

def dist_ping_pong(n, peer):
    _ping(10, peer)
    t0 = time.perf_counter()
    _ping(n, peer)
    return time.perf_counter() - t0

def _calls(k, peer):
    srv, call = ('bench_counter', peer), gen_server.call
    for _ in range(k):
        call(srv, 'incr')

def dist_call(n, peer):
    _calls(10, peer)
    t0 = time.perf_counter()
    _calls(n, peer)
    return time.perf_counter() - t0

def dist_throughput(n, peer):
    to = ('bench_sink', peer)
    send(to, ('sync', self()))
    receive()
    t0 = time.perf_counter()
    for i in range(n):
        send(to, ('msg', i))
    send(to, ('sync', self()))
    got = receive()
    elapsed = time.perf_counter() - t0
    assert got == ('count', n), got
    return elapsed
"""


def _otpy_pair(workload: str, n: int) -> float:
    from otp.testing_dist import Cluster

    with tempfile.TemporaryDirectory(prefix="otpy-bench-") as tmp, Cluster(tmp) as c:
        # otp.dist.start's default busy wait, as erl's schedulers run with theirs
        a, b = c.otpy("bench_a", busy_wait=BUSY_WAIT), c.otpy("bench_b", busy_wait=BUSY_WAIT)
        b.exec(_OTPY_PEER)
        a.exec(_OTPY_LOOPS)
        return float(a.eval(f"{workload}(N, PEER)", N=n, PEER=b.name, timeout=600))


def _otpy(workload: str, unit: str) -> Workload:
    def run(n: int) -> Result:
        elapsed = _otpy_pair(workload, n)
        if unit == "msgs/s":
            return per_second(n, elapsed), unit, n
        return micros_each(n, elapsed), unit, n

    run.__name__ = workload
    return run


# --- two erl nodes --------------------------------------------------------------------

_ERL_SOURCE = pathlib.Path(__file__).resolve().parent / "erl" / "bench_dist.erl"

_ERL_START = {
    "dist_ping_pong": "register(bench_ponger, spawn(bench_dist, pong, [])), ok.",
    "dist_call": "{ok, _} = gen_server:start({local, bench_counter}, bench_dist, [], []), ok.",
    "dist_throughput": "register(bench_sink, spawn(bench_dist, sink, [0])), ok.",
}
_ERL_LOOP = {
    "dist_ping_pong": "ping",
    "dist_call": "call_loop",
    "dist_throughput": "throughput",
}


def _erl_pair(workload: str, n: int) -> float:
    from otp.testing_dist import Cluster

    with tempfile.TemporaryDirectory(prefix="otpy-bench-") as tmp, Cluster(tmp) as c:
        shutil.copy(_ERL_SOURCE, tmp)
        load = (
            f'{{ok, bench_dist, Bin}} = compile:file("{tmp}/bench_dist.erl", [binary]), '
            '{module, bench_dist} = code:load_binary(bench_dist, "bench_dist.erl", Bin), ok.'
        )
        e1, e2 = c.erl("bench_e1"), c.erl("bench_e2")
        for e in (e1, e2):
            e.eval(load, timeout=60)
        e2.eval(_ERL_START[workload])
        micros = e1.eval(f"bench_dist:{_ERL_LOOP[workload]}({n}, '{e2.name}').", timeout=600)
        return float(micros) / 1e6


def _erl(workload: str, unit: str) -> Workload:
    def run(n: int) -> Result:
        if ERL_UNAVAILABLE:
            raise RuntimeError(ERL_UNAVAILABLE)
        elapsed = _erl_pair(workload, n)
        if unit == "msgs/s":
            return per_second(n, elapsed), unit, n
        return micros_each(n, elapsed), unit, n

    run.__name__ = workload
    return run


_UNITS = {
    "dist_ping_pong": "us/round_trip",
    "dist_call": "us/call",
    "dist_throughput": "msgs/s",
}

WORKLOADS: dict[str, Workload] = {"dist_codec": dist_codec}
MSGPACK_WORKLOADS: dict[str, Workload] = {"dist_codec": msgpack_codec}
OTPY_PAIR_WORKLOADS: dict[str, Workload] = {w: _otpy(w, u) for w, u in _UNITS.items()}
ERL_WORKLOADS: dict[str, Workload] = {w: _erl(w, u) for w, u in _UNITS.items()}


if __name__ == "__main__":
    print(codec_table())

"""The ``dist_codec`` workload: encode then decode a chat-sized message with the
External Term Format codec of ``otp.dist`` (the otpy mapping, the one otpy nodes use
between them), and its floor, msgpack on the same value.

The message is what a chat server hands another node for a delivery: a tuple of a few
strs, two ints, a 200-byte body and the recipient's Pid (msgpack, which has no Pid,
carries the pid's id as an int instead).
"""

from __future__ import annotations

import time
from typing import Any

from bench._measure import Result, Workload, micros_each

UNAVAILABLE: str | None = None
try:
    import msgpack
except ImportError as exc:
    UNAVAILABLE = f"msgpack not installed ({exc})"

_BODY = "x" * 200


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


def msgpack_codec(n: int) -> Result:
    msg = _message(1234)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    start = time.perf_counter()
    for _ in range(n):
        unpackb(packb(msg))
    return micros_each(n, time.perf_counter() - start), "us/message", n


WORKLOADS: dict[str, Workload] = {"dist_codec": dist_codec}
MSGPACK_WORKLOADS: dict[str, Workload] = {"dist_codec": msgpack_codec}

"""otp: Erlang/OTP for Python, on gevent greenlets.

Processes with mailboxes and selective receive, links, monitors and exit signals
(``otp.process``); the test kit (``otp.testing``). Start here::

    import otp
    from otp.process import spawn, send, receive, self

    def main():
        pid = spawn(lambda parent: send(parent, "hello"), self())
        return receive()

    assert otp.run(main) == "hello"
"""

from __future__ import annotations

from otp.errors import (
    AlreadyRegistered,
    BadArg,
    NameTaken,
    NodeError,
    NoProc,
    NotInProcess,
    OTPError,
    ProcessExit,
    ReceiveTimeout,
)
from otp.lowlevel import ANY, Down, Exit, NodeDown, Pid, ProcessInfo, Ref, TimerTimeout
from otp.node import patch, run

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AlreadyRegistered",
    "BadArg",
    "Down",
    "Exit",
    "NameTaken",
    "NoProc",
    "NodeDown",
    "NodeError",
    "NotInProcess",
    "OTPError",
    "Pid",
    "ProcessExit",
    "ProcessInfo",
    "ReceiveTimeout",
    "Ref",
    "TimerTimeout",
    "__version__",
    "patch",
    "run",
]

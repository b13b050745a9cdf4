"""Leaving the hub: blocking calls in a thread pool, and real OS threads.

Greenlets are cooperative: a process that blocks the OS thread (``fsync``, a blocking C
library, a long computation) stalls every process of the node. Send such work to a
thread instead::

    import os, otp
    from otp.threads import run_in_thread

    def main():
        fd = os.open("/tmp/otp-threads-example", os.O_CREAT | os.O_WRONLY)
        try:
            os.write(fd, b"data")
            run_in_thread(os.fsync, fd)      # the node keeps running meanwhile
        finally:
            os.close(fd)
        return "synced"

    assert otp.run(main) == "synced"

The calling process waits (as it would for I/O) and gets the result or the exception.
It can still be killed while it waits; the thread finishes its call regardless.
Do not touch process state (send, receive) from inside the thread function.
"""

from __future__ import annotations

from otp.lowlevel import OSEvent, OSLock, run_in_thread, start_os_thread

__all__ = ["OSEvent", "OSLock", "run_in_thread", "start_os_thread"]

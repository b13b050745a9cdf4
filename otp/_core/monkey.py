"""gevent's monkey-patching, for ``otp.patch()``.

Processes that do blocking I/O (sockets, ``time.sleep``, subprocess) must go through
gevent, so a program built on ``otp`` patches the standard library first thing.
"""

from __future__ import annotations

from gevent import monkey

__all__ = ["patch"]


def patch() -> None:
    """Apply gevent's monkey-patching to the standard library (idempotent). Call it
    before other imports: ``import otp; otp.patch()`` on a program's first lines."""
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()

"""The distribution cookie: where it comes from, and the digest that proves it.

Two nodes talk only if they share a cookie. It is never sent: each side sends a random
challenge, and the other answers with ``md5(cookie + str(challenge))``.

The cookie comes, in this order, from the ``cookie`` argument of ``otp.dist.start``, or
from a file (``cookie_file``, else ``~/.erlang.cookie``, the file ``erl`` reads). As
``erl`` does, a missing file is created with a random 20-letter cookie and mode 0400,
and a file that others may read is refused. There is no built-in default cookie.

    >>> digest(1234, "secret").hex()
    'bdfc2db0aa599f5919e565c328216a51'
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import string

from otp.errors import BadArg

__all__ = ["digest", "resolve_cookie"]

_LETTERS = string.ascii_uppercase


def digest(challenge: int, cookie: str) -> bytes:
    """The 16-byte answer to ``challenge``: MD5 of the cookie then the challenge in
    decimal, as Erlang's ``dist_util:gen_digest``."""
    return hashlib.md5((cookie + str(challenge)).encode()).digest()


def default_cookie_file() -> str:
    return os.path.join(os.path.expanduser("~"), ".erlang.cookie")


def resolve_cookie(cookie: str | None = None, cookie_file: str | None = None) -> str:
    """The cookie to use: ``cookie`` if given, else the file's content (created with a
    random value, mode 0400, when missing). Raises ``BadArg`` for an empty cookie or a
    file readable by others."""
    if cookie is not None:
        if not isinstance(cookie, str) or not cookie:
            raise BadArg(f"otp.dist.start expects a non-empty str cookie, got {cookie!r}")
        return cookie
    path = cookie_file if cookie_file is not None else default_cookie_file()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write("".join(secrets.choice(_LETTERS) for _ in range(20)))
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadArg(
            f"cookie file {path} must be accessible by its owner only "
            f"(mode 0400 or 0600), got mode {stat.S_IMODE(st.st_mode):o}"
        )
    with open(path) as f:
        value = f.read().strip()
    if not value:
        raise BadArg(f"cookie file {path} is empty; write a cookie into it")
    return value

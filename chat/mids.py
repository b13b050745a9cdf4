"""Message ids: opaque, unique, and bound to their sender, recipient and content.

A ``mid`` is 32 URL-safe base64 characters (24 bytes) made with the server's secret
key (kept in the store, so ids made before a restart still check after it)::

    r   = blake2b(key, "id"   | sender | seq), 12 bytes   unique per message
    tag = blake2b(key, "to"   | r | sender | recipient), 6 bytes
    fp  = blake2b(key, "body" | recipient | body), 6 bytes
    mid = base64url(r | tag | fp)

- *Opaque*: without the key, a mid says nothing of its sender's message count (the old
  ``<sender>:<counter>`` ids did) and cannot be guessed.
- *Bound to sender and recipient* (``tag``): the recipient's process checks, in O(1) and
  without any table, that a mid named in a ``read`` is a message from that sender to
  that recipient (docs/semantics.md C7): a made-up or someone else's mid fails.
- *Bound to its content* (``fp``): a ``send`` that reuses a ``cmid`` with another
  recipient or body is told apart from a resend (``cmid_reused``).
- *Unique*: ``r`` is a keyed hash of the sender and its outbox sequence number (unique
  per sender), 96 bits: two messages share an id with negligible probability.
  Per-sender order is kept by the per-pair sequence numbers, never by ids.

Example::

    >>> from chat import mids
    >>> key = bytes(32)
    >>> m = mids.make(key, "+14155550100", 7, "+14155550111", "hi")
    >>> len(m), mids.is_from_to(key, m, "+14155550100", "+14155550111")
    (32, True)
    >>> mids.is_from_to(key, m, "+14155550122", "+14155550111")
    False
    >>> mids.same_content(key, m, "+14155550111", "hi")
    True
    >>> mids.same_content(key, m, "+14155550111", "ho")
    False
"""

from __future__ import annotations

import base64
import binascii
import hmac
from hashlib import blake2b

__all__ = ["LENGTH", "SECRET_ROW", "is_from_to", "make", "same_content"]

#: characters in a mid
LENGTH = 32
#: the store's users row (not a phone number: no request can name it) that keeps the key
SECRET_ROW = "#mid-key"


def _tag(key: bytes, r: bytes, sender: str, recipient: str) -> bytes:
    # (r has a fixed length, and phone numbers hold no NUL: the input is unambiguous)
    return blake2b(b"to\0%s%s\0%s" % (r, sender.encode(), recipient.encode()), key=key,
                   digest_size=6).digest()


def _fp(key: bytes, recipient: str, body: str | bytes | tuple[str, bytes]) -> bytes:
    if body.__class__ is str:
        kind, data = b"s", body.encode()  # type: ignore[union-attr]
    elif body.__class__ is tuple:  # a media message: (tag, packed record), chat.media
        kind, data = b"m", body[1]  # type: ignore[assignment]
    else:
        kind, data = b"b", body  # type: ignore[assignment]
    return blake2b(b"body\0%s\0%s" % (recipient.encode(), kind) + data,  # type: ignore[operator]
                   key=key, digest_size=6).digest()


def make(key: bytes, sender: str, seq: int, recipient: str, body: str | bytes) -> str:
    """The mid of ``sender``'s message ``seq`` (its outbox sequence number) to
    ``recipient``."""
    r = blake2b(b"id\0%s\0%d" % (sender.encode(), seq), key=key, digest_size=12).digest()
    return base64.urlsafe_b64encode(r + _tag(key, r, sender, recipient)
                                    + _fp(key, recipient, body)).decode()


def _raw(mid: str) -> bytes | None:
    if mid.__class__ is not str or len(mid) != LENGTH:
        return None
    try:
        return base64.urlsafe_b64decode(mid)
    except (binascii.Error, ValueError):
        return None


def is_from_to(key: bytes, mid: str, sender: str, recipient: str) -> bool:
    """Is ``mid`` the id of a message from ``sender`` to ``recipient``?"""
    raw = _raw(mid)
    if raw is None:
        return False
    return hmac.compare_digest(_tag(key, raw[:12], sender, recipient), raw[12:18])


def same_content(key: bytes, mid: str, recipient: str, body: str | bytes) -> bool | None:
    """Was ``mid`` made for this recipient and body? None for an id of the old
    ``<sender>:<counter>`` form (made before content-bound ids: unknown)."""
    raw = _raw(mid)
    if raw is None:
        return None
    return hmac.compare_digest(_fp(key, recipient, body), raw[18:])

"""End-to-end encryption of media files: AES-256-GCM with a fresh random key per file,
streamed in chunks (a file is never held whole in memory).

The sending device encrypts, uploads the ciphertext, and puts the ``MediaSecret`` (key,
nonce, plaintext SHA-256 and size) in the media message; the receiving device downloads
the ciphertext and decrypts it with that secret, checking the GCM tag *and* the
plaintext hash before anything is kept. The media server only ever holds ciphertext.

The ciphertext is ``AES-256-GCM(key, nonce, plaintext) || tag`` (the 16-byte tag last):
it is exactly 16 bytes longer than the file. The key (32 bytes) and nonce (12 bytes) come
from ``os.urandom`` and are used for one file only. See chat/README.md, "Media
encryption", for what this protects and what it does not.

::

    >>> import io
    >>> ct = io.BytesIO()
    >>> secret = encrypt_stream(io.BytesIO(b"a photo"), ct.write)
    >>> len(ct.getvalue()) == len(b"a photo") + TAG_SIZE
    True
    >>> out = io.BytesIO()
    >>> d = Decryptor(secret, out.write)
    >>> d.feed(ct.getvalue()); d.finish(); out.getvalue()
    b'a photo'
    >>> bad = bytearray(ct.getvalue()); bad[0] ^= 1
    >>> d = Decryptor(secret, io.BytesIO().write); d.feed(bytes(bad))
    >>> try:
    ...     d.finish()
    ... except MediaIntegrityError as e:
    ...     print(e.code)
    bad_tag
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CHUNK", "KEY_SIZE", "NONCE_SIZE", "SCHEME", "TAG_SIZE", "Decryptor",
           "EncryptingReader", "MediaError", "MediaIntegrityError", "MediaSecret",
           "decrypt_file", "encrypt_file", "encrypt_stream"]

#: the scheme's name, as carried in the media message (``enc``)
SCHEME = "aes-256-gcm"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: how much is read, encrypted and written at a time
CHUNK = 256 * 1024
#: GCM's limit for one (key, nonce): 2**39 - 256 bits of plaintext
MAX_SIZE = (2**39 - 256) // 8


class MediaError(Exception):
    """A media operation failed: ``code`` (short, stable) and a readable ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        #: seconds to wait before trying again, when the server said (``busy``)
        self.retry_after: float | None = None


class MediaIntegrityError(MediaError):
    """Downloaded media does not decrypt to what the sender sent (``bad_tag``,
    ``bad_hash``, ``bad_size``): nothing of it is kept."""


@dataclass(frozen=True)
class MediaSecret:
    """What the receiver needs to decrypt and check a file: travels in the message."""

    key: bytes
    nonce: bytes
    sha256: bytes  # of the plaintext
    size: int  # plaintext bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE:
            raise MediaError("bad_key", f"expected a {KEY_SIZE}-byte key, got "
                                        f"{len(self.key)} bytes")
        if len(self.nonce) != NONCE_SIZE:
            raise MediaError("bad_key", f"expected a {NONCE_SIZE}-byte nonce, got "
                                        f"{len(self.nonce)} bytes")
        if len(self.sha256) != 32:
            raise MediaError("bad_key", f"expected a 32-byte SHA-256, got "
                                        f"{len(self.sha256)} bytes")
        if not 0 <= self.size <= MAX_SIZE:
            raise MediaError("bad_size", f"expected a size from 0 to {MAX_SIZE}, got "
                                         f"{self.size}")

    @property
    def ciphertext_size(self) -> int:
        return self.size + TAG_SIZE

    def to_fields(self) -> dict[str, Any]:
        """The secret as fields of a media record (docs/protocol.md, "The media
        message"): ``enc``, ``key``, ``iv``, ``plain_sha256`` — opaque to the server —
        and ``size``, the ciphertext's."""
        return {"enc": SCHEME, "key": self.key, "iv": self.nonce,
                "plain_sha256": self.sha256, "size": self.ciphertext_size}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> MediaSecret:
        """The secret from a media record; ``MediaError("bad_key")`` if it holds none."""
        if f.get("enc", SCHEME) != SCHEME:
            raise MediaError("bad_key", f"expected media encrypted with {SCHEME}, got "
                                        f"{f.get('enc')!r}")
        try:
            return cls(bytes(f["key"]), bytes(f["iv"]), bytes(f["plain_sha256"]),
                       int(f["size"]) - TAG_SIZE)
        except (KeyError, TypeError, ValueError) as e:
            raise MediaError("bad_key", f"the media record lacks a usable key, iv, "
                                        f"plain_sha256 or size: {e!r}") from None


def _cipher(key: bytes, nonce: bytes, tag: bytes | None = None) -> Cipher[modes.GCM]:
    return Cipher(algorithms.AES(key), modes.GCM(nonce, tag))


class EncryptingReader:
    """The ciphertext of ``src`` as an iterator of chunks (the tag in the last one), with
    a fresh key and nonce; ``secret`` is there once the iteration is over. ``size`` (the
    plaintext's, when known up front) makes ``ciphertext_size`` known before the upload,
    and a source that turns out longer or shorter is an error."""

    def __init__(self, src: BinaryIO, size: int | None = None, *, chunk: int = CHUNK,
                 key: bytes | None = None, nonce: bytes | None = None) -> None:
        self.src = src
        self.size = size
        self.chunk = chunk
        self.key = key or os.urandom(KEY_SIZE)
        self.nonce = nonce or os.urandom(NONCE_SIZE)
        self._secret: MediaSecret | None = None
        self._ct_hash = hashlib.sha256()

    @property
    def ciphertext_sha256(self) -> str:
        """The lowercase hex SHA-256 of the ciphertext (the server's media id), once the
        iteration is over."""
        _ = self.secret
        return self._ct_hash.hexdigest()

    @property
    def ciphertext_size(self) -> int | None:
        return None if self.size is None else self.size + TAG_SIZE

    @property
    def secret(self) -> MediaSecret:
        if self._secret is None:
            raise MediaError("not_done", "the file has not been read to its end yet")
        return self._secret

    def __iter__(self) -> Iterator[bytes]:
        enc = _cipher(self.key, self.nonce).encryptor()
        h = hashlib.sha256()
        n = 0
        while True:
            block = self.src.read(self.chunk)
            if not block:
                break
            n += len(block)
            if n > (MAX_SIZE if self.size is None else self.size):
                raise MediaError("bad_size", f"the file grew while it was read: expected "
                                             f"{self.size} bytes, got more")
            h.update(block)
            out = enc.update(block)
            self._ct_hash.update(out)
            yield out
        if self.size is not None and n != self.size:
            raise MediaError("bad_size", f"the file changed while it was read: expected "
                                         f"{self.size} bytes, got {n}")
        last = enc.finalize() + enc.tag
        self._ct_hash.update(last)
        self._secret = MediaSecret(self.key, self.nonce, h.digest(), n)
        yield last


def encrypt_stream(src: BinaryIO, write: Callable[[bytes], Any], *,
                   chunk: int = CHUNK) -> MediaSecret:
    """Encrypt ``src`` to ``write`` (ciphertext then tag) with a fresh key; the secret."""
    r = EncryptingReader(src, chunk=chunk)
    for block in r:
        write(block)
    return r.secret


class Decryptor:
    """Decrypts a ciphertext fed in pieces, writing plaintext to ``write`` as it goes;
    ``finish`` checks the tag, the size and the plaintext hash, and raises
    ``MediaIntegrityError`` if any is wrong. Until ``finish`` returns, what was written
    is *unverified*: write it somewhere temporary (``decrypt_file`` does)."""

    def __init__(self, secret: MediaSecret, write: Callable[[bytes], Any], *,
                 ciphertext_sha256: str | None = None) -> None:
        self.secret = secret
        self.write = write
        self.ciphertext_sha256 = ciphertext_sha256
        self._ct_hash = hashlib.sha256()
        self._dec = _cipher(secret.key, secret.nonce).decryptor()
        self._hash = hashlib.sha256()
        self._tail = b""  # the last TAG_SIZE bytes seen: maybe the tag
        self._n = 0  # ciphertext bytes fed

    def feed(self, data: bytes) -> None:
        self._n += len(data)
        self._ct_hash.update(data)
        if self._n > self.secret.ciphertext_size:
            raise MediaIntegrityError("bad_size", f"expected {self.secret.ciphertext_size} "
                                                  "bytes of ciphertext, got more")
        buf = self._tail + data
        if len(buf) <= TAG_SIZE:
            self._tail = buf
            return
        body, self._tail = buf[:-TAG_SIZE], buf[-TAG_SIZE:]
        out = self._dec.update(body)
        self._hash.update(out)
        self.write(out)

    def finish(self) -> None:
        if self._n != self.secret.ciphertext_size:
            raise MediaIntegrityError("bad_size", f"expected {self.secret.ciphertext_size} "
                                                  f"bytes of ciphertext, got {self._n}")
        if (self.ciphertext_sha256 is not None
                and self._ct_hash.hexdigest() != self.ciphertext_sha256.lower()):
            raise MediaIntegrityError("bad_hash", "the downloaded ciphertext's SHA-256 is "
                                                  "not the media id the sender named")
        try:
            out = self._dec.finalize_with_tag(self._tail)
        except InvalidTag:
            raise MediaIntegrityError(
                "bad_tag", "the media's authentication tag does not match: the ciphertext "
                           "was altered, or the key or nonce is wrong") from None
        self._hash.update(out)
        self.write(out)
        if self._hash.digest() != self.secret.sha256:
            raise MediaIntegrityError("bad_hash", "the decrypted media's SHA-256 is not "
                                                  "the one its sender announced")


def atomic_writer(dest: str) -> tuple[BinaryIO, Callable[[], None], Callable[[], None]]:
    """A temporary file beside ``dest`` (mode 0600), and ``commit`` (fsync, rename onto
    ``dest``) / ``abort`` (remove it): ``dest`` holds either nothing new or all of it."""
    d = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=d)
    f = os.fdopen(fd, "wb")

    def commit() -> None:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, dest)

    def abort() -> None:
        f.close()
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass

    return f, commit, abort


def encrypt_file(src: str, dest: str, *, chunk: int = CHUNK) -> MediaSecret:
    """Encrypt the file ``src`` into ``dest`` (atomically); the secret."""
    out, commit, abort = atomic_writer(dest)
    try:
        with open(src, "rb") as f:
            secret = encrypt_stream(f, out.write, chunk=chunk)
        commit()
    except BaseException:
        abort()
        raise
    return secret


def decrypt_file(src: str, dest: str, secret: MediaSecret, *, chunk: int = CHUNK) -> None:
    """Decrypt the ciphertext file ``src`` into ``dest``, which appears (atomically) only
    if it checks out; ``MediaIntegrityError`` otherwise, and ``dest`` is untouched."""
    out, commit, abort = atomic_writer(dest)
    try:
        d = Decryptor(secret, out.write)
        with open(src, "rb") as f:
            while block := f.read(chunk):
                d.feed(block)
        d.finish()
        commit()
    except BaseException:
        abort()
        raise

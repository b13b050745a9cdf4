"""chat.media_crypto and chat.thumbnail on their own (no server): the ciphertext is the
plaintext's length plus the tag, it decrypts back only with the right key and unaltered,
streaming keeps memory bounded, and images beyond Pillow's pixel limit are refused."""

from __future__ import annotations

import doctest
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chat import media_crypto, thumbnail
from chat.media_crypto import (
    TAG_SIZE,
    Decryptor,
    EncryptingReader,
    MediaError,
    MediaIntegrityError,
    MediaSecret,
    decrypt_file,
    encrypt_file,
    encrypt_stream,
)
from chat.thumbnail import MAX_THUMB_BYTES, make_thumbnail


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression
    bomb as far as the header goes: only a decoder would find out it has no data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def roundtrip(data: bytes, chunk: int = 1000) -> tuple[bytes, MediaSecret]:
    ct = io.BytesIO()
    secret = encrypt_stream(io.BytesIO(data), ct.write, chunk=chunk)
    out = io.BytesIO()
    d = Decryptor(secret, out.write)
    raw = ct.getvalue()
    for i in range(0, len(raw), 777):  # pieces that do not line up with the tag
        d.feed(raw[i:i + 777])
    d.finish()
    return out.getvalue(), secret


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 3000))
def test_media_roundtrip_gives_back_the_plaintext_and_its_hash(data: bytes, chunk: int) -> None:
    back, secret = roundtrip(data, chunk)
    assert back == data
    assert secret.sha256 == hashlib.sha256(data).digest()
    assert secret.size == len(data)


def test_media_ciphertext_is_the_plaintext_length_plus_the_tag_and_not_the_plaintext() -> None:
    data = b"x" * 10_000
    ct = io.BytesIO()
    encrypt_stream(io.BytesIO(data), ct.write)
    assert len(ct.getvalue()) == len(data) + TAG_SIZE
    assert b"xxxxxxxx" not in ct.getvalue()


def test_media_each_file_gets_a_fresh_key_and_nonce() -> None:
    a = encrypt_stream(io.BytesIO(b"same"), lambda b: None)
    b = encrypt_stream(io.BytesIO(b"same"), lambda b: None)
    assert a.key != b.key and a.nonce != b.nonce
    assert len(a.key) == 32 and len(a.nonce) == 12


@pytest.mark.parametrize("where", [0, 5000, -1])  # in the body, in the tag
def test_media_tampered_ciphertext_is_refused(where: int) -> None:
    data = os.urandom(10_000)
    ct = io.BytesIO()
    secret = encrypt_stream(io.BytesIO(data), ct.write)
    bad = bytearray(ct.getvalue())
    bad[where] ^= 0x01
    d = Decryptor(secret, lambda b: None)
    d.feed(bytes(bad))
    with pytest.raises(MediaIntegrityError) as e:
        d.finish()
    assert e.value.code == "bad_tag"


def test_media_wrong_key_is_refused() -> None:
    ct = io.BytesIO()
    secret = encrypt_stream(io.BytesIO(b"secret photo"), ct.write)
    wrong = MediaSecret(bytes(32), secret.nonce, secret.sha256, secret.size)
    d = Decryptor(wrong, lambda b: None)
    d.feed(ct.getvalue())
    with pytest.raises(MediaIntegrityError, match="bad_tag"):
        d.finish()


def test_media_wrong_announced_hash_is_refused() -> None:
    ct = io.BytesIO()
    s = encrypt_stream(io.BytesIO(b"secret photo"), ct.write)
    lied = MediaSecret(s.key, s.nonce, hashlib.sha256(b"other").digest(), s.size)
    d = Decryptor(lied, lambda b: None)
    d.feed(ct.getvalue())
    with pytest.raises(MediaIntegrityError, match="bad_hash"):
        d.finish()


@pytest.mark.parametrize("cut", [1, TAG_SIZE, TAG_SIZE + 3])
def test_media_truncated_or_lengthened_ciphertext_is_refused(cut: int) -> None:
    ct = io.BytesIO()
    s = encrypt_stream(io.BytesIO(b"y" * 100), ct.write)
    d = Decryptor(s, lambda b: None)
    d.feed(ct.getvalue()[:-cut])
    with pytest.raises(MediaIntegrityError, match="bad_size"):
        d.finish()
    d = Decryptor(s, lambda b: None)
    with pytest.raises(MediaIntegrityError, match="bad_size"):
        d.feed(ct.getvalue() + b"z")


def test_media_secret_travels_as_message_fields() -> None:
    s = encrypt_stream(io.BytesIO(b"abc"), lambda b: None)
    f = s.to_fields()
    assert f["enc"] == "aes-256-gcm"
    assert f["size"] == 3 + TAG_SIZE  # the ciphertext's, as the server checks it
    assert MediaSecret.from_fields(f) == s
    with pytest.raises(MediaError, match="bad_key"):
        MediaSecret.from_fields({**f, "key": b"short"})
    with pytest.raises(MediaError, match="bad_key"):
        MediaSecret.from_fields({**f, "enc": "rot13"})
    with pytest.raises(MediaError, match="bad_key"):
        MediaSecret.from_fields({"enc": "aes-256-gcm"})


def test_media_ciphertext_hash_is_checked_when_given() -> None:
    ct = io.BytesIO()
    r = EncryptingReader(io.BytesIO(b"abc"))
    for b in r:
        ct.write(b)
    assert r.ciphertext_sha256 == hashlib.sha256(ct.getvalue()).hexdigest()
    d = Decryptor(r.secret, lambda b: None, ciphertext_sha256=r.ciphertext_sha256)
    d.feed(ct.getvalue())
    d.finish()
    d = Decryptor(r.secret, lambda b: None, ciphertext_sha256="0" * 64)
    d.feed(ct.getvalue())
    with pytest.raises(MediaIntegrityError, match="bad_hash"):
        d.finish()


def test_media_encrypting_reader_refuses_a_file_that_changed_size() -> None:
    r = EncryptingReader(io.BytesIO(b"12345"), size=4)
    with pytest.raises(MediaError, match="bad_size"):
        list(r)
    r = EncryptingReader(io.BytesIO(b"123"), size=4)
    with pytest.raises(MediaError, match="bad_size"):
        list(r)
    with pytest.raises(MediaError, match="not_done"):
        _ = EncryptingReader(io.BytesIO(b"")).secret


def test_media_files_are_streamed_in_chunks_and_written_atomically(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))  # 24 MiB
    reads: list[int] = []

    class Counting(io.FileIO):
        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            b = super().read(n)
            reads.append(len(b))
            return b

    ct = tmp_path / "big.enc"
    with Counting(str(src), "rb") as f, open(ct, "wb") as out:
        secret = encrypt_stream(f, out.write)  # type: ignore[arg-type]
    assert max(reads) <= 256 * 1024  # never the whole file at once
    assert ct.stat().st_size == src.stat().st_size + TAG_SIZE
    dest = tmp_path / "out.bin"
    decrypt_file(str(ct), str(dest), secret)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(
        src.read_bytes()).digest()
    # altered: the destination is not written, and no temporary file is left behind
    with open(ct, "r+b") as f:
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0xFF]))
    dest2 = tmp_path / "out2.bin"
    with pytest.raises(MediaIntegrityError):
        decrypt_file(str(ct), str(dest2), secret)
    assert not dest2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "big.enc", "out.bin"]


def test_media_encrypt_file_then_decrypt_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello media")
    s = encrypt_file(str(tmp_path / "a.txt"), str(tmp_path / "a.enc"))
    decrypt_file(str(tmp_path / "a.enc"), str(tmp_path / "b.txt"), s)
    assert (tmp_path / "b.txt").read_bytes() == b"hello media"


# ---------------------------------------------------------------- thumbnails


def test_thumbnail_of_an_image_is_a_small_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "photo.png"
    Image.effect_noise((1200, 800), 64).convert("RGB").save(p)
    t = make_thumbnail(str(p))
    assert t is not None
    assert (t.width, t.height) == (1200, 800)
    assert len(t.data) <= MAX_THUMB_BYTES
    im = Image.open(io.BytesIO(t.data))
    assert im.format == "JPEG" and max(im.size) == 96


def test_thumbnail_of_a_non_image_is_none(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("not a picture")
    assert make_thumbnail(str(p)) is None


def test_thumbnail_refuses_a_decompression_bomb(tmp_path: Path) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None  # the guard is on
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(100_000, 100_000))  # 10**10 pixels claimed
    with pytest.raises(MediaError) as e:
        make_thumbnail(str(p))
    assert e.value.code == "image_too_large"
    assert "pixels" in e.value.message


def test_thumbnail_refuses_an_image_between_the_limit_and_twice_it(tmp_path: Path) -> None:
    # Pillow only warns there; the thumbnailer refuses it as well.
    side = int((Image.MAX_IMAGE_PIXELS or 0) ** 0.5) + 100
    p = tmp_path / "big.png"
    p.write_bytes(png_claiming(side, side))
    with pytest.raises(MediaError, match="image_too_large"):
        make_thumbnail(str(p))


def test_thumbnail_is_made_only_for_photo_formats(tmp_path: Path) -> None:
    p = tmp_path / "drawing.eps"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 50 50\n")
    assert make_thumbnail(str(p)) is None  # never handed to Ghostscript
    for fmt in ("PNG", "GIF", "BMP", "WEBP", "TIFF"):
        q = tmp_path / f"x.{fmt.lower()}"
        Image.new("RGB", (50, 50), "blue").save(q, fmt)
        t = make_thumbnail(str(q))
        assert t is not None and (t.width, t.height) == (50, 50), fmt


@pytest.mark.parametrize("module", [media_crypto, thumbnail], ids=lambda m: m.__name__)
def test_media_module_docstring_examples_run(module: object) -> None:
    res = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert res.attempted > 0 and res.failed == 0

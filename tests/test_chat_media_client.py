"""End-to-end encrypted media through a real server over real sockets (the chat
connection and the HTTP media endpoint, loopback): upload → message → download →
decrypt gives the same bytes; the server holds only ciphertext; a tampered ciphertext
or a wrong key is refused and leaves no file; a decompression bomb is refused before
anything is uploaded."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chat.client import ChatError, Client, MediaItem
from chat.media_crypto import TAG_SIZE, MediaError, MediaIntegrityError, MediaSecret
from tests.chat_helpers import running_chat
from tests.test_chat_media_client_crypto import png_claiming

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"
MEDIA = {"host": "127.0.0.1", "port": 0}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_event(c: Client) -> dict[str, Any]:
    evs = c.wait_for(lambda evs: any(e.get("kind") == "media" for e in evs), 30.0)
    return next(e for e in evs if e.get("kind") == "media")


def blob_path(tmp_path: Path, media_id: str) -> Path:
    """Where the server keeps a blob (docs/protocol.md, "Media configuration")."""
    return tmp_path / "data" / "media" / "blobs" / media_id[:2] / media_id


@contextmanager
def pair(tmp_path: Path) -> Iterator[tuple[Client, Client]]:
    """A running server with its media endpoint; Alice and Bob logged in."""
    with running_chat(tmp_path, media=MEDIA) as srv:
        yield srv.user(A), srv.user(B)


def photo(path: Path, size: tuple[int, int] = (1600, 1200)) -> bytes:
    Image.effect_noise(size, 50).convert("RGB").save(path, "JPEG", quality=95)
    return path.read_bytes()


def test_media_upload_message_download_decrypt_gives_the_same_bytes(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "beach.jpg"
        data = photo(src)
        seen: list[tuple[int, int]] = []
        r = alice.send_media(B, str(src), caption="the beach",
                             progress=lambda d, t: seen.append((d, t)))
        assert r.mid
        # the upload reported its progress up to the whole ciphertext
        assert seen[-1] == (len(data) + TAG_SIZE, len(data) + TAG_SIZE)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)

        ev = media_event(bob)
        item = Client.media_item(ev)
        assert item is not None
        assert (item.sender, item.name, item.mime, item.caption, item.size) == (
            A, "beach.jpg", "image/jpeg", "the beach", len(data))
        assert item.thumbnail is not None
        assert Image.open(io.BytesIO(item.thumbnail)).format == "JPEG"

        # what the server holds is the ciphertext, not the photo
        blob = blob_path(tmp_path, item.media_id).read_bytes()
        assert len(blob) == len(data) + TAG_SIZE and sha(blob) == item.media_id
        assert data[:4096] not in blob and data[-4096:] not in blob

        out = tmp_path / "bob"
        out.mkdir()
        got = bob.download(item, str(out))
        assert got == str(out / "beach.jpg")
        assert sha(Path(got).read_bytes()) == sha(data)


def test_media_ack_after_download_lets_the_server_delete_the_blob(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "notes.txt"
        src.write_bytes(b"minutes of the meeting\n" * 1000)
        alice.send_media(B, str(src))
        item = Client.media_item(media_event(bob))
        assert item is not None and item.thumbnail is None  # not an image: no thumbnail
        assert item.mime == "text/plain"
        bob.download(item, str(tmp_path / "copy.txt"))
        assert (tmp_path / "copy.txt").read_bytes() == src.read_bytes()
        # acknowledged by its only recipient: gone from the server
        with pytest.raises(ChatError) as e:
            bob.request("media_download", media=item.media_id)
        assert e.value.code == "unknown_media"
        assert not blob_path(tmp_path, item.media_id).exists()


def test_media_tampered_ciphertext_is_refused_and_nothing_is_written(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "a.bin"
        src.write_bytes(os.urandom(300_000))
        alice.send_media(B, str(src))
        item = Client.media_item(media_event(bob))
        assert item is not None
        p = blob_path(tmp_path, item.media_id)
        raw = bytearray(p.read_bytes())
        raw[1000] ^= 0x40  # someone with the server's disk flips a bit
        p.write_bytes(bytes(raw))
        out = tmp_path / "bob"
        out.mkdir()
        with pytest.raises(MediaIntegrityError):
            bob.download(item, str(out))
        assert list(out.iterdir()) == []  # no file, no partial file
        # not acknowledged: the server still has it (another device may still fetch it)
        assert bob.request("media_download", media=item.media_id)["url"]


def test_media_wrong_key_is_refused_and_nothing_is_written(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "a.bin"
        src.write_bytes(os.urandom(100_000))
        alice.send_media(B, str(src))
        item = Client.media_item(media_event(bob))
        assert item is not None
        s = item.secret
        wrong = MediaItem(**{**item.__dict__, "secret": MediaSecret(os.urandom(32), s.nonce,
                                                                    s.sha256, s.size)})
        dest = tmp_path / "out.bin"
        with pytest.raises(MediaIntegrityError) as e:
            bob.download(wrong, str(dest))
        assert e.value.code == "bad_tag"
        assert not dest.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".part-")] == []
        # the right key still works
        bob.download(item, str(dest))
        assert sha(dest.read_bytes()) == sha(src.read_bytes())


def test_media_decompression_bomb_is_refused_before_any_upload(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        bomb = tmp_path / "bomb.png"
        bomb.write_bytes(png_claiming(100_000, 100_000))
        with pytest.raises(MediaError) as e:
            alice.send_media(B, str(bomb))
        assert e.value.code == "image_too_large"
        blobs = tmp_path / "data" / "media" / "blobs"
        assert not blobs.exists() or [p for p in blobs.rglob("*") if p.is_file()] == []
        assert bob.poll(0.3) == []  # no message was sent


def test_media_streams_a_large_file_with_bounded_chunks(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "video.mp4"
        with open(src, "wb") as f:
            for _ in range(8):
                f.write(os.urandom(1 << 20))
        calls: list[int] = []
        alice.send_media(B, str(src), progress=lambda d, t: calls.append(d))
        steps = [b - a for a, b in zip([0, *calls], calls, strict=False)]
        assert max(steps) <= 256 * 1024 + TAG_SIZE  # streamed, one chunk at a time
        item = Client.media_item(media_event(bob))
        assert item is not None and item.mime == "video/mp4"
        got = bob.download(item, str(tmp_path / "got.mp4"))
        assert sha(Path(got).read_bytes()) == sha(src.read_bytes())


def test_media_download_renews_a_token_the_endpoint_refuses(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "a.bin"
        src.write_bytes(os.urandom(10_000))
        alice.send_media(B, str(src))
        item = Client.media_item(media_event(bob))
        assert item is not None
        stale = MediaItem(**{**item.__dict__, "token": "not-a-token"})
        got = bob.download(stale, str(tmp_path / "got.bin"))
        assert Path(got).read_bytes() == src.read_bytes()


def test_media_item_of_a_text_message_is_none_and_a_bad_record_is_refused() -> None:
    assert Client.media_item({"t": "msg", "mid": "m", "from": A, "body": "hi"}) is None
    assert Client.media_item({"t": "receipt", "type": "sent", "mid": "m"}) is None
    with pytest.raises(MediaError) as e:
        Client.media_item({"t": "msg", "mid": "m", "from": A, "kind": "media",
                           "body": {"media": "ab" * 32, "size": 100}})
    assert e.value.code == "bad_key"


def test_media_sender_file_names_cannot_leave_the_media_directory(node, tmp_path):
    with pair(tmp_path) as (alice, bob):
        src = tmp_path / "x.txt"
        src.write_text("x")
        alice.send_media(B, str(src))
        ev = media_event(bob)
        ev["body"]["name"] = "../../.bashrc"  # what a hostile sender could say
        item = Client.media_item(ev)
        assert item is not None and item.name == "bashrc"
        out = tmp_path / "in"
        out.mkdir()
        assert bob.download(item, str(out), ack=False) == str(out / "bashrc")
        assert bob.download(item, str(out)) == str(out / "bashrc (2)")  # never overwritten


def test_media_upload_waits_out_a_busy_endpoint_and_tries_again(node, tmp_path,
                                                               monkeypatch):
    import socket
    import urllib.parse

    import chat.client as client_mod
    from otp.process import sleep as proc_sleep

    with running_chat(tmp_path, media={**MEDIA, "max_uploads": 1, "retry_after": 2}) as srv:
        alice, bob = srv.user(A), srv.user(B)
        slot = alice.request("media_upload", size=1000)
        u = urllib.parse.urlsplit(slot["url"])
        stall = socket.create_connection((u.hostname, u.port))  # the one upload running
        stall.sendall(f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      f"{slot['token']}\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 10)
        waits: list[float] = []

        def waiting(seconds: float) -> None:  # the client's wait: end the stalled upload
            waits.append(seconds)
            stall.close()
            proc_sleep(0.05)  # (the server notices the close; else the client waits again)

        monkeypatch.setattr(client_mod, "_wait", waiting)
        monkeypatch.setattr(Client, "upload_attempts", 100)
        src = tmp_path / "a.bin"
        src.write_bytes(os.urandom(5000))
        alice.send_media(B, str(src))
        assert waits and waits[0] == 2.0  # the endpoint's Retry-After
        item = Client.media_item(media_event(bob))
        assert item is not None
        assert Path(bob.download(item, str(tmp_path / "b.bin"))).read_bytes() == \
            src.read_bytes()  # fmt: skip

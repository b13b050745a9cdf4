"""The media endpoint, end to end: chat sessions over real sockets (plain and TLS), the
blobs over real HTTP(S) (``http.client``), docs/protocol.md "Media"."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import pytest

from chat import media, media_store
from chat.client import ChatError, Client
from tests.chat_helpers import ServerProcess, client_tls, running_chat

pytestmark = pytest.mark.otp(clock="real")

ALICE, BOB, CAROL = "+14155550100", "+14155550111", "+14155550122"


def media_cfg(**over: Any) -> dict[str, Any]:
    return {"port": 0, **over}


def conn(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    u = urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=client_tls())
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def req(method: str, url: str, token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = conn(url)
    hs = dict(headers or {})
    if token is not None:
        hs["Authorization"] = f"Bearer {token}"
    try:
        c.request(method, urlsplit(url).path + (f"?{urlsplit(url).query}"
                                                 if urlsplit(url).query else ""),
                  body=body, headers=hs)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def upload(client: Any, data: bytes) -> dict[str, Any]:
    slot = client.request("media_upload", size=len(data))
    status, _, body = req("POST", slot["url"], slot["token"], data)
    assert status in (200, 201), body
    return json.loads(body)


def record(up: dict[str, Any], **over: Any) -> dict[str, Any]:
    rec = {"media": up["media"], "sha256": up["sha256"], "size": up["size"],
           "mime": "image/jpeg", "width": 4, "height": 3, "caption": "a cat",
           "thumbnail": "aGVsbG8=", "key": b"k" * 32, "iv": b"n" * 12,
           "plain_sha256": b"p" * 32}
    rec.update(over)
    return rec


def wait_media(client: Any) -> dict[str, Any]:
    evs = client.wait_for(lambda evs: any(e.get("kind") == "media" for e in evs))
    return next(e for e in evs if e.get("kind") == "media")


def err(body: bytes) -> str:
    return str(json.loads(body)["error"])


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_media_uploaded_sent_and_downloaded_by_recipient_is_the_same_bytes(
        node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls, media=media_cfg()) as srv:
        alice, bob, carol = srv.user(ALICE), srv.user(BOB), srv.user(CAROL)
        data = os.urandom(200_000)  # (ciphertext, to the server)
        up = upload(alice, data)
        assert up["media"] == hashlib.sha256(data).hexdigest() == up["sha256"]
        assert up["size"] == len(data)
        assert up["url"].startswith("https://" if tls else "http://")
        rec = record(up)
        r = alice.request("send", to=BOB, cmid="m-1", kind="media", body=rec)
        msg = wait_media(bob)
        assert msg["mid"] == r["mid"] and msg["from"] == ALICE
        assert msg["body"] == rec  # opaque fields passed through untouched
        d = msg["download"]
        status, hs, got = req("GET", d["url"], d["token"])
        assert (status, got) == (200, data)
        assert hs["content-length"] == str(len(data)) and hs["accept-ranges"] == "bytes"
        # the uploader may download too; a stranger may not, even with a token of its own
        mine = alice.request("media_download", media=up["media"])
        assert req("GET", mine["url"], mine["token"])[2] == data
        with pytest.raises(ChatError) as e:
            carol.request("media_download", media=up["media"])
        assert e.value.code == "unknown_media"
        # receipts as for a text message
        alice.wait_for(lambda evs: any(e.get("type") == "delivered" and e["mid"] == r["mid"]
                                       for e in evs))


def test_media_download_by_someone_else_is_403_and_a_token_for_another_blob_is_401(
        node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice, carol = srv.user(ALICE), srv.user(CAROL)
        up = upload(alice, b"secret ciphertext")
        other = upload(carol, b"carol's own")
        # Carol's token for her own blob does not open Alice's
        tok = carol.request("media_download", media=other["media"])["token"]
        status, hs, body = req("GET", up["url"], tok)
        assert (status, err(body)) == (401, "bad_token")
        assert hs["content-type"] == "application/json"
        # a token Carol could get for Alice's id, were it forged, is refused per request:
        # made with the server's key, it still fails the access check
        ctx = media._CTX.get()
        forged = media.make_token(ctx.key, "down", CAROL, up["media"],
                                  media_store.wall() + 60)
        status, _, body = req("GET", up["url"], forged)
        assert (status, err(body)) == (403, "forbidden")
        status, _, body = req("GET", up["url"], None)
        assert (status, err(body)) == (401, "bad_token")
        status, _, body = req("GET", up["url"], "garbage.token")
        assert (status, err(body)) == (401, "bad_token")


def test_media_token_past_its_expiry_is_refused_with_token_expired(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        up = upload(alice, b"x" * 10)
        ctx = media._CTX.get()
        old = media.make_token(ctx.key, "down", ALICE, up["media"], media_store.wall() - 1)
        status, _, body = req("GET", up["url"], old)
        assert (status, err(body)) == (401, "token_expired")
        slot = alice.request("media_upload", size=3)
        old_up = media.make_token(ctx.key, "up", ALICE, "", media_store.wall() - 1)
        status, _, body = req("POST", slot["url"], old_up, b"abc")
        assert (status, err(body)) == (401, "token_expired")
        # a download token does not upload
        status, _, body = req("POST", slot["url"], media.make_token(
            ctx.key, "down", ALICE, up["media"], media_store.wall() + 60), b"abc")
        assert (status, err(body)) == (401, "bad_token")


def test_media_range_requests_give_206_and_416(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        data = bytes(range(256)) * 40
        up = upload(alice, data)
        tok = alice.request("media_download", media=up["media"])["token"]
        url = up["url"]
        for rng, want in (("bytes=0-9", data[:10]), ("bytes=100-", data[100:]),
                          ("bytes=-5", data[-5:]), ("bytes=10000-99999", data[10000:])):
            status, hs, body = req("GET", url, tok, headers={"Range": rng})
            assert (status, body) == (206, want), rng
            first = len(data) - len(want) if rng.startswith("bytes=-") else int(
                rng[6:].split("-")[0])
            assert hs["content-range"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"
        status, hs, body = req("GET", url, tok, headers={"Range": f"bytes={len(data)}-"})
        assert (status, err(body)) == (416, "range_not_satisfiable")
        assert hs["content-range"] == f"bytes */{len(data)}"
        status, _, body = req("GET", url, tok, headers={"Range": "bytes=0-1,5-6"})
        assert (status, body) == (200, data)  # several ranges: the whole blob


def test_media_blob_is_deleted_once_every_recipient_acknowledged_it(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice, bob, carol = srv.user(ALICE), srv.user(BOB), srv.user(CAROL)
        data = b"photo bytes" * 100
        up = upload(alice, data)
        path = media_store.blob_path(str(tmp_path / "data" / "media"), up["media"])
        assert os.path.exists(path)
        for to, cmid in ((BOB, "b"), (CAROL, "c")):
            alice.request("send", to=to, cmid=cmid, kind="media", body=record(up))
        mb, mc = wait_media(bob), wait_media(carol)
        assert req("GET", mb["download"]["url"], mb["download"]["token"])[2] == data
        bob.request("media_ack", media=[up["media"]])
        assert os.path.exists(path)  # Carol has not got it yet
        # an ack by the uploader, or of an unknown or malformed id, changes nothing
        alice.request("media_ack", media=[up["media"], "f" * 64, "../etc/passwd"])
        assert os.path.exists(path)
        assert req("GET", mc["download"]["url"], mc["download"]["token"])[2] == data
        carol.request("media_ack", media=[up["media"]])
        assert not os.path.exists(path)
        status, _, body = req("GET", mc["download"]["url"], mc["download"]["token"])
        assert (status, err(body)) == (404, "unknown_media")
        with pytest.raises(ChatError) as e:
            alice.request("send", to=BOB, cmid="again", kind="media", body=record(up))
        assert e.value.code == "unknown_media"


def test_media_message_to_an_offline_recipient_is_queued_in_order_with_text(
        node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice, bob = srv.user(ALICE), srv.user(BOB)
        key = bob.key
        bob.close()
        up = upload(alice, b"sent while Bob is away")
        alice.send(BOB, "one")
        mid = alice.request("send", to=BOB, cmid="two", kind="media", body=record(up))["mid"]
        alice.send(BOB, "three")
        alice.wait_for(lambda evs: any(e.get("type") == "sent" and e["mid"] == mid
                                       for e in evs))
        bob = srv.client()
        bob.login(BOB, key)
        evs = bob.wait_for(lambda evs: sum(e.get("t") == "msg" for e in evs) >= 3)
        msgs = [e for e in evs if e.get("t") == "msg"]
        assert [m.get("kind", "text") for m in msgs] == ["text", "media", "text"]
        assert [m["body"] for m in msgs][::2] == ["one", "three"]
        d = msgs[1]["download"]
        assert req("GET", d["url"], d["token"])[2] == b"sent while Bob is away"
        alice.wait_for(lambda evs: any(e.get("type") == "delivered" and e["mid"] == mid
                                       for e in evs))


def test_media_same_bytes_uploaded_twice_are_stored_once(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice, bob = srv.user(ALICE), srv.user(BOB)
        a = upload(alice, b"same")
        slot = bob.request("media_upload", size=4)
        status, _, body = req("POST", slot["url"], slot["token"], b"same")
        assert status == 200 and json.loads(body)["media"] == a["media"]
        # both are its uploaders
        bob.request("media_download", media=a["media"])
        blobs = tmp_path / "data" / "media" / "blobs"
        assert [p.name for p in blobs.rglob("*") if p.is_file()] == [a["media"]]


def test_media_message_resent_with_same_cmid_is_one_message(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        srv.user(BOB)
        up = upload(alice, b"abc")
        r1 = alice.request("send", to=BOB, cmid="x", kind="media", body=record(up))
        r2 = alice.request("send", to=BOB, cmid="x", kind="media", body=record(up))
        assert r1["mid"] == r2["mid"]
        with pytest.raises(ChatError) as e:
            alice.request("send", to=BOB, cmid="x", kind="media",
                          body=record(up, caption="other"))
        assert e.value.code == "cmid_reused"


# ---------------------------------------------------------------------------- bad input


def test_media_record_checks_thumbnail_base64_and_cap_and_fields(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg(thumbnail_max=64)) as srv:
        alice, bob = srv.user(ALICE), srv.user(BOB)
        up = upload(alice, b"abc")

        def code(**over: Any) -> str:
            with pytest.raises(ChatError) as e:
                alice.request("send", to=BOB, cmid=os.urandom(4).hex(), kind="media",
                              body=record(up, **over))
            return e.value.code

        assert code(thumbnail="not base64!") == "bad_media"
        assert code(thumbnail="aGVsbG8") == "bad_media"  # unpadded
        assert code(thumbnail="QUFB" * 22) == "thumbnail_too_large"  # 66 bytes
        assert code(thumbnail="QUFB" * 1000) == "thumbnail_too_large"
        assert code(thumbnail=5) == "bad_media"
        assert code(media="../../etc/passwd") == "bad_media"
        assert code(media="A" * 64) == "bad_media"
        assert code(sha256="0" * 64) == "bad_media"
        assert code(size=4) == "bad_media"  # not the blob's size
        assert code(mime="") == "bad_media"
        assert code(width=-1) == "bad_media"
        assert code(duration="long") == "bad_media"
        assert code(media="0" * 64, sha256="0" * 64) == "unknown_media"
        for bad in ({"kind": "media", "body": "text"}, {"kind": "video", "body": "x"},
                    {"body": {"media": up["media"]}}):
            with pytest.raises(ChatError) as e:
                alice.request("send", to=BOB, cmid="k", **bad)
            assert e.value.code == "bad_request"
        # kind "text" is a text message, as without a kind
        alice.request("send", to=BOB, cmid="t", kind="text", body="plain")
        assert any(e.get("body") == "plain" and "kind" not in e for e in bob.wait_for(
            lambda evs: any(e.get("t") == "msg" for e in evs)))
        # nothing of the refused ones reached Bob; a good one does
        alice.request("send", to=BOB, cmid="ok", kind="media",
                      body=record(up, thumbnail="QUFB" * 21))
        assert wait_media(bob)["cmid"] == "ok"
        assert [e for e in bob.poll(0.2) if e.get("t") == "msg"] == []


def test_media_someone_elses_blob_cannot_be_sent(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice, carol = srv.user(ALICE), srv.user(CAROL)
        srv.user(BOB)
        up = upload(alice, b"alice's")
        with pytest.raises(ChatError) as e:
            carol.request("send", to=BOB, cmid="steal", kind="media", body=record(up))
        assert e.value.code == "unknown_media"


def test_media_ids_in_paths_are_hex_sha256_only(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        up = upload(alice, b"abc")
        base = up["url"].rsplit("/", 1)[0]
        tok = alice.request("media_download", media=up["media"])["token"]
        for bad in ("..%2F..%2Fmedia.db", "../media.db", "token.key", up["media"].upper(),
                    up["media"] + "0", "%2e%2e%2fetc%2fpasswd"):
            status, _, body = req("GET", f"{base}/{bad}", tok)
            assert status in (400, 404), bad
            assert err(body) in ("bad_request", "not_found"), bad
        status, _, body = req("GET", base.rsplit("/", 1)[0] + "/other", tok)
        assert (status, err(body)) == (404, "not_found")
        status, _, body = req("DELETE", up["url"], tok)
        assert (status, err(body)) == (405, "method_not_allowed")


def test_media_upload_over_the_size_cap_is_refused_by_header_and_by_stream(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg(max_size=1000)) as srv:
        alice = srv.user(ALICE)
        with pytest.raises(ChatError) as e:
            alice.request("media_upload", size=1001)
        assert (e.value.code, e.value.frame["max_size"]) == ("media_too_large", 1000)
        slot = alice.request("media_upload", size=10)
        # by header: refused before any of the body is read (none is sent here)
        c = conn(slot["url"])
        c.putrequest("POST", "/media")
        c.putheader("Authorization", f"Bearer {slot['token']}")
        c.putheader("Content-Length", str(10**12))
        c.endheaders()
        r = c.getresponse()
        assert (r.status, err(r.read())) == (413, "too_large")
        c.close()
        # by stream: a chunked body that grows past the cap
        c = conn(slot["url"])
        c.request("POST", "/media", body=iter([b"x" * 600, b"y" * 600]),
                  headers={"Authorization": f"Bearer {slot['token']}"},
                  encode_chunked=True)
        r = c.getresponse()
        assert (r.status, err(r.read())) == (413, "too_large")
        c.close()
        # a chunked body within the cap is fine
        c = conn(slot["url"])
        c.request("POST", "/media", body=iter([b"x" * 600, b"y" * 400]),
                  headers={"Authorization": f"Bearer {slot['token']}"},
                  encode_chunked=True)
        r = c.getresponse()
        assert r.status == 201 and json.loads(r.read())["size"] == 1000
        c.close()
        assert_no_partial_blob(tmp_path, expect=1)


def assert_no_partial_blob(tmp_path: Any, expect: int = 0) -> None:
    root = tmp_path / "data" / "media"
    assert [p.name for p in (root / "tmp").iterdir()] == []
    blobs = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == expect
    for p in blobs:  # every blob kept is whole: named by the hash of its bytes
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name


def raw_upload(url: str, token: str, length: int, *, tls_ctx: ssl.SSLContext | None = None
               ) -> socket.socket:
    """An upload's headers, announcing ``length`` bytes, and none of the body yet."""
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    if u.scheme == "https":
        s = client_tls().wrap_socket(s, server_hostname="localhost")
    s.sendall((f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Length: {length}\r\n\r\n").encode())
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    r = http.client.HTTPResponse(s)  # type: ignore[arg-type]
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def test_media_truncated_upload_keeps_nothing(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        slot = alice.request("media_upload", size=100_000)
        s = raw_upload(slot["url"], slot["token"], 100_000)
        s.sendall(b"z" * 50_000)
        s.close()  # mid-body
        wait_until(lambda: media.uploads_running() == 0)
        assert_no_partial_blob(tmp_path)
        # and the endpoint still serves
        assert upload(alice, b"after")["size"] == 5


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    """Wait for a condition of the server (checked each time the node had a turn)."""
    from otp.process import now, receive

    deadline = now() + timeout
    while not cond():
        if now() > deadline:
            raise AssertionError("condition not met")
        receive(None, 0.01, default=None)  # let the server's processes run


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_media_trickling_upload_times_out_and_chat_is_unaffected(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls, media=media_cfg(upload_timeout=0.5)) as srv:
        alice, bob = srv.user(ALICE), srv.user(BOB)
        slot = alice.request("media_upload", size=1000)
        s = raw_upload(slot["url"], slot["token"], 1000)
        s.sendall(b"a")  # then nothing more: a stalled or trickling client
        alice.send(BOB, "chat goes on")
        assert any(e.get("body") == "chat goes on"
                   for e in bob.wait_for(lambda evs: any(e.get("t") == "msg" for e in evs)))
        status, _, body = read_response(s)
        assert (status, err(body)) == (408, "upload_timeout")
        s.close()
        wait_until(lambda: media.uploads_running() == 0)
        assert_no_partial_blob(tmp_path)


def test_media_uploads_beyond_max_uploads_get_503_with_retry_after(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg(max_uploads=2, retry_after=7)) as srv:
        alice = srv.user(ALICE)
        slot = alice.request("media_upload", size=100)
        held = [raw_upload(slot["url"], slot["token"], 100) for _ in range(2)]
        for s in held:
            s.sendall(b"h")
        wait_until(lambda: media.uploads_running() == 2)
        s3 = raw_upload(slot["url"], slot["token"], 100)
        status, hs, body = read_response(s3)
        assert (status, err(body), hs["retry-after"]) == (503, "busy", "7")
        s3.close()
        for s in held:  # they finish normally
            s.sendall(b"x" * 99)
            status, _, body = read_response(s)
            assert status in (200, 201)
            s.close()
        wait_until(lambda: media.uploads_running() == 0)
        assert upload(alice, b"now there is room")["size"] == 17


def test_media_upload_without_length_or_token_is_refused(node, tmp_path):
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        slot = alice.request("media_upload", size=3)
        u = urlsplit(slot["url"])
        s = socket.create_connection((u.hostname, u.port), timeout=10)
        s.sendall(f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  f"{slot['token']}\r\n\r\n".encode())
        status, _, body = read_response(s)
        assert (status, err(body)) == (411, "length_required")
        s.close()
        status, _, body = req("POST", slot["url"], None, b"abc")
        assert (status, err(body)) == (401, "bad_token")
        # the token in the query works as well as in the header
        status, _, body = req("POST", slot["url"] + "?token=" + slot["token"], None, b"abc")
        assert status == 201


def test_media_requests_without_a_media_section_are_unavailable(node, tmp_path):
    with running_chat(tmp_path) as srv:
        alice = srv.user(ALICE)
        for t, f in (("media_upload", {"size": 1}), ("media_download", {"media": "0" * 64}),
                     ("media_ack", {"media": []})):
            with pytest.raises(ChatError) as e:
                alice.request(t, **f)
            assert e.value.code == "unavailable"


# ---------------------------------------------------------------------------- SIGKILL


@pytest.mark.otp(clock="real", timeout=120)
def test_media_sigkill_during_an_upload_leaves_no_partial_blob(node, tmp_path):
    """The whole server killed (SIGKILL) while an upload streams: after the restart,
    what was acknowledged (201) is whole and downloadable; the interrupted upload
    left nothing, on disk or served."""
    srv = ServerProcess(tmp_path, media={"port": 0})
    port = srv.start()
    try:
        c = Client("127.0.0.1", port, auto_reconnect=False)
        c.connect()
        key = c.provision("t", [ALICE])[0]
        c.login(ALICE, key)
        done = upload(c, b"acknowledged before the kill")
        part = media.BATCH + 400_000  # more than one batch: some of it is on disk
        slot = c.request("media_upload", size=2 * part)
        s = raw_upload(slot["url"], slot["token"], 2 * part)
        s.sendall(b"p" * part)
        tmp = tmp_path / "data" / "media" / "tmp"
        wait_until(lambda: any(p.stat().st_size > 0 for p in tmp.iterdir()))
        c.close()
        srv.kill()
        s.close()
        port = srv.start()
        assert_no_partial_blob(tmp_path, expect=1)
        c = Client("127.0.0.1", port, auto_reconnect=False)
        c.connect()
        c.login(ALICE, key)
        d = c.request("media_download", media=done["media"])
        assert req("GET", d["url"], d["token"])[2] == b"acknowledged before the kill"
        half = hashlib.sha256(b"p" * part).hexdigest()
        with pytest.raises(ChatError) as e:
            c.request("media_download", media=half)
        assert e.value.code == "unknown_media"
        c.close()
    finally:
        srv.kill()


def test_media_production_config_with_a_wildcard_host_needs_a_public_url():
    from chat.config import check_production, parse_config
    from otp.errors import ConfigError

    base = {"env": "prod", "sms": {"adapter": "http", "url": "https://sms"}}
    with pytest.raises(ConfigError, match=r"media\.public_url"):
        check_production(parse_config({**base, "media": {"host": "0.0.0.0"}}))
    check_production(parse_config({**base, "media": {"host": "0.0.0.0",
                                                     "public_url": "https://chat:5224"}}))


def test_media_endpoint_killed_is_restarted_by_the_chat_supervisor(node, tmp_path):
    from otp.process import Down, exit, monitor, whereis
    from otp.testing import assert_receive

    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        up = upload(alice, b"kept across the restart")
        old = whereis(media.HTTP)
        ref = monitor(old)
        exit(old, "kill")
        assert_receive(Down(ref=ref, pid=old, reason="killed"))
        wait_until(lambda: whereis(media.HTTP) not in (None, old))
        d = alice.request("media_download", media=up["media"])  # the chat session lives on
        assert req("GET", d["url"], d["token"])[2] == b"kept across the restart"
        assert upload(alice, b"and uploads go on")["size"] == 17


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_media_upload_of_several_disk_batches_is_kept_whole(node, tmp_path, chunked):
    """An upload's body goes to disk a batch at a time (in the thread pool): one of
    several batches and a partial last one is named by the hash of all its bytes."""
    with running_chat(tmp_path, media=media_cfg()) as srv:
        alice = srv.user(ALICE)
        data = os.urandom(2 * media.BATCH + 12_345)
        slot = alice.request("media_upload", size=len(data))
        c = conn(slot["url"])
        try:
            hs = {"Authorization": f"Bearer {slot['token']}"}
            if chunked:
                pieces = (data[i:i + 300_000] for i in range(0, len(data), 300_000))
                c.request("POST", "/media", body=pieces, headers=hs, encode_chunked=True)
            else:
                c.request("POST", "/media", body=data, headers=hs)
            r = c.getresponse()
            up = json.loads(r.read())
            assert r.status == 201, up
        finally:
            c.close()
        assert (up["media"], up["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
        assert_no_partial_blob(tmp_path, expect=1)


def test_media_pacing_halves_the_upload_rate_when_the_node_is_late_and_grows_it_on_time(
        node):
    """Uploads take what chat leaves: the pacing timer fired late (the node is short of
    CPU) halves their combined rate; on time while it holds uploads back, the rate grows
    by a step."""
    from collections import deque

    from otp.process import now

    st = media._Http()
    st.rate, st.tokens, st.filled = 64e6, 0.0, now()
    st.disk, st.disk_wait, st.active = {}, deque(), set()
    st.due = now() - 10 * media.LAG  # fired late
    media._pace(st)
    assert st.rate == 32e6 and st.due is None
    st.due = now()
    media._pace(st)
    assert st.rate == 32e6  # on time, but no upload is held back: unchanged
    st.tokens = -1e18  # one upload waits for its share
    st.disk_wait.append(("pid", media.BATCH, None))
    st.due = now()
    media._pace(st)
    assert st.rate == 32e6 + media.RATE_STEP
    st.rate = media.MIN_RATE
    st.active = set()
    st.due = now() - 10 * media.LAG
    media._pace(st)
    assert st.rate == media.MIN_RATE


def test_media_download_turn_is_not_held_back_by_the_upload_pacing(node, monkeypatch):
    """Downloads share the endpoint's thread-pool turns with uploads, but write nothing:
    an upload waiting for its share of the rate does not hold a download behind it."""
    from collections import deque

    from otp.process import now

    granted: list[Any] = []
    monkeypatch.setattr(media.gen_server, "reply", lambda from_, v: granted.append(from_))
    monkeypatch.setattr(media, "_tick", lambda st: None)
    st = media._Http()
    st.rate, st.tokens, st.filled = media.MIN_RATE, -1e18, now()  # uploads owe a lot
    st.disk, st.active = {}, set()
    st.disk_wait = deque([("up", media.BATCH, "upload"), ("down", 0, "download")])
    media._grant(st)
    assert granted == ["download"] and [w[0] for w in st.disk_wait] == ["up"]
    st.tokens = 0.0  # the pacing allows again
    media._grant(st)
    assert granted == ["download", "upload"] and not st.disk_wait


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_media_upload_with_a_length_is_read_in_the_pool_over_plain_http(
        node, tmp_path, monkeypatch, tls):
    """Over plain HTTP an upload's body is read, hashed and written by thread-pool jobs
    (otp.httpd.direct_body); over TLS the process reads it and the jobs hash and write."""
    from otp import httpd

    bodies: list[Any] = []
    direct_body = httpd.direct_body

    def spy(environ: dict[str, Any]) -> Any:
        bodies.append(direct_body(environ))
        return bodies[-1]

    monkeypatch.setattr(media.httpd, "direct_body", spy)
    with running_chat(tmp_path, tls=tls, media=media_cfg()) as srv:
        data = os.urandom(media.BATCH + 1)
        up = upload(srv.user(ALICE), data)
        assert (up["media"], up["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert len(bodies) == 1 and (bodies[0] is None) == tls
    assert tls or bodies[0].remaining == 0


def test_media_uploads_whose_body_has_not_come_hold_no_pool_turn(node, tmp_path):
    """An upload waits for its body's first bytes without one of the endpoint's
    thread-pool turns: clients that stall before sending anything do not hold the
    others back."""
    with running_chat(tmp_path, media=media_cfg(upload_timeout=60)) as srv:
        alice = srv.user(ALICE)
        stalled = []
        for _ in range(media.DISK_JOBS + 1):
            slot = alice.request("media_upload", size=1000)
            stalled.append(raw_upload(slot["url"], slot["token"], 1000))
        wait_until(lambda: media.uploads_running() == len(stalled))
        data = os.urandom(media.BATCH + 5)
        assert upload(alice, data)["media"] == hashlib.sha256(data).hexdigest()
        for s in stalled:
            s.close()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_media_upload_is_handed_to_the_disk_batch_by_batch(node, tmp_path, monkeypatch,
                                                            tls):
    """Each batch of an upload starts its writeback when written (media._write_out), so
    the blob does not reach the disk in one burst at its fsync."""
    calls: list[int] = []
    write_out = media._write_out

    def spy(f: Any) -> None:
        calls.append(f.tell())
        write_out(f)

    monkeypatch.setattr(media, "_write_out", spy)
    with running_chat(tmp_path, tls=tls, media=media_cfg()) as srv:
        data = os.urandom(2 * media.BATCH + 7)
        up = upload(srv.user(ALICE), data)
        assert up["media"] == hashlib.sha256(data).hexdigest()
    assert len(calls) >= 3 and calls == sorted(calls) and calls[-1] == len(data)

"""The sqlite store in its own OS process (``store_process: true``, the default).

``chat.store.SqliteProcessBackend`` starts ``python -m chat.store_child <path>
<durability> <fd>`` and talks to it over a Unix socket (``fd``): frames of a 4-byte
big-endian length and one msgpack value. The node sends a batch of requests; this
process stages it in one transaction (the SQL work), answers ``["staged", results]``,
commits (the disk wait: ``synchronous=FULL`` fsyncs), then answers ``["done", None]``;
``["error", message]`` instead of either if that step failed (the transaction is
rolled back: nothing of the batch is applied). One batch at a time, in order.

So the node's thread only packs each batch and reads two short answers: the rows,
the B-tree work and the WAL writes run here, on another core. A ``Loaded`` result
travels as msgpack extension type 1 (its fields).

It checkpoints the WAL itself, as the in-node store does: every ``CHECKPOINT_EVERY``
commits, a background pass on a connection of its own, then a short final pass
between two commits. It ends at end of input: when the node closes the socket, or
dies (even by SIGKILL), after finishing the batch in hand. A batch whose answer never
reached the node was not acknowledged to anyone: a client sends it again, and the
store's idempotence (device message ids, per-peer sequence numbers) drops the copy.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from chat.store import CHECKPOINT_EVERY, HDR, SqliteBackend, read_exact, wire_pack, wire_unpack


def serve(sock: socket.socket, backend: SqliteBackend) -> None:
    commits = 0
    background: threading.Thread | None = None
    while True:
        hdr = read_exact(sock, 4)
        if hdr is None:
            return
        body = read_exact(sock, HDR.unpack(hdr)[0])
        if body is None:
            return
        batch = list(wire_unpack(body))
        try:
            results = backend.stage(batch)
        except Exception as e:
            if not _answer(sock, ["error", f"{type(e).__name__}: {e}"]):
                return
            continue
        if not _answer(sock, ["staged", results]):
            return  # the node is gone: nothing of the batch was acknowledged
        try:
            backend.commit()
        except Exception as e:
            if not _answer(sock, ["error", f"{type(e).__name__}: {e}"]):
                return
            continue
        if not _answer(sock, ["done", None]):
            return
        commits += 1
        if background is not None and not background.is_alive():
            background.join()
            background = None
            _checkpoint(backend, False)  # the final pass, between two commits
            commits = 0
        elif background is None and commits >= CHECKPOINT_EVERY:
            background = threading.Thread(target=_checkpoint, args=(backend, True),
                                          daemon=True)
            background.start()


def _answer(sock: socket.socket, value: list[object]) -> bool:
    """Send an answer; False if the node is gone (it closed the socket, or died)."""
    try:
        sock.sendall(wire_pack(value))
    except OSError:
        return False
    return True


def _checkpoint(backend: SqliteBackend, in_background: bool) -> None:
    try:
        backend.checkpoint(in_background)
    except Exception as e:  # the next checkpoint catches up
        sys.stderr.write(f"chat.store_child: checkpoint failed: {e}\n")


def main(argv: list[str]) -> int:
    path, durability, fd = argv[0], argv[1], int(argv[2])
    # Ctrl-C in a terminal reaches the whole process group: the node stops on it and
    # closes the socket when done; this process ends then, not in the middle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    backend = SqliteBackend(path, durability)
    try:
        serve(sock, backend)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

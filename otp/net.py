"""Active sockets: a socket's incoming data delivered to its owner process as messages.

This is Erlang's ``gen_tcp`` active mode. Instead of a process blocking in ``recv`` (or
a second process reading for it), the node reads the socket when it becomes readable
and sends the owner::

    ("tcp", sock, data)          # data: bytes (one packet with packet=4)
    ("tcp_passive", sock)        # the active count ran out: nothing more is read
    ("tcp_error", sock, reason)  # "emsgsize", "econnreset", ... then:
    ("tcp_closed", sock)         # the peer closed (or an error ended the stream)

so one process can wait for its socket and its other messages in one ``receive``::

    import socket
    import otp
    from otp import net
    from otp.process import receive

    def main():
        a, b = socket.socketpair()
        net.active(a, 2, packet=4)              # up to 2 messages, 4-byte length framing
        b.sendall(b"\\0\\0\\0\\2hi" + b"\\0\\0\\0\\3you")
        got = [receive(), receive()]
        assert receive() == ("tcp_passive", a)  # count spent: re-arm to read on
        net.close(a)
        b.close()
        return [data for _tag, _sock, data in got]

    print(otp.run(main))                        # [b'hi', b'you']

Flow control is the active count (Erlang's ``{active, N}``): ``active(sock, n)`` adds
``n`` messages to it; at zero the owner gets ``("tcp_passive", sock)`` and the node stops
reading, so a peer that sends faster than the owner works fills its own send buffer,
not the owner's mailbox. ``active(sock, True)`` reads without limit; ``active(sock,
False)`` stops reading.

``packet=4`` splits the stream into packets of a 4-byte big-endian length and the
body, as Erlang's ``{packet, 4}``; each message carries one body. ``packet_size``
bounds a packet's length: a longer one is refused as soon as its header is in, with
``("tcp_error", sock, "emsgsize")`` then ``("tcp_closed", sock)`` (the packets before it
were delivered).

The owner is the process that first calls ``active`` (``controlling_process`` hands it
on). When the owner ends, the socket is closed, as Erlang closes a port whose owner
exits. Close an active socket with ``close``, not ``sock.close()``: the node's watch on
it must stop first.

Plain TCP sockets (gevent's, or the standard library's in non-blocking mode) are read
by the hub itself when they become readable: no greenlet wakes for them. Others, TLS
sockets among them (a TLS record can hold data that the file descriptor no longer
signals), are read by a small internal greenlet, with the same messages.

Messages carry the socket object itself (the owner compares it with ``is``); they are
made by the runtime, so strict mode does not check them.
"""

from __future__ import annotations

from otp.lowlevel import active_socket as active
from otp.lowlevel import close_socket as close
from otp.lowlevel import is_active_socket as is_active
from otp.lowlevel import set_socket_owner as controlling_process

__all__ = ["active", "close", "controlling_process", "is_active"]

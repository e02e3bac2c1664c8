"""The gunicorn worker of `pex serve`: gunicorn's threaded worker, made safe against idle and slow clients.

gunicorn's sync worker gives each connection a whole process until its request is read: two clients that send a
request line and then stay silent hold both workers of a default `pex serve`, and every other request waits for
gunicorn's 120 s timeout. gunicorn's ``gthread`` worker serves connections from a pool of threads, but a
connection that sent part of its headers is still read by a pool thread on a blocking socket, so as many silent
clients as there are threads starve it the same way.

This worker keeps gthread's pool for running requests and moves the reading of the request head (request line
and header fields) into the worker's event loop: a connection reaches a thread only once its whole head has
arrived. The loop reads what each connection sends without blocking, answers 431 to a head over 32 KiB, and
closes a connection whose head is not complete within the header timeout. A silent or slow client therefore
costs a file descriptor and a few bytes, never a thread.

Once its head is complete, a request holds a thread while its body is read and its answer is written. Its
whole body must arrive within the body timeout: each read waits at most that long (a kernel socket timeout), and
a body that still trickles in at the deadline has its socket's read side shut by the event loop, so the request
gets 408 (web/fast.py). A client that stops reading its answer frees the thread after the same time. A
buffering reverse proxy in front (nginx's default) takes the body wait off the server entirely; the body limit
(MAX_CONTENT_LENGTH) bounds what one request can make a worker read.

gunicorn's own answers to requests it cannot parse (414 request line too long, 431 header fields too large, 400
malformed) are written in the API's error shape, ``{"ok": false, "error", "hint", "status"}``, instead of HTML.

TLS is not terminated here (`pex serve` runs plain HTTP behind a proxy or on loopback): with gunicorn's TLS
settings the head cannot be read before the handshake, so this worker then falls back to gthread's behaviour.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import struct
import time
from functools import partial

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from pex.services.settings import load_config

# one recv in the event loop: a whole head of an ordinary request fits
READ_CHUNK = 16 * 1024
# the longest request head read in the event loop (like nginx's default 4 x 8 KiB header buffers); a longer one
# gets 431 there and then, so that a thousand slow clients cost at most 32 MiB of a worker's memory
MAX_HEAD = 32 * 1024

_BAD_REQUEST = (http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion,
                http_errors.InvalidHeader, http_errors.InvalidHeaderName, http_errors.ObsoleteFolding,
                http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension,
                http_errors.InvalidSchemeHeaders)
# gunicorn's parse failures, in the API's words: (status, reason phrase, error, hint)
_ANSWERS = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "the request line is too long",
     "send the data in the JSON body, not in the URL"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "the request's header fields are too large",
     "send fewer or shorter headers"),
    (_BAD_REQUEST, 400, "Bad Request", "the request is not valid HTTP/1.1", "check the client's request line and headers"),
)


def _answer(status: int, reason: str, message: str, hint: str) -> bytes:
    """A whole HTTP answer in the API's error shape that closes the connection."""
    body = json.dumps({"ok": False, "error": message, "hint": hint, "status": status}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _head_length(data: bytes) -> int | None:
    """The length of the request head at the start of ``data`` up to the blank line that ends it (CRLF, or a bare LF
    as lenient clients send); None while that line has not arrived."""
    ends = [i for i in (data.find(b"\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else None


class PexWorker(ThreadWorker):
    """gthread with the request head read in the event loop under a deadline (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # how long a connection may take to send its whole request head (counted from its connection, or from
        # the end of the previous request when kept alive), and how long one body read or answer write may block
        # a thread (PEX_HEADER_SECONDS, PEX_BODY_SECONDS; checked by `pex serve` before gunicorn started)
        settings = load_config()
        self.header_seconds = settings["HEADER_SECONDS"]
        self.body_seconds = settings["BODY_SECONDS"]
        self.buffer_heads = not self.cfg.is_ssl
        # connections held by a pool thread -> when their read side is shut (see murder_pending)
        self.reading: dict = {}

    # -- connections waiting for their head: in the event loop, never in a thread -----------------------------

    def accept(self, listener) -> None:
        """A new connection: its head is awaited in the event loop."""
        if not self.buffer_heads:
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # a blocking read or write in a thread gives up after body_seconds (SO_RCVTIMEO / SO_SNDTIMEO live in
        # the kernel, so they hold whatever gunicorn later does with the socket's blocking mode)
        timeout = struct.pack("ll", int(self.body_seconds), int(self.body_seconds % 1 * 1e6))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        self._await_head(TConn(self.cfg, client, address, listener.getsockname()))

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection sends its next request: its head is awaited in the loop too."""
        if not self.buffer_heads:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)

    def _await_head(self, conn) -> None:
        conn.head = b""
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.header_seconds  # murder_pending closes it then
        self.pending_conns.append(conn)  # gthread's own deque of connections waiting for data, kept in deadline order
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _read_head(self, conn, client) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self._drop_pending(conn)
            conn.close()
            return
        conn.head += data
        length = _head_length(conn.head)
        if length is not None and length <= MAX_HEAD:
            self._drop_pending(conn, close=False)
            conn.data_ready = True  # gthread then skips its wait for the first byte
            self.enqueue_req(conn)
        elif (length or len(conn.head)) > MAX_HEAD:
            # answered at once; the connection then stays in the loop until the client has sent the rest and closes,
            # or until its header deadline: closing with unread data would reset it and lose the answer
            conn.head = b""
            try:
                conn.sock.send(_answer(431, "Request Header Fields Too Large", "the request head is too large",
                                       f"send at most {MAX_HEAD // 1024} KiB of request line and headers"))
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:  # a client that does not read its answer: closed all the same
                pass
            self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._discard, conn))

    def _discard(self, conn, client) -> None:
        """Read and drop what a refused connection still sends, until it closes."""
        try:
            if conn.sock.recv(READ_CHUNK):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._drop_pending(conn)
        conn.close()

    def _drop_pending(self, conn, close: bool = True) -> None:
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)
        if close:
            self.nr_conns -= 1

    def handle(self, conn):
        """In a pool thread: give the parser the head read so far, then serve the request as gthread does."""
        head = conn.__dict__.pop("head", None)
        if head is None:
            return super().handle(conn)
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(head)
        self.reading[conn] = time.monotonic() + self.body_seconds
        try:
            return super().handle(conn)
        finally:
            self.reading.pop(conn, None)

    def murder_pending(self) -> None:
        """Close the connections whose head is overdue (gthread's own), and shut the read side of those whose
        request has held a thread for the body timeout: the socket timeout bounds each read, not a body that
        trickles in a byte at a time, whereas a shut read side ends the read at once (the request then gets
        408, web/fast.py). Its answer can still be written; a request that merely runs long loses nothing."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.reading.items()):
            if deadline <= now and self.reading.pop(conn, None) is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RD)
                except OSError:  # closed meanwhile
                    pass

    # -- gunicorn's own error answers, in the API's shape -------------------------------------------------------

    def handle_error(self, req, client, addr, exc) -> None:
        """A request gunicorn could not parse: 414, 431 or 400 as JSON; anything else as gunicorn answers it."""
        answer = next((a for a in _ANSWERS if isinstance(exc, a[0])), None)
        if answer is None:
            return super().handle_error(req, client, addr, exc)
        _, status, reason, message, hint = answer
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, _answer(status, reason, message, hint))
        except Exception:  # the client is gone: nothing to answer
            self.log.debug("Failed to send error message.")
        return None

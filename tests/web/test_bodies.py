"""Request size limits of `pex serve` under gunicorn: every refusal in the API's error shape."""

from __future__ import annotations

import json
import signal
import socket

from tests.gunicorn import call, free_port, serve, wait_ready

MIB = 1024 * 1024


def raw_request(port: int, data: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is on a new connection; the status, header fields and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), fields, body


def error_shape(status: int, fields: dict[str, str], body: bytes) -> dict:
    assert fields.get("content-type", "").startswith("application/json"), (status, fields, body[:200])
    answer = json.loads(body)
    assert answer["ok"] is False and answer["status"] == status and answer["error"] and answer["hint"], answer
    return answer


def post(path: str, body: bytes, token: str, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode() + body


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_body_and_head_limits_answer_in_the_error_shape(tmp_path, served):
    port = free_port()
    decide = f"/api/v1/policies/{served.tree}/decide"
    with serve(served.home, port, tmp_path) as server:
        wait_ready(port, server)

        # a body over the 4 MiB default, announced with Content-Length: 413, the body never read
        big = b'{"unit": "' + b"x" * (4 * MIB) + b'"}'
        status, fields, body = raw_request(port, post(decide, big, served.decide, f"Content-Length: {len(big)}\r\n"))
        assert status == 413
        error_shape(413, fields, body)

        # the same body sent chunked (no Content-Length): 413 too, not 400
        status, fields, body = raw_request(port, post(decide, chunked(big), served.decide, "Transfer-Encoding: chunked\r\n"))
        assert status == 413
        error_shape(413, fields, body)

        # a small chunked body is read and decided
        small = json.dumps({"unit": "chunky", "features": {}}).encode()
        status, fields, body = raw_request(port, post(decide, chunked(small, 7), served.decide,
                                                      "Transfer-Encoding: chunked\r\n"))
        assert status == 200 and json.loads(body)["arm"], body

        # a decide-batch of 10,000 units with a dozen features fits in the default limit
        features = {f"f{k}": 12345.678 + k for k in range(8)} | {f"c{k}": "category-label" for k in range(4)}
        units = [{"unit": f"user-{i:08d}", "features": features} for i in range(10_000)]
        assert len(json.dumps({"units": units})) < 4 * MIB
        status, answer = call(port, "POST", f"/api/v1/policies/{served.tree}/decide-batch", {"units": units},
                              served.decide, timeout=60)
        assert status == 200 and len(answer["decisions"]) == 10_000

        # gunicorn's own refusals: request line too long (414), a header field too large (431), not HTTP (400)
        status, fields, body = raw_request(port, f"GET /healthz?{'q' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 414
        error_shape(414, fields, body)
        status, fields, body = raw_request(port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'v' * 9000}\r\n\r\n".encode())
        assert status == 431
        error_shape(431, fields, body)
        # a head over 32 KiB in all (each field within gunicorn's limits) is refused before it reaches a thread
        many = "".join(f"X-Field-{i}: {'v' * 1000}\r\n" for i in range(40))
        status, fields, body = raw_request(port, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        assert status == 431
        error_shape(431, fields, body)
        status, fields, body = raw_request(port, b"NOT AN HTTP REQUEST\r\n\r\n")
        assert status == 400
        error_shape(400, fields, body)

        # the server is unharmed and every decision it answered is logged at shutdown
        assert call(port, "GET", "/healthz")[0] == 200
        assert server.signal_and_wait(signal.SIGTERM, timeout=60) == 0
    from pex.store.workspace import Workspace

    with Workspace(served.home, create=False) as ws:
        assert ws.count_decisions(served.tree) == 10_001

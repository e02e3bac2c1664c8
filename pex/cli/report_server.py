"""Serve a run's folder (report.html, summary.json, policies/) over HTTP until a signal stops it.

The standard library's threading HTTP server is enough for one person reading a static report; policy serving
is the web app's (gunicorn), not this.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pex.errors import PexError


def serve_folder(folder: Path, host: str, port: int, say: Callable[[str], None]) -> None:
    """Serve ``folder`` on ``host:port`` (0: any free port) until SIGINT or SIGTERM; ``say`` announces the address."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder.resolve()))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise PexError(f"cannot serve on {host}:{port}: {exc.strerror}", "pick another port with --port, or --no-serve") from None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # a process started in the background inherits SIGINT ignored; Ctrl-C and SIGTERM must stop the server anyway
    # (installed before the address is announced, so a signal sent on seeing it is never lost)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    say(f"serving the report at http://{host}:{server.server_address[1]}/report.html (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

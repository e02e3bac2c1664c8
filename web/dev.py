"""``pex serve --dev``: Flask's own single-process server, stopped cleanly by SIGTERM as by Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the app on ``--host``/``--port`` until interrupted; buffered decisions are written on the way out."""
    parser = argparse.ArgumentParser(prog="python -m web.dev")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from web import create_app

    app = create_app()
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["pex"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

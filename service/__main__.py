"""`python -m service`: serve the configured checkpoints under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import logging
import sys

from service.engine_launch import start_engine_server
from service.settings import Settings

if __name__ == "__main__":
    # first, so that the engines' fork server imports torch and loads the weights while this
    # process imports the rest (main() reports a bad setting)
    try:
        _settings = Settings()
    except ValueError:
        pass
    else:
        if _settings.engines != 0:  # 0: the engine is a thread of this process
            start_engine_server(_settings.checkpoint_paths())

import uvicorn

from service.app import create_app
from service.server import Server, protocol_for

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    settings = Settings()
    # uvicorn's "trace" logs every request's headers, an API key included: not offered
    if settings.log_level.upper() not in LOG_LEVELS:
        levels = ", ".join(level.lower() for level in LOG_LEVELS)
        message = f"LSTM_SERVE_LOG_LEVEL={settings.log_level!r} is not one of {levels}"
        print(message, file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    failure: list[str] = []
    server: Server | None = None

    def on_fatal(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        # httptools, with a head timeout, a bound on a head and a connection limit
        http=protocol_for(settings.head_timeout_s, settings.max_connections),
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    server = Server(config)  # exits 0 after a graceful shutdown on SIGTERM
    server.run()
    if failure:
        print(f"lstm-serve did not start: {failure[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m service`: run the HTTP service under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from service.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()

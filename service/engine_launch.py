"""How engine processes are started: forked from a server process that imported the engine's
code once (multiprocessing's forkserver), not spawned as fresh interpreters that each import
torch again.

A spawned engine spent about 2.5 s of CPU importing torch and the service's modules before it
could read a checkpoint, once per engine and again for every restart; on a 2-core machine two
of them and the HTTP process's own imports queued for the cores, and the service took 9.4 s from
start to ready. The server imports them once, and each engine forked from it starts at once,
sharing those pages (copy-on-write) with the server and the other engines.

The server also loads the checkpoints it is started with (service.engine.preload): the engines
then share one copy of the weights, and a restarted engine has them at once. The server holds no
threads and no CUDA context.

Nothing here imports torch, so `python -m service` starts the server first, and it imports torch
and loads the weights while the HTTP process (which never imports torch) imports its own modules
and reads the checkpoints' configs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Mapping
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext, ForkServerContext
from pathlib import Path
from typing import Any

# what the server imports before it forks anything: the engine's code and, through it, torch
PRELOAD = ["service.engine.worker"]
# and then loads the checkpoints it was started with
PRELOAD_CHECKPOINTS = "service.engine.preload_named"
# the variable that names them to it, {name: path} as JSON (read by service.engine.preload)
CHECKPOINTS_VARIABLE = "_LSTM_SERVE_FORK_SERVER_CHECKPOINTS"


def engine_context() -> BaseContext:
    """The multiprocessing context engines start in: the fork server where the platform has one
    (Linux, macOS), else fresh interpreters (spawn)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(PRELOAD)  # only read when the server starts
    return context


def start_engine_server(checkpoints: Mapping[str, Path]) -> None:
    """Start the fork server, unless it runs: it imports the engine's code, then loads these
    checkpoints, in the background. One that runs already keeps what it loaded."""
    context = engine_context()
    if not isinstance(context, ForkServerContext):
        return
    context.set_forkserver_preload([*PRELOAD, PRELOAD_CHECKPOINTS])
    # the server starts with this process's environment: the names go in it, for that moment
    os.environ[CHECKPOINTS_VARIABLE] = json.dumps({n: str(p) for n, p in checkpoints.items()})
    try:
        forkserver.ensure_running()
    finally:
        del os.environ[CHECKPOINTS_VARIABLE]
        context.set_forkserver_preload(PRELOAD)


# The targets of processes started in the engine context. The HTTP process names them without
# importing torch; the engine's modules they import are already imported in the fork server.


def run_engine(sock: Any, spec: Any) -> None:
    """An engine process's entry point."""
    from service.engine.worker import engine_main

    engine_main(sock, spec)


def _report_device(connection: Connection, device: str, dtype: str) -> None:
    from service.engine.worker import probe_device

    connection.send(probe_device(device, dtype))
    connection.close()


def probe_device(device: str, dtype: str) -> Any:
    """What `device` resolves to and whether `dtype` runs there (a protocol.DeviceReport), asked
    of a short-lived process in the engines' context, where torch is imported."""
    context: Any = engine_context()
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=_report_device, args=(theirs, device, dtype), daemon=True)
    process.start()
    theirs.close()
    try:
        return ours.recv()
    except EOFError:
        raise RuntimeError(f"the device probe exited with code {process.exitcode}") from None
    finally:
        ours.close()
        process.join()

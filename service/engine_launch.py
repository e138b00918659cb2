"""How engine processes are started: forked from a server process that imported the engine's
code once (multiprocessing's forkserver), not spawned as fresh interpreters that each import
torch again.

A spawned engine spent about 2.5 s of CPU importing torch and the service's modules before it
could read a checkpoint, once per engine and again for every restart; on a 2-core machine two
of them and the HTTP process's own imports queued for the cores, and the service took 9.4 s from
start to ready. The server imports them once, and each engine forked from it starts at once,
sharing those pages (copy-on-write) with the server and the other engines. The server holds no
threads, no CUDA context and no checkpoint: it has only imported code.

Nothing here imports torch (and this module sits outside `service.engine`, whose package imports
it), so `python -m service` can start the server first, and it imports while the HTTP process
imports its own modules and reads the checkpoints.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import BaseContext, ForkServerContext

# what the server imports before it forks anything: the engine's code and, through it, torch
PRELOAD = ["service.engine.worker"]


def engine_context() -> BaseContext:
    """The multiprocessing context engines start in: the fork server where the platform has one
    (Linux, macOS), else fresh interpreters (spawn)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(PRELOAD)  # only read when the server starts
    return context


def start_engine_server() -> None:
    """Start the fork server now (it imports in the background) instead of at the first engine."""
    if isinstance(engine_context(), ForkServerContext):
        forkserver.ensure_running()

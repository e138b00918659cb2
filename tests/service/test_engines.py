"""Engine processes: two engines share the work, the weights are loaded once in the fork server
(not a copy each) and the HTTP process never imports torch, next-word typing stays on the engine
that caches its prefix, and an engine killed with SIGKILL is noticed at once: what it held is
computed by the other, it is restarted, and readiness says `degraded` meanwhile."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import Checkpoints, SettingsFactory
from tests.service.support import engine_blocked, serve, service_process, state_of, wait_until

# the fork server imports torch once: seconds on a quiet machine, much longer on a busy one
START_S = 120.0


@pytest.fixture(scope="module")
def two_engines(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with serve(make_settings(engines=2), ready=False) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, START_S, "ready")
        yield client


def _answered(client: TestClient) -> list[int]:
    return list(state_of(client).engine.status()["answered"])


def test_two_engine_processes_start(two_engines: TestClient) -> None:
    status = state_of(two_engines).engine.status()
    pids = status["pids"]
    assert status["engines"] == status["alive"] == 2
    assert len(set(pids)) == 2 and os.getpid() not in pids
    ready = two_engines.get("/health/ready").json()
    assert ready["status"] == "ok"
    assert ready["engines"]["alive"] == 2


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health/ready", timeout=20).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server here"
)
def test_the_service_loads_the_weights_once_and_its_http_process_never_imports_torch(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """`python -m service`: the fork server loads every checkpoint before it forks an engine, so
    each engine finds the weights in memory, shared, and the HTTP process only reads configs."""
    log = tmp_path / "service.log"
    env = {"LSTM_SERVE_ENGINES": "2", "LSTM_SERVE_LOG_LEVEL": "info"}
    with service_process(checkpoints.root, log, **env) as (process, port):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(base), START_S, "ready")
        answer = httpx.post(f"{base}/sentiment", json={"text": "a great film"}, timeout=20)
        assert answer.status_code == 200
        maps = Path(f"/proc/{process.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps
    shared = [line for line in log.read_text().splitlines() if "from the fork server" in line]
    assert len(shared) == 2, log.read_text()  # one line per engine, each naming every model
    assert all(all(f"{name}" in line for name in checkpoints.cards) for line in shared), shared


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("PPid:")).split()[1])


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server here"
)
def test_engines_are_forked_from_one_fork_server(two_engines: TestClient) -> None:
    """Not spawned: each engine is a child of the fork server (itself a child of this process),
    so it imported nothing of its own and shares the server's imported pages."""
    pids = state_of(two_engines).engine.status()["pids"]
    parents = {_parent(pid) for pid in pids}
    assert len(parents) == 1 and os.getpid() not in parents
    (server,) = parents
    assert _parent(server) == os.getpid()
    with open(f"/proc/{server}/cmdline") as cmdline:
        assert "multiprocessing.forkserver" in cmdline.read()


def test_engines_compute_at_a_lower_cpu_priority_than_the_http_process(
    two_engines: TestClient,
) -> None:
    """The HTTP process's work (accept, answer, send a token) must not wait for a time slice
    behind engines computing on every core: each engine adds LSTM_SERVE_ENGINE_NICE (10 by
    default) to the nice value it was forked with."""
    pids = state_of(two_engines).engine.status()["pids"]
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(19, own + 10)] * 2


def test_concurrent_requests_are_spread_over_both_engines(two_engines: TestClient) -> None:
    state = state_of(two_engines)
    before = _answered(two_engines)
    texts = [f"a great film number {i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool, engine_blocked(state.engine):
        futures = [pool.submit(two_engines.post, "/sentiment", json={"text": t}) for t in texts]
        wait_until(lambda: state.engine.pending("sentiment") == len(texts))
    assert all(future.result().status_code == 200 for future in futures)
    served = [after - b for after, b in zip(_answered(two_engines), before, strict=True)]
    assert served == [8, 8]  # least outstanding work first: held, they alternate


def test_typing_stays_on_the_engine_that_caches_its_prefix(two_engines: TestClient) -> None:
    state = state_of(two_engines)
    words = ["the", "history", "of", "the", "city", "of", "the", "war", "of", "the", "city"]

    def type_up_to(count: int) -> None:
        text = " ".join(words[:count]) + " "
        assert two_engines.post("/next-word", json={"text": text}).status_code == 200

    for count in range(1, 4):  # three words or fewer: any engine
        type_up_to(count)
    before = _answered(two_engines)
    hits = state.engine.cache_figures("next-word")[0]
    for count in range(4, len(words) + 1):
        type_up_to(count)
    served = [after - b for after, b in zip(_answered(two_engines), before, strict=True)]
    typed = len(words) - 3
    assert sorted(served) == [0, typed]  # one engine answered every later keystroke
    # each keystroke read only its new word, from the state cached by the one before
    assert state.engine.cache_figures("next-word")[0] - hits >= typed - 1


def test_a_killed_engine_is_replaced_and_its_requests_computed_elsewhere(
    two_engines: TestClient,
) -> None:
    state = state_of(two_engines)
    engine = state.engine
    with ThreadPoolExecutor(2) as pool:
        with engine_blocked(engine):
            review = pool.submit(two_engines.post, "/sentiment", json={"text": "a dull plot"})
            stream = pool.submit(
                two_engines.post,
                "/generate",
                json={"prompt": "to be", "max_new_tokens": 8, "seed": 3},
            )
            wait_until(lambda: engine.pending("sentiment") == 1 and engine.generating() == 1)
            (held,) = engine._pending.values()  # the engine holding the review
            victim = held.engine
            os.kill(engine.status()["pids"][victim], signal.SIGKILL)
            wait_until(lambda: engine.status()["alive"] == 1, 10, "the death to be noticed")
            ready = two_engines.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            engine.control("release")  # the survivor computes what the dead one held
        assert review.result().status_code == 200
        answer = stream.result()
        assert answer.status_code == 200 and answer.json()["tokens"] == 8
    wait_until(lambda: engine.status()["alive"] == 2, START_S, "the engine to restart")
    assert engine.status()["restarts"] >= 1
    assert two_engines.get("/health/ready").json()["status"] == "ok"
    assert two_engines.post("/sentiment", json={"text": "a great film"}).status_code == 200

"""lstm-serve behind HAProxy (deploy/compose/replicas.yml): what the balancer costs, and 1 replica
against 2, measured in one run on the machine that runs them.

    eval "$(../shared/tools/docker-env.sh up)"        # where the machine needs its Docker engine
    .venv/bin/python bench/replicas.py --data ../shared/data      # about 6 minutes after the build

For each replica count it brings the profile up (its own project name and port), waits until the
balancer sees every replica UP, then drives `POST /sentiment` with the first 2,000 IMDB test
reviews by `wrk -t1`, closed loop: at 1 connection through the balancer and straight to one
replica's own address on the compose network (the balancer's cost per request is the difference
of the two p50s), and at 64 connections through the balancer. Prints one Markdown report and
takes everything down after, even on failure. Every replica sees all of the machine's cores: on
one machine, replicas add processes, not cores, so the 2-replica figure shows what a second
replica costs or gains here, not what it gains on a second machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from side_by_side import LUA, Measure, reviews, wrk

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose" / "replicas.yml"
PROJECT = "lstm-serve-replicas-bench"


def compose(*args: str, env: dict[str, str]) -> str:
    command = ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE), *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def replica_address(env: dict[str, str]) -> str:
    """One replica's address on the compose network (the host reaches a bridge network)."""
    container = compose("ps", "-q", "api", env=env).split()[0]
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    inspect = ["docker", "inspect", "-f", template, container]
    address = subprocess.run(inspect, check=True, capture_output=True, text=True).stdout.split()[0]
    return f"http://{address}:8000"


def wait_ready(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=3) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} was not ready within {seconds:g} s")


def measure(
    count: int, port: int, script: Path, duration: float, env: dict[str, str]
) -> dict[str, Measure]:
    env = {**env, "LSTM_SERVE_REPLICAS": str(count), "LSTM_SERVE_PORT": str(port)}
    env["LSTM_SERVE_LOG_LEVEL"] = "warning"
    try:
        compose("up", "-d", "--build", "--wait", "--wait-timeout", "300", env=env)
        balancer = f"http://127.0.0.1:{port}"
        wait_ready(balancer)
        time.sleep(5)  # health checks of the balancer mark every replica UP
        direct = replica_address(env)
        figures = {}
        for name, url, connections in (
            ("balancer, 1 connection", balancer, 1),
            ("direct, 1 connection", direct, 1),
            ("balancer, 64 connections", balancer, 64),
            ("direct, 64 connections", direct, 64),
        ):
            wrk(f"{url}/sentiment", script, connections, 5)  # warm-up, dropped
            figures[name] = wrk(f"{url}/sentiment", script, connections, duration)
            print(f"{count} replica(s), {name}: {figures[name]}", file=sys.stderr)
        return figures
    finally:
        compose("down", "--volumes", "--timeout", "40", env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with imdb/test.jsonl.gz")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--port", type=int, default=18480, help="the balancer's port")
    args = parser.parse_args()
    env = dict(os.environ)
    results: dict[int, dict[str, Measure]] = {}
    with tempfile.TemporaryDirectory() as work:
        bodies = Path(work) / "bodies.jsonl"
        bodies.write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in reviews(Path(args.data), 2000))
        )
        script = Path(work) / "post.lua"
        script.write_text(LUA % bodies)
        for count in (1, 2):
            results[count] = measure(count, args.port, script, args.duration, env)
    print("| replicas | measure | req/s | p50 ms | p99 ms | refused |")
    print("|---|---|---|---|---|---|")
    for count, figures in results.items():
        for name, m in figures.items():
            row = [name, f"{m.served_rps:.0f}", f"{m.p50_ms:.1f}", f"{m.p99_ms:.1f}"]
            row.append(str(m.refused))
            print(f"| {count} | " + " | ".join(row) + " |")
    one, two = results[1], results[2]
    cost = one["balancer, 1 connection"].p50_ms - one["direct, 1 connection"].p50_ms
    gain = two["balancer, 64 connections"].served_rps / one["balancer, 64 connections"].served_rps
    print(f"\nThe balancer's cost at 1 connection (p50 through it - direct): {cost:.2f} ms")
    print(f"2 replicas / 1 replica at 64 connections through the balancer: {gain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

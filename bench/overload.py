"""Overload: /sentiment offered several times its capacity, measured side by side with a run at
capacity, against the real service with the shipped checkpoints.

    .venv/bin/python bench/overload.py --data ../shared/data --seconds 10

1. Capacity: 64 closed-loop connections (the throughput and p99 the service sustains).
2. Overload: an open-loop schedule at `--factor` x that throughput. Accepted requests' p99 is
   compared with the p99 at capacity; rejections must be quick and carry Retry-After; a probe
   calls /health/live every 50 ms throughout.
3. Recovery: once the schedule ends, one /sentiment request every 50 ms until the latency is back
   within 2x its idle value; the time that takes is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop
from loadgen import closed_loop, encode, open_loop, percentile, probe
from serving import reviews, served


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


async def run(base: str, texts: list[str], seconds: float, factor: float) -> dict[str, Any]:
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    bodies = [encode("POST", "/sentiment", json.dumps({"text": t}).encode()) for t in texts]

    def make(i: int) -> tuple[str, bytes]:
        return "sentiment", bodies[i % len(bodies)]

    live = ("live", encode("GET", "/health/live"))
    idle = [s.latency for s in await closed_loop(host, port, make, 1, 2.0)]
    at_capacity = await closed_loop(host, port, make, 64, seconds)
    ok = [s for s in at_capacity if s.status == 200]
    capacity = len(ok) / seconds
    p99_capacity = percentile([s.latency for s in ok], 99)

    stop = asyncio.Event()
    probing = asyncio.create_task(probe(host, port, live, 0.05, stop))
    offered = await open_loop(host, port, make, capacity * factor, seconds, warm_connections=256)
    stop.set()
    live_samples = await probing

    # recovery: how long until a lone request is as quick as when the service was idle
    idle_p50 = statistics.median(idle)
    stop = asyncio.Event()
    recovering = asyncio.create_task(probe(host, port, make(0), 0.05, stop))
    await asyncio.sleep(5.0)
    stop.set()
    recovery = await recovering
    recovered_at = next(
        (
            s.due - recovery[0].due
            for i, s in enumerate(recovery)
            if all(r.latency <= 2 * idle_p50 for r in recovery[i : i + 5])
        ),
        float("nan"),
    )

    accepted = [s for s in offered if s.status == 200]
    rejected = [s for s in offered if s.status in (429, 503)]
    other = [s for s in offered if s.status not in (200, 429, 503)]
    return {
        "idle_p50": idle_p50,
        "capacity": capacity,
        "p99_capacity": p99_capacity,
        "p50_capacity": percentile([s.latency for s in ok], 50),
        "offered_rate": capacity * factor,
        "offered": len(offered),
        "accepted": len(accepted),
        "accepted_rate": len(accepted) / seconds,
        "accepted_p50": percentile([s.latency for s in accepted], 50),
        "accepted_p99": percentile([s.latency for s in accepted], 99),
        "rejected": len(rejected),
        "rejected_with_retry_after": sum(1 for s in rejected if s.retry_after),
        "rejected_p50": percentile([s.latency for s in rejected], 50),
        "rejected_p99": percentile([s.latency for s in rejected], 99),
        "other": sorted({s.status for s in other}),
        "other_count": len(other),
        "live_p50": percentile([s.latency for s in live_samples], 50),
        "live_max": max(s.latency for s in live_samples),
        "live_count": len(live_samples),
        "recovered_after": recovered_at,
    }


def report(r: dict[str, Any], factor: float) -> str:
    retry = r["rejected_with_retry_after"]
    rows = [
        (
            "capacity: /sentiment, 64 closed-loop connections",
            f"{r['capacity']:,.0f} req/s; p50 {ms(r['p50_capacity'])}, p99 {ms(r['p99_capacity'])}",
            "-",
        ),
        (
            f"offered {factor:g}x capacity, open loop",
            f"{r['offered_rate']:,.0f} req/s for {r['offered']:,} requests: "
            f"{r['accepted']:,} answered 200 ({r['accepted_rate']:,.0f}/s), "
            f"{r['rejected']:,} refused, {r['other_count']} other {r['other']}",
            "every request answered",
        ),
        (
            "accepted p99 under overload vs p99 at capacity",
            f"{ms(r['accepted_p99'])} vs {ms(r['p99_capacity'])} "
            f"(ratio {r['accepted_p99'] / r['p99_capacity']:.2f})",
            "<= 2",
        ),
        (
            "refusals: latency, Retry-After",
            f"p50 {ms(r['rejected_p50'])}, p99 {ms(r['rejected_p99'])}; "
            f"{retry:,} of {r['rejected']:,} with Retry-After",
            "<= 10 ms, all",
        ),
        (
            "/health/live during overload (every 50 ms)",
            f"{r['live_count']} probes: p50 {ms(r['live_p50'])}, max {ms(r['live_max'])}",
            "<= 100 ms",
        ),
        (
            "recovery: a lone request back within 2x its idle latency",
            f"{r['recovered_after']:.2f} s after the load stopped (idle p50 {ms(r['idle_p50'])})",
            "within seconds",
        ),
    ]
    lines = ["| measure | figure | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with imdb/")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    texts = reviews(args.data, 2000)
    with served() as (base, _, _):
        result = uvloop.run(run(base, texts, args.seconds, args.factor))
    text = report(result, args.factor)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

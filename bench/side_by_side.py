"""lstm-serve beside TorchServe 0.12 and a naive FastAPI server, on the same sentiment inputs and
the same closed-loop load, in one run.

    .venv/bin/python bench/side_by_side.py --data ../shared/data            # 4-6 minutes
    .venv/bin/python bench/side_by_side.py --data ../shared/data --quick    # a smoke check

Every server serves the shipped `sentiment` checkpoint through the project's own tokeniser and
`classify()`, with one torch thread per process. Each is started in turn on loopback, then driven
by `wrk -t1` (Debian package; one client thread in C, the least client CPU on the machine it
shares with the server) with the first 2,000 IMDB test reviews in turn, at each connection count:
a warm-up run whose figures are dropped, then the measured run. Prints one Markdown report (also
written with --out): req/s, p50/p99 latency and refusals per server and connection count, and the
ratios lstm-serve / TorchServe and lstm-serve / naive. TorchServe is installed in its own virtual
environment (.bench/torchserve-venv, by bench/setup_torchserve.sh) on first use; it needs Java 17.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from side_by_side_servers import SERVERS, Options, StartError

ROOT = Path(__file__).resolve().parent.parent
LUA = """
local bodies, i = {}, 0
for line in io.lines("%s") do bodies[#bodies + 1] = line end
wrk.method, wrk.headers["Content-Type"] = "POST", "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
NAMES = {"lstm-serve": "lstm-serve", "torchserve": "TorchServe 0.12", "naive": "naive FastAPI"}
CHECKED = 20  # reviews whose answers must agree across servers
PORT_OFFSETS = {"lstm-serve": 0, "naive": 10, "torchserve": 20}  # TorchServe takes five ports


@dataclasses.dataclass(frozen=True)
class Measure:
    """One wrk run. Its latency percentiles include refused answers (wrk times every answer)."""

    rps: float  # answers per second, refusals included (wrk's Requests/sec)
    p50_ms: float
    p99_ms: float
    refused: int  # answers other than 2xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts
    requests: int  # answers
    client_cpu: float = 0.0  # wrk's own CPU time over the run's wall time (1.0: one whole core)

    @property
    def served_rps(self) -> float:
        """Answers other than refusals per second: a quick 503 must not count as throughput."""
        return self.rps * (self.requests - self.refused) / self.requests if self.requests else 0.0


def reviews(data: Path, count: int) -> list[str]:
    """The first `count` IMDB test reviews (imdb/test.jsonl.gz, one {"text", ...} per line)."""
    with gzip.open(data / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(count), handle, strict=False)]


def milliseconds(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(out: str) -> Measure:
    """Figures from `wrk --latency` output."""
    latency = {
        pct: milliseconds(*re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s|m)\b", out).groups())  # type: ignore[union-attr]
        for pct in ("50", "99")
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Measure(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        refused=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    )


def wrk(url: str, script: Path, connections: int, seconds: float) -> Measure:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip
    # wrk is the only child reaped during the run: the children's CPU time grows by its own
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return dataclasses.replace(parse_wrk(out), client_cpu=cpu / wall)


def label_of(url: str, text: str, patience_s: float = 0.0) -> str:
    """The label a server gives `text`; refusals (429/503) are retried for `patience_s`."""
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return str(json.loads(response.read())["label"])
        except urllib.error.HTTPError as error:
            if error.code not in (429, 503) or time.monotonic() > deadline:
                detail = error.read()[:300].decode(errors="replace")
                raise StartError(f"{url} answered {error.code}: {detail}") from None
            time.sleep(0.1)


def measure_server(
    name: str, options: Options, script: Path, args: argparse.Namespace
) -> tuple[list[str], dict[int, Measure]]:
    """Start `name`, ask it for the first labels, run warm-up + measured load at each connection
    count, stop it."""
    results = {}
    started = time.perf_counter()
    with SERVERS[name](options) as target:
        print(f"{NAMES[name]}: ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        # before any load: every server must give the same labels (the same model, no error page)
        labels = [label_of(target.url, text) for text in args.texts[:CHECKED]]
        for connections in args.connections:
            if args.warmup > 0:
                wrk(target.url, script, connections, args.warmup)
                # wrk leaves requests in flight when it stops; a server that finishes them (a
                # queue does) would charge them to the measured run. One more request waits
                # behind them in a first-come first-served server.
                label_of(target.url, args.texts[0], patience_s=30)
            results[connections] = wrk(target.url, script, connections, args.duration)
            figures = results[connections]
            print(
                f"  c={connections}: {figures.served_rps:,.0f} req/s, p50 {figures.p50_ms:.1f} ms, "
                f"p99 {figures.p99_ms:.1f} ms, refused {figures.refused}",
                file=sys.stderr,
            )
    return labels, results


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def report(
    results: dict[str, dict[int, Measure]],
    labels: dict[str, list[str]],
    args: argparse.Namespace,
    load_before: float = 0.0,
) -> str:
    """The Markdown report; `load_before` is the 1-minute load average before any server ran."""
    lines = [
        "| server | connections | answers | req/s (2xx) | p50 ms | p99 ms | refused | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_connections in results.items():
        for connections, m in by_connections.items():
            p50, p99 = (f"{m.p50_ms:.1f}", f"{m.p99_ms:.1f}") if m.requests else ("-", "-")
            lines.append(
                f"| {NAMES[name]} | {connections} | {m.requests:,} | {m.served_rps:,.0f} | {p50} | "
                f"{p99} | {m.refused} | {m.socket_errors} |"
            )
    ours = results.get("lstm-serve", {})
    for other in ("torchserve", "naive"):
        if not ours or other not in results:
            continue
        lines += [
            "",
            f"| connections | lstm-serve / {NAMES[other]}: req/s | p50 | p99 |",
            "|---|---|---|---|",
        ]
        for connections, m in ours.items():
            theirs = results[other][connections]
            if not (m.requests and theirs.requests):
                lines.append(f"| {connections} | - | - | - |")
                continue
            lines.append(
                f"| {connections} | {ratio(m.served_rps, theirs.served_rps)} | "
                f"{ratio(m.p50_ms, theirs.p50_ms)} | {ratio(m.p99_ms, theirs.p99_ms)} |"
            )
    if len(labels) > 1:
        same = len({tuple(answer) for answer in labels.values()}) == 1
        agreement = "the same" if same else "DIFFERENT (not the same model?)"
        lines += ["", f"Labels of the first {CHECKED} reviews, asked before the load: {agreement}."]
    cores = os.cpu_count() or 1
    client = [m.client_cpu for by_connections in results.values() for m in by_connections.values()]
    if client:
        lines += [
            "",
            f"wrk's own CPU: {min(client):.1%} to {max(client):.1%} of one core per measured run.",
        ]
    load = f"1-minute load average {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
    if load_before > cores / 2:
        lines[:0] = [f"**The machine was busy before the run ({load}): not representative.**", ""]
    lines += [
        "",
        f"{len(args.texts):,} IMDB test reviews, `wrk -t1`, closed loop, {args.duration:g} s after "
        f"{args.warmup:g} s warm-up per connection count; {cores} cores; {load}. "
        "req/s counts answers that were not refused; p50 and p99 are of every answer, "
        "refusals included (wrk times them all).",
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with imdb/test.jsonl.gz")
    parser.add_argument("--reviews", type=int, default=2000, help="how many test reviews to send")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each")
    parser.add_argument("--connections", default="1,8,64", help="comma-separated counts")
    parser.add_argument("--servers", default="lstm-serve,torchserve,naive", help="which, in order")
    parser.add_argument("--workers", type=int, default=2, help="TorchServe and naive processes")
    parser.add_argument("--port", type=int, default=18400, help="first port (uses 25 from it)")
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout to serve from")
    parser.add_argument("--quick", action="store_true", help="smoke check: 5 s after 2 s warm-up")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 5.0, 2.0
    args.connections = [int(c) for c in args.connections.split(",")]
    args.servers = [s.strip() for s in args.servers.split(",")]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    if shutil.which("wrk") is None:
        parser.error("needs wrk on PATH (Debian: apt-get install -y wrk)")
    args.texts = reviews(args.data, args.reviews)
    args.project = args.project.resolve()
    return args


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[int, Measure]] = {}
    labels: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as temp:
        bodies, script = Path(temp) / "bodies.jsonl", Path(temp) / "bodies.lua"
        bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in args.texts))
        script.write_text(LUA % bodies)
        logs = Path(tempfile.mkdtemp(prefix="side-by-side-logs-"))
        for name in args.servers:
            options = Options(args.project, args.port + PORT_OFFSETS[name], args.workers, logs)
            try:
                labels[name], results[name] = measure_server(name, options, script, args)
            except StartError as error:
                print(f"{error}\n(skipped; server logs in {logs})", file=sys.stderr)
            except subprocess.CalledProcessError as error:
                print(f"{name}: wrk failed: {error.stdout}{error.stderr}(skipped)", file=sys.stderr)
    text = report(results, labels, args, load_before)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if len(results) == len(args.servers) else 1


if __name__ == "__main__":
    sys.exit(main())

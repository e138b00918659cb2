"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lstm_serve_requests_total",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lstm_serve_request_seconds",
            "Whole-request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "lstm_serve_queue_seconds",
            "Time a request waited for its batch.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "lstm_serve_compute_seconds",
            "Forward-pass time of a batch.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lstm_serve_batch_size",
            "Requests per forward pass.",
            ["operation"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.tokens_generated = Counter(
            "lstm_serve_generated_tokens_total", "Tokens generated.", ["model"], registry=r
        )
        self.models_loaded = Gauge(
            "lstm_serve_models_loaded", "Models loaded and ready.", registry=r
        )
        self.cache_hits = Gauge(
            "lstm_serve_prefix_cache_hits", "Prefix-state cache hits.", ["model"], registry=r
        )
        self.cache_misses = Gauge(
            "lstm_serve_prefix_cache_misses", "Prefix-state cache misses.", ["model"], registry=r
        )
        self.cache_bytes = Gauge(
            "lstm_serve_prefix_cache_bytes", "Prefix-state cache size.", ["model"], registry=r
        )
        self.rejected = Counter(
            "lstm_serve_rejected_total",
            "Requests shed because a queue was full.",
            ["operation"],
            registry=r,
        )

    def batch(self, key: str, size: int, queue_s: float, compute_s: float) -> None:
        """Engine observer hook (called on the inference thread; prometheus is thread-safe)."""
        self.batch_size.labels(key).observe(size)
        self.queue.labels(key).observe(queue_s)
        self.compute.labels(key).observe(compute_s)

"""The replicas profile without Docker: the compose file's promises and the balancer's settings
(scripts/test-replicas.sh runs the real thing where a Docker engine is available)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extras")

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"
HAPROXY_CFG = COMPOSE / "balancer" / "haproxy.cfg"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE / "replicas.yml").read_text())
    found: dict[str, Any] = loaded["services"]
    return found


def directives(section: str) -> list[str]:
    """The lines of one haproxy.cfg section ("backend sessions"), comments left out."""
    lines, inside = [], False
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line and not line.startswith(" "):
            inside = line == section
        elif inside and line:
            lines.append(line.strip())
    return lines


def test_replicas_publish_nothing(services: dict[str, Any]) -> None:
    api = services["api"]
    assert "ports" not in api
    assert api["deploy"]["replicas"] == "${LSTM_SERVE_REPLICAS:-2}"
    assert api["read_only"] is True
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])


def test_the_balancer_publishes_on_loopback_and_builds_from_the_same_base(
    services: dict[str, Any],
) -> None:
    balancer = services["balancer"]
    assert balancer["ports"] == ["127.0.0.1:${LSTM_SERVE_PORT:-8080}:8080"]
    assert balancer["depends_on"]["api"]["condition"] == "service_healthy"
    base = balancer["build"]["args"]["PYTHON_IMAGE"]
    assert base == services["api"]["build"]["args"]["PYTHON_IMAGE"]
    dockerfile = (COMPOSE / "balancer" / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3.11-slim-bookworm$", dockerfile, re.M)
    assert re.search(r"^USER haproxy$", dockerfile, re.M)


def test_routing_retries_and_streaming() -> None:
    defaults = directives("defaults")
    assert "retry-on conn-failure empty-response junk-response 503" in defaults
    assert "option redispatch 1" in defaults
    assert "option http-no-delay" in defaults  # SSE token events one by one
    frontend = directives("frontend api")
    assert "use_backend sessions if { req.hdr(x-session-key) -m found }" in frontend
    assert "default_backend least_connections" in frontend
    assert "balance leastconn" in directives("backend least_connections")
    assert {"balance hdr(x-session-key)", "hash-type consistent"} <= set(
        directives("backend sessions")
    )
    for backend in ("backend least_connections", "backend sessions"):
        assert "option httpchk GET /health/ready" in directives(backend)


def test_haproxy_accepts_the_configuration() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed here (the balancer image checks it at build time)")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The README's request tables name every field of every request schema, in the schema's order."""

from __future__ import annotations

import re
from pathlib import Path

from service.schemas import (
    GenerateRequest,
    NextWordRequest,
    SentimentBatchRequest,
    SentimentRequest,
)

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| field | type | default | meaning |"
# the tables in the order the README gives them
SCHEMAS = [SentimentRequest, SentimentBatchRequest, NextWordRequest, GenerateRequest]


def _tables() -> list[list[str]]:
    """The first column of each request table of the README."""
    tables: list[list[str]] = []
    rows: list[str] | None = None
    for line in README.read_text().splitlines():
        if line == HEADER:
            rows = []
            tables.append(rows)
        elif rows is not None and line.startswith("|"):
            name = re.match(r"\| `(\w+)` \|", line)
            if name:
                rows.append(name[1])
        else:
            rows = None
    return tables


def test_every_request_field_is_in_the_readme() -> None:
    assert _tables() == [list(schema.model_fields) for schema in SCHEMAS]

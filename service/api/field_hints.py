"""A field the request schema does not have is answered with the nearest one it has ("did you
mean `top_k`?"), or with the list of its fields when none is near."""

from __future__ import annotations

import difflib
import re
from typing import Any

from fastapi import Request
from pydantic import BaseModel

# Names other APIs use for a field these schemas call otherwise (meaning, not spelling: no
# string distance finds `prompt` from `text`). The first one the schema has is suggested.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("text",),
    "text": ("prompt",),
    "input": ("text", "prompt"),
    "inputs": ("texts", "text", "prompt"),
    "sentence": ("text",),
    "max_tokens": ("max_new_tokens",),
    "max_length": ("max_new_tokens",),
    "stop_sequences": ("stop",),
    "model_name": ("model",),
}


def _normal(name: str) -> str:
    """`top-k`, `topK` and `TOP_K` all read `topk`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def nearest(name: str, known: list[str]) -> str | None:
    """The known field `name` most likely meant, or None."""
    target = _normal(name)
    if not target:
        return None
    for field in known:  # the same name, spelled otherwise
        if _normal(field) == target:
            return field
    for candidate in SYNONYMS.get(name.lower(), ()):
        if candidate in known:
            return candidate
    # a part of the name (`k` of `top_k`) or its start (`temp` of `temperature`)
    partial = [
        field
        for field in known
        if target in field.lower().split("_") or (len(target) >= 3 and field.startswith(target))
    ]
    if len(partial) == 1:
        return partial[0]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return close[0] if close else None


def body_fields(request: Request) -> list[str]:
    """The top-level fields of the route's request body schema (empty when it has none)."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def hint_unknown_field(error: dict[str, Any], request: Request) -> dict[str, Any]:
    """The validation error with a message naming the nearest known field, when `error` is an
    unknown top-level field of the body; any other error unchanged."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or len(loc) != 2 or loc[0] != "body":
        return error
    known = body_fields(request)
    if not known:
        return error
    guess = nearest(str(loc[1]), known)
    if guess is not None:
        message = f"unknown field; did you mean `{guess}`?"
    else:
        message = "unknown field; the fields are " + ", ".join(f"`{f}`" for f in known)
    return {**error, "msg": message}

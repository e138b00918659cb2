"""The OpenAPI document as this server enforces it: HTTP Bearer security only when an API key is
configured, and the configured limits (texts per batch, characters per text and prompt) stated
as JSON Schema bounds, so that a client or a fuzzer generating from /openapi.json meets them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.api import openai
from service.settings import Settings

# schema, property -> the setting that bounds it, and the JSON Schema keyword
LIMITS: list[tuple[str, str, str, str]] = [
    ("SentimentRequest", "text", "max_text_chars", "maxLength"),
    ("NextWordRequest", "text", "max_text_chars", "maxLength"),
    ("GenerateRequest", "prompt", "max_prompt_chars", "maxLength"),
    ("SentimentBatchRequest", "texts", "max_batch_texts", "maxItems"),
]


def install(app: FastAPI) -> None:
    """Replace app.openapi with a document adjusted to the settings (built once, on first use)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        state = app.state.service
        window = _prompt_window(state)
        spec = adjusted(build(), state.settings, window)
        openai.document_limits(spec, state)  # /v1/completions: every language model's window
        app.openapi_schema = None if window is None else spec  # kept once the models are ready
        return spec

    app.openapi = document  # type: ignore[method-assign]


def _prompt_window(state: Any) -> int | None:
    """Tokens the default generation model reads; a character model's tokens are the prompt's
    characters, so this bounds `prompt` too. None until the models are loaded."""
    try:
        _, loaded = state.registry.get(None, "generate")
        return int(loaded.checkpoint.config.max_length)
    except Exception:  # not loaded yet, or no generation model: the settings alone
        return None


def adjusted(spec: dict[str, Any], settings: Settings, window: int | None = None) -> dict[str, Any]:
    schemas = spec.get("components", {}).get("schemas", {})
    for schema, field, setting, keyword in LIMITS:
        prop = schemas.get(schema, {}).get("properties", {}).get(field)
        if prop is not None:
            prop[keyword] = getattr(settings, setting)
    prompt = schemas.get("GenerateRequest", {}).get("properties", {}).get("prompt")
    if prompt is not None and window is not None:
        prompt["maxLength"] = min(prompt["maxLength"], window)
    items = schemas.get("SentimentBatchRequest", {}).get("properties", {}).get("texts", {})
    if "items" in items:
        items["items"]["maxLength"] = settings.max_text_chars
    if settings.api_key is None:  # open access: no operation asks for credentials
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                operation.pop("security", None)
        spec.get("components", {}).pop("securitySchemes", None)
    return spec

"""The service's settings: one object, read once from the environment (prefix LSTM_SERVE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


class Settings(BaseSettings):
    """Every knob of the service. Lists accept JSON or comma-separated values."""

    model_config = SettingsConfigDict(env_prefix="LSTM_SERVE_", extra="ignore")

    artifacts_dir: Path = DEFAULT_ARTIFACTS
    # Checkpoints to load: a directory name under artifacts_dir, or name=path.
    models: Annotated[list[str], NoDecode] = ["sentiment", "next-word", "generate"]
    # Serve the models that loaded when another fails (reported as unavailable) instead of exiting.
    allow_partial: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    torch_threads: int = Field(1, ge=1, le=256)  # intra-op threads of each engine
    # Engine processes computing the models: "auto" is one per CPU core available to the process
    # (its affinity and cgroup quota), or one per GPU on CUDA; 0 runs one engine on a thread of
    # the HTTP process (no extra processes: tests, small machines).
    engines: int | Literal["auto"] = "auto"
    # How much lower the engines' CPU priority is than the HTTP process's (added to their nice
    # value). The HTTP process's work is short and waited on: accepting, answering, sending each
    # token. Behind engines computing on every core it waited for a time slice; measured on 2
    # cores, 10 gave /sentiment 15% more req/s at 8 connections and halved a joining stream's
    # wait for its first token. 0: the same priority.
    engine_nice: int = Field(10, ge=0, le=19)

    max_text_chars: int = Field(20_000, ge=1)
    max_prompt_chars: int = Field(8_000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_batch_texts: int = Field(64, ge=1, le=1024)

    max_batch_size: int = Field(32, ge=1, le=1024)  # sequences per forward pass
    # how long an idle engine lets a batch fill; 0: never wait (batches form while it computes)
    max_wait_ms: float = Field(0.0, ge=0, le=1000)
    # Requests waiting per model operation before 503 + Retry-After. It bounds the queueing delay
    # of an accepted request: 64 reviews are about 150 ms of sentiment work on 2 cores, which kept
    # accepted p99 under 2x its value at capacity when 4x capacity was offered (bench/overload.py).
    max_queue: int = Field(64, ge=1)
    max_active_generations: int = Field(64, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    # A request head (request line and headers) must arrive within this many seconds of the
    # connection opening or of the previous answer; a silent connection is closed.
    head_timeout_s: float = Field(10.0, gt=0, le=300)
    # Open connections; past it an idle one is closed to make room, else the newcomer gets 503.
    # Kept under the process's open-file limit.
    max_connections: int = Field(1000, ge=1)
    # a streamed generation ends with finish_reason "time_limit" after this long
    stream_timeout_s: float = Field(300.0, gt=0)
    cache_mb: int = Field(64, ge=0)  # prefix-state cache size; 0 turns it off
    # Suggest and generate with the continuous cache a checkpoint carries (models/cache.py): the
    # model its card measured (the shipped ones: next-word perplexity 73.05, 106.96 without;
    # generate 1.3165 nats/char, 1.4247 without). It reads each text's last `window` hidden
    # states at every token: off, generation is faster (bench/continuous_cache.py) and the
    # model is the network alone.
    continuous_cache: bool = True

    api_key: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: str = "info"

    @field_validator("engines")
    @classmethod
    def _engine_count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 64:
            raise ValueError("engines must be auto or a number from 0 to 64")
        return value

    @field_validator("models", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def checkpoint_paths(self) -> dict[str, Path]:
        """Model name -> checkpoint directory."""
        paths: dict[str, Path] = {}
        for entry in self.models:
            name, _, path = entry.partition("=")
            paths[name.strip()] = Path(path.strip()) if path else self.artifacts_dir / name.strip()
        return paths

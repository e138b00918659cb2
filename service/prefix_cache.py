"""Prefix-state cache: the recurrent state after a token prefix is a fixed-size tensor, so a request
that extends an earlier one (a user typing word by word, a reused prompt) reads only the new tokens.
Bounded by bytes, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.architectures import LanguageModel
from models.recurrent import State

_BASE, _MOD = 1_000_003, (1 << 61) - 1


@dataclass(frozen=True)
class CachedPrefix:
    ids: tuple[int, ...]
    logits: torch.Tensor  # (V,) next-token log-probabilities after the prefix
    state: State
    nbytes: int


def _state_bytes(state: State) -> int:
    tensors = state if isinstance(state, tuple) else (state,)
    return sum(t.numel() * t.element_size() for t in tensors)


def prefix_hashes(ids: Sequence[int]) -> list[int]:
    """Rolling hash of every prefix: hashes[n] covers ids[:n]."""
    hashes = [0]
    for token in ids:
        hashes.append((hashes[-1] * _BASE + token + 1) % _MOD)
    return hashes


class PrefixCache:
    """Maps token prefixes to (logits, state); not thread-safe: used on the inference thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.tokens_saved = 0
        self._entries: OrderedDict[int, CachedPrefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: Sequence[int]) -> tuple[int, CachedPrefix | None]:
        """Length of the longest cached prefix of `ids` and its entry (0, None if none)."""
        hashes = prefix_hashes(ids)
        for length in range(len(ids), 0, -1):
            entry = self._entries.get(hashes[length])
            if entry is not None and entry.ids == tuple(ids[:length]):
                self._entries.move_to_end(hashes[length])
                return length, entry
        return 0, None

    def put(self, ids: Sequence[int], logits: torch.Tensor, state: State) -> None:
        if not ids:
            return
        key = prefix_hashes(ids)[-1]
        nbytes = _state_bytes(state) + logits.numel() * logits.element_size()
        if nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = CachedPrefix(tuple(ids), logits, state, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes

    @torch.inference_mode()
    def read(self, model: LanguageModel, ids: Sequence[int]) -> tuple[torch.Tensor, State]:
        """Next-token log-probabilities (V,) and the state after `ids`, computing only the
        uncached suffix. (Log-probabilities sample exactly like the logits they come from.)"""
        length, entry = self.longest(ids)
        if entry is not None and length == len(ids):
            self.hits += 1
            self.tokens_saved += length
            return entry.logits, entry.state
        device = next(model.parameters()).device
        rest = torch.tensor([list(ids[length:])], dtype=torch.long, device=device)  # (1, T)
        if entry is None:
            self.misses += 1
            logits, state = model.next_logits(rest)
        else:
            self.hits += 1
            self.tokens_saved += length
            logits, state = model.next_logits(rest, entry.state)
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)
        self.put(ids, log_probs, state)
        return log_probs, state

"""Prefix-state cache: the recurrent state after a token prefix is a fixed-size tensor, so a request
that extends an earlier one (a user typing word by word, a reused prompt) reads only the new tokens.
Bounded by bytes, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from models.architectures import LanguageModel
from models.recurrent import State, concat_states, select_state, without_onednn, zero_state

_BASE, _MOD = 1_000_003, (1 << 61) - 1


@dataclass(frozen=True)
class CachedPrefix:
    ids: tuple[int, ...]
    logits: torch.Tensor  # (V,) next-token log-probabilities after the prefix
    state: State
    nbytes: int


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself if it owns exactly its storage, else a compact copy: a row of a batch
    is a view that would keep the whole batch's storage alive behind the cache's byte count."""
    if tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone()


def _bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


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
        logits = _own(logits)
        state = (_own(state[0]), _own(state[1])) if isinstance(state, tuple) else _own(state)
        nbytes = _bytes([logits, *(state if isinstance(state, tuple) else (state,))])
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


def read_prefixes(
    model: LanguageModel, prompts: Sequence[Sequence[int]], cache: PrefixCache | None
) -> list[tuple[torch.Tensor, State]]:
    """For each prompt, next-token log-probabilities (V,) and the state after it: the uncached
    rests of all prompts are read in one packed pass from their cached states. (Log-probabilities
    sample exactly like the logits they come from.)"""
    found = [cache.longest(ids) if cache else (0, None) for ids in prompts]
    if cache is not None:
        cache.hits += sum(1 for length, _ in found if length)
        cache.misses += sum(1 for length, _ in found if not length)
        cache.tokens_saved += sum(length for length, _ in found)
    results: dict[int, tuple[torch.Tensor, State]] = {
        i: (entry.logits, entry.state)
        for i, (length, entry) in enumerate(found)
        if entry is not None and length == len(prompts[i])
    }
    todo = [i for i in range(len(prompts)) if i not in results]
    if todo:
        device = next(model.parameters()).device
        rests = [list(prompts[i][found[i][0] :]) for i in todo]
        lengths = torch.tensor([len(rest) for rest in rests])
        tokens = torch.zeros(len(rests), int(lengths.max()), dtype=torch.long)
        for row, rest in enumerate(rests):
            tokens[row, : len(rest)] = torch.tensor(rest)
        starts = [_start_state(model, found[i][1]) for i in todo]
        # one new token each (a word typed after a cached text): one time step, faster without
        # oneDNN; longer reads keep it
        one_step = without_onednn() if int(lengths.max()) == 1 else nullcontext()
        with torch.inference_mode(), one_step:
            last, new_state = model.next_logits(tokens.to(device), concat_states(starts), lengths)
            log_probs = torch.log_softmax(last.float(), dim=-1)  # (B, V)
        for row, index in enumerate(todo):
            # one row of the batched state: (L, 1, H), copied out (advanced indexing)
            row_state = select_state(new_state, torch.tensor([row], device=log_probs.device))
            results[index] = (log_probs[row], row_state)
            if cache is not None:
                cache.put(prompts[index], *results[index])
    return [results[i] for i in range(len(prompts))]


def _start_state(model: LanguageModel, entry: CachedPrefix | None) -> State:
    """The cached state, or the zero state a fresh sequence starts from."""
    if entry is not None:
        return entry.state
    config = model.config
    return zero_state(
        config.cell, config.num_layers, config.hidden_dim, 1, next(model.parameters())
    )

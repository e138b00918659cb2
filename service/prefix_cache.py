"""Prefix-state cache: the recurrent state after a token prefix is a fixed-size tensor, so a request
that extends an earlier one (a user typing word by word, a reused prompt) reads only the new tokens.
A model with a continuous cache (`models.cache`) also keeps the prefix's memory of hidden states.
Bounded by bytes, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from models.architectures import LanguageModel, final_hidden
from models.cache import Memory
from models.config import CacheConfig
from models.recurrent import State, concat_states, select_state, without_onednn, zero_state

_BASE, _MOD = 1_000_003, (1 << 61) - 1


@dataclass(frozen=True)
class CachedPrefix:
    ids: tuple[int, ...]
    logits: torch.Tensor  # (V,) the model's next-token log-probabilities after the prefix
    state: State
    nbytes: int
    # with a continuous cache: the prefix's (hidden state, next token) pairs, and the hidden state
    # after its last token (which `logits` came from); never changed once cached
    memory: Memory | None = None
    hidden: torch.Tensor | None = None


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

    def put(
        self,
        ids: Sequence[int],
        logits: torch.Tensor,
        state: State,
        memory: Memory | None = None,
        hidden: torch.Tensor | None = None,
    ) -> None:
        if not ids:
            return
        key = prefix_hashes(ids)[-1]
        logits = _own(logits)
        state = (_own(state[0]), _own(state[1])) if isinstance(state, tuple) else _own(state)
        hidden = _own(hidden) if hidden is not None else None
        extra = [hidden] if hidden is not None else []
        nbytes = _bytes([logits, *(state if isinstance(state, tuple) else (state,)), *extra])
        nbytes += memory.nbytes if memory is not None else 0
        if nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = CachedPrefix(tuple(ids), logits, state, nbytes, memory, hidden)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes


@dataclass(frozen=True)
class ReadPrompt:
    """A prompt as read: the model's next-token log-probabilities (V,) and state after it; with
    a continuous cache, its memory of the prompt (the caller's own) and the last hidden state."""

    logits: torch.Tensor
    state: State
    memory: Memory | None = None
    hidden: torch.Tensor | None = None


def read_prefixes(
    model: LanguageModel, prompts: Sequence[Sequence[int]], cache: PrefixCache | None
) -> list[tuple[torch.Tensor, State]]:
    """For each prompt, next-token log-probabilities (V,) and the state after it: the uncached
    rests of all prompts are read in one packed pass from their cached states. (Log-probabilities
    sample exactly like the logits they come from.)"""
    return [(read.logits, read.state) for read in read_prompts(model, prompts, cache, None)]


def read_prompts(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    cache: PrefixCache | None,
    continuous: CacheConfig | None,
    copy_memory: bool = True,
    speakers: Sequence[torch.Tensor] | None = None,
) -> list[ReadPrompt]:
    """`read_prefixes`, and with a `continuous` cache each prompt's memory too: a copy of its
    own, for a caller that adds to it (a generation); `copy_memory=False`, possibly the cache's
    own, for one that only reads it. A model that reads speakers reads each prompt's `speakers`
    (T, S) beside its tokens (a function of the tokens, so a cached prefix's state holds)."""
    found = [cache.longest(ids) if cache else (0, None) for ids in prompts]
    if continuous is not None:  # an entry without a memory (put by next-word) cannot serve
        found = [(n, e) if e is not None and e.memory is not None else (0, None) for n, e in found]
    if cache is not None:
        cache.hits += sum(1 for length, _ in found if length)
        cache.misses += sum(1 for length, _ in found if not length)
        cache.tokens_saved += sum(length for length, _ in found)
    results: dict[int, ReadPrompt] = {
        i: ReadPrompt(entry.logits, entry.state, entry.memory, entry.hidden)
        for i, (length, entry) in enumerate(found)
        if entry is not None and length == len(prompts[i])
    }
    todo = [i for i in range(len(prompts)) if i not in results]
    if todo:
        rests = [list(prompts[i][found[i][0] :]) for i in todo]
        starts = [found[i][1] for i in todo]
        beside = [speakers[i][found[i][0] :] for i in todo] if speakers is not None else None
        read_rests = _read_rests(model, rests, starts, continuous, beside)
        for index, read in zip(todo, read_rests, strict=True):
            results[index] = read
            if cache is not None:
                cache.put(prompts[index], read.logits, read.state, read.memory, read.hidden)
    reads = [results[i] for i in range(len(prompts))]
    if not copy_memory:
        return reads
    return [
        ReadPrompt(r.logits, r.state, r.memory.copy(), r.hidden) if r.memory is not None else r
        for r in reads
    ]


def _read_rests(
    model: LanguageModel,
    rests: list[list[int]],
    starts: list[CachedPrefix | None],
    continuous: CacheConfig | None,
    speakers: list[torch.Tensor] | None = None,
) -> list[ReadPrompt]:
    """Read each rest of a prompt (non-empty) from its cached prefix's state, in one packed pass
    (beside each rest's `speakers` (T, S), for a model that reads them)."""
    device = next(model.parameters()).device
    lengths = torch.tensor([len(rest) for rest in rests])
    tokens = torch.zeros(len(rests), int(lengths.max()), dtype=torch.long)
    for row, rest in enumerate(rests):
        tokens[row, : len(rest)] = torch.tensor(rest)
    tokens = tokens.to(device)
    beside = None
    if speakers is not None:  # (B, T, S), padded with no speaker
        beside = torch.nn.utils.rnn.pad_sequence(speakers, batch_first=True)
    state = concat_states([_start_state(model, entry) for entry in starts])
    # one new token each (a word typed after a cached text): one time step, faster without
    # oneDNN; longer reads keep it
    one_step = without_onednn() if int(lengths.max()) == 1 else nullcontext()
    with torch.inference_mode(), one_step:
        # every position's output is kept: a continuous cache remembers them all
        hidden, new_state = model.features(tokens, state, lengths, speakers=beside)  # (B, T, H)
        last = model.logits(final_hidden(hidden, lengths))  # (B, V)
        log_probs = torch.log_softmax(last.float(), dim=-1)  # (B, V)
    reads = []
    for row, (rest, entry) in enumerate(zip(rests, starts, strict=True)):
        # one row of the batched state: (L, 1, H), copied out (advanced indexing)
        row_state = select_state(new_state, torch.tensor([row], device=device))
        if continuous is None:
            reads.append(ReadPrompt(log_probs[row], row_state))
            continue
        memory = _memory_of(entry, continuous, hidden.shape[-1], device)
        read = hidden[row, : len(rest)]  # (T, H)
        if entry is not None and entry.hidden is not None:  # the prefix's last position
            memory.add(entry.hidden[None], tokens[row, :1])
        memory.add(read[:-1], tokens[row, 1 : len(rest)])
        reads.append(ReadPrompt(log_probs[row], row_state, memory, read[-1].clone()))
    return reads


def _memory_of(
    entry: CachedPrefix | None, config: CacheConfig, hidden_dim: int, device: torch.device
) -> Memory:
    """A copy of the cached prefix's memory, or an empty one."""
    if entry is not None and entry.memory is not None:
        return entry.memory.copy()
    return Memory(config, hidden_dim, device)


def _start_state(model: LanguageModel, entry: CachedPrefix | None) -> State:
    """The cached state, or the zero state a fresh sequence starts from."""
    if entry is not None:
        return entry.state
    config = model.config
    return zero_state(
        config.cell, config.num_layers, config.hidden_dim, 1, next(model.parameters())
    )

"""The continuous cache (Grave et al., 2017, "Improving neural language models with a continuous
cache"): the model's next-token distribution mixed with one that copies what followed recent
positions whose hidden states resemble the current one. Over the `window` positions i < t read
before, each gets a share

    w_i = exp(theta cos(h_t, h_i)) / (exp(theta floor) + sum_j exp(theta cos(h_t, h_j)))

and p(c) = (1 - weight m) p_model(c) + weight sum_i w_i [x_(i+1) = c], where m = sum_i w_i.
The `floor` is a sentinel (as in Merity et al.'s pointer sentinel): a position must resemble the
current one more than it does to take much of the mass, so a short text, with few and weak
matches, keeps nearly the model's own distribution; without a floor m is 1 once anything is held.
It costs no training: the values are fitted on validation text. A name or word the model never
saw in training, once read, can be copied: the text read so far, the prompt included, steers what
follows. Evaluation (`WindowedMemory`: parallel streams read window by window) and decoding
(`Memory`: one sequence, token by token) compute the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from models.config import CacheConfig


def keys_of(hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states (..., H) as the cache compares them: float32, unit length."""
    return functional.normalize(hidden.float(), dim=-1)


def shares(cosines: torch.Tensor, theta: float, floor: float | None) -> torch.Tensor:
    """Each position's share w_i (..., K) of the copy from cosines (..., K), -inf where a pair
    may not be used; a row with no usable pair gets none (all 0)."""
    scores = theta * cosines
    if floor is None:
        return torch.softmax(scores, -1).nan_to_num(0.0)
    sentinel = scores.new_full((*scores.shape[:-1], 1), theta * floor)
    return torch.softmax(torch.cat([scores, sentinel], -1), -1)[..., :-1]


def mix(
    log_probs: torch.Tensor, copy: torch.Tensor, mass: torch.Tensor, weight: float
) -> torch.Tensor:
    """log((1 - weight m) p_model + weight p_copy) from model log-probabilities, the copy's
    probabilities (both of one shape) and its mass m (broadcast to them)."""
    model_part = log_probs.float() + torch.log1p(-weight * mass.float())
    if weight == 0:
        return model_part
    return torch.logaddexp(model_part, torch.log(copy.float()) + math.log(weight))


class Memory:
    """One sequence's last `window` (key, next token) pairs, for decoding token by token. Kept in
    a buffer that grows to the window, then is overwritten oldest first."""

    def __init__(self, config: CacheConfig, hidden_dim: int, device: torch.device) -> None:
        self.config = config
        self.keys = torch.empty(0, hidden_dim, device=device)  # (capacity, H), unit length
        self.ids = torch.empty(0, dtype=torch.long, device=device)  # (capacity,)
        self.size = 0  # pairs held
        self.next = 0  # where the next pair goes

    @property
    def nbytes(self) -> int:
        return self.keys.untyped_storage().nbytes() + self.ids.untyped_storage().nbytes()

    def copy(self) -> Memory:
        """An independent copy holding the same pairs (compact: no spare capacity)."""
        twin = Memory(self.config, self.keys.shape[1], self.keys.device)
        order = self._order()
        twin.keys, twin.ids = self.keys[order].clone(), self.ids[order].clone()
        twin.size, twin.next = self.size, self.size % self.config.window
        return twin

    def _order(self) -> torch.Tensor:
        """Indices of the pairs held, oldest first."""
        start = self.next if self.size == self.keys.shape[0] else 0
        return (torch.arange(self.size, device=self.keys.device) + start) % max(1, self.size)

    def add(self, hidden: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Remember hidden states (T, H) and the token that followed each (T,)."""
        window = self.config.window
        count = min(window, hidden.shape[0])
        if not count:  # a one-token prompt has no pair yet
            return
        if self.size + count > self.keys.shape[0] and self.keys.shape[0] < window:
            self._grow(min(window, max(64, 2 * self.keys.shape[0], self.size + count)))
        capacity = self.keys.shape[0]  # the window itself once a write would wrap
        if count == 1:  # a generated token: one row, without building an index
            torch.mul(hidden[-1], 1 / _norm(hidden[-1]), out=self.keys[self.next])
            self.ids[self.next] = next_ids[-1]
        else:
            places = (self.next + torch.arange(count, device=self.keys.device)) % capacity
            self.keys[places] = keys_of(hidden[-count:])
            self.ids[places] = next_ids[-count:].to(self.ids.device)
        self.next = (self.next + count) % capacity
        self.size = min(capacity, self.size + count)

    def _grow(self, capacity: int) -> None:
        order = self._order()
        keys = self.keys.new_empty(capacity, self.keys.shape[1])
        ids = self.ids.new_empty(capacity)
        keys[: self.size], ids[: self.size] = self.keys[order], self.ids[order]
        self.keys, self.ids, self.next = keys, ids, self.size

    def shares(self, hidden: torch.Tensor) -> torch.Tensor:
        """Each held pair's share w_i of the copy (M,) for the hidden state (H,), oldest pair
        first: the i-th is the pair of the i-th oldest position still held."""
        cosines = self.keys[: self.size] @ (hidden.float() / _norm(hidden))  # (M,)
        return shares(cosines, self.config.theta, self.config.floor)[self._order()]

    def log_probs(self, logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The cache's next-token log-probabilities (V,) from the model's logits (V,) and the
        hidden state (H,) they came from; the model's own when nothing is held yet. (Computed
        in probabilities, in few operations: it runs for every token of every stream.)"""
        if not self.size:
            return torch.log_softmax(logits.float(), -1)
        keys, ids = self.keys[: self.size], self.ids[: self.size]
        cosines = keys @ (hidden.float() / _norm(hidden))  # (M,)
        weights = shares(cosines, self.config.theta, self.config.floor)  # (M,)
        mass = float(weights.sum()) if self.config.floor is not None else 1.0
        probs = torch.softmax(logits.float(), -1) * (1 - self.config.weight * mass)  # (V,)
        probs.index_add_(0, ids, weights, alpha=self.config.weight)
        return probs.log_()


def _norm(vector: torch.Tensor) -> float:
    """The length of a vector, at least the one `functional.normalize` divides by."""
    return max(float(torch.linalg.vector_norm(vector.float())), 1e-12)


class WindowedMemory:
    """B parallel streams read window by window (evaluation): the last `window` keys of each
    stream carried from one window to the next."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.keys: torch.Tensor | None = None  # (B, M, H)
        self.ids: torch.Tensor | None = None  # (B, M)

    def cosines(
        self, hidden: torch.Tensor, next_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For hidden states (B, T, H) and the token after each (B, T): each position's cosine
        with the pairs before it (B, T, M + T), -inf where a pair may not serve it, and those
        pairs' tokens (B, M + T). Then remembers the window."""
        keys = keys_of(hidden)  # (B, T, H)
        if self.keys is not None and self.ids is not None:
            every_key = torch.cat([self.keys, keys], 1)  # (B, M + T, H)
            every_id = torch.cat([self.ids, next_ids], 1)  # (B, M + T)
        else:
            every_key, every_id = keys, next_ids
        held, steps = every_key.shape[1] - keys.shape[1], keys.shape[1]
        query = torch.arange(steps, device=keys.device)[:, None] + held  # (T, 1)
        key = torch.arange(every_key.shape[1], device=keys.device)[None, :]  # (1, M + T)
        # pair j serves position t when it was read before t, at most `window` positions back
        allowed = (key < query) & (key >= query - self.config.window)  # (T, M + T)
        cosines = (keys @ every_key.transpose(1, 2)).masked_fill(~allowed, float("-inf"))
        self.keys = every_key[:, -self.config.window :]
        self.ids = every_id[:, -self.config.window :]
        return cosines, every_id

    def weights(
        self, hidden: torch.Tensor, next_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each position's shares of the pairs before it (B, T, M + T) and their tokens."""
        cosines, every_id = self.cosines(hidden, next_ids)
        return shares(cosines, self.config.theta, self.config.floor), every_id

    def log_probs(
        self, log_probs: torch.Tensor, hidden: torch.Tensor, next_ids: torch.Tensor
    ) -> torch.Tensor:
        """Full distributions (B, T, V) from the model's log-probabilities (B, T, V)."""
        weights, ids = self.weights(hidden, next_ids)
        index = ids[:, None, :].expand(-1, weights.shape[1], -1)  # (B, T, M + T)
        return mix_rows(log_probs, weights, index, self.config.weight)


def target_copy(weights: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The copy's probability of each target (B, T), from the shares (B, T, K) of the pairs
    with tokens `ids` (B, K)."""
    return (weights * (ids[:, None, :] == targets[:, :, None])).sum(-1)


def unknown_copies(
    weights: torch.Tensor, unknown: list[str | None], weight: float
) -> dict[str, float]:
    """The copy's probability of each word outside the vocabulary that followed a held
    position: the pairs' shares (K,) and, for each pair, the word that followed it when the
    vocabulary lacks that word (None when it has it). The cache copies the token <unk> for such
    a pair; the text says which word it was, so the word itself can be offered (a name read
    earlier in the text, say)."""
    copies: dict[str, float] = {}
    for share, word in zip(weights.tolist(), unknown, strict=True):
        if word is not None:
            copies[word] = copies.get(word, 0.0) + weight * share
    return copies


def mix_rows(
    log_probs: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, weight: float
) -> torch.Tensor:
    """Whole mixed distributions (..., V) from the model's log-probabilities (..., V), each
    row's shares of its pairs (..., K) and those pairs' tokens (..., K)."""
    copy = torch.zeros_like(log_probs, dtype=torch.float32).scatter_add_(-1, ids, weights)
    return mix(log_probs, copy, weights.sum(-1, keepdim=True), weight)

"""The two architectures, as pure `nn.Module`s built from frozen config dataclasses: a many-to-one
sequence classifier and a next-token language model. No I/O, no loss, no device choice."""

from __future__ import annotations

import torch
from torch import nn

from models.config import (
    ClassifierConfig,
    LanguageModelConfig,
    ModelConfig,
    architecture_name,
)
from models.recurrent import (
    State,
    length_mask,
    make_rnn,
    reverse_within_lengths,
    run_rnn,
)


class _EncoderLayer(nn.Module):
    """One layer: a forward RNN and, if bidirectional, a second one over rows reversed in place."""

    def __init__(self, cell: str, input_dim: int, hidden_dim: int, bidirectional: bool) -> None:
        super().__init__()
        self.forward_rnn = make_rnn(cell, input_dim, hidden_dim)
        self.backward_rnn = make_rnn(cell, input_dim, hidden_dim) if bidirectional else None

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, packed: bool
    ) -> tuple[torch.Tensor, State]:
        """x (B, T, D) -> outputs (B, T, H * directions), the forward direction's final state."""
        out, state = run_rnn(self.forward_rnn, x, lengths, packed=packed)  # (B, T, H)
        if self.backward_rnn is None:
            return out, state
        # on a padded batch (packed=False), nn.LSTM(bidirectional=True) would start its backward
        # pass on the padding; reversing each row within its length keeps the padding at the end
        reversed_x = reverse_within_lengths(x, lengths)
        back, _ = run_rnn(self.backward_rnn, reversed_x, lengths, packed=packed)  # (B, T, H)
        # back in reading order, so position t holds both directions' outputs for token t
        return torch.cat([out, reverse_within_lengths(back, lengths)], dim=-1), state


class SequenceClassifier(nn.Module):
    """Many-to-one: a sequence of token ids in, one distribution over labels out."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        directions = 2 if config.bidirectional else 1
        # padding_idx: the padding row stays zero and gets no gradient
        self.embedding = nn.Embedding(
            config.vocab_size, config.embed_dim, padding_idx=config.padding_id
        )
        self.layers = nn.ModuleList(
            _EncoderLayer(
                config.cell,
                config.embed_dim if i == 0 else config.hidden_dim * directions,
                config.hidden_dim,
                config.bidirectional,
            )
            for i in range(config.num_layers)
        )  # layer i > 0 reads both directions of the layer below: H * directions wide
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.dropout = nn.Dropout(config.dropout)
        pooled_dim = config.hidden_dim * directions  # D: the width of one pooled vector
        if config.pool_embeddings:
            pooled_dim += config.embed_dim
        self.ngrams = (
            nn.Embedding(config.ngram_buckets, config.ngram_dim) if config.ngram_buckets else None
        )
        # one D-wide vector per pooling kind, side by side, then the pooled pairs if any
        ngram_width = config.ngram_dim if config.ngram_buckets else 0
        self.head = nn.Linear(pooled_dim * len(config.pooling) + ngram_width, config.num_classes)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, packed: bool = True
    ) -> tuple[torch.Tensor, State]:
        """tokens (B, T) padded at the end, lengths (B,) >= 1 -> logits (B, C), final state."""
        return self.classify(self.embedding(tokens), lengths, packed, tokens)

    def classify(
        self,
        embedded: torch.Tensor,
        lengths: torch.Tensor,
        packed: bool = True,
        tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Same as `forward` from embeddings (B, T, E), so callers can attribute to tokens; the
        word-pair path, when the model has one, reads `tokens` (B, T), and adds a term that does
        not depend on `embedded`."""
        x = self.embed_dropout(embedded)  # (B, T, E)
        state: State | None = None
        for i, layer in enumerate(self.layers):
            # dropout between layers only: the embeddings had their own above
            x, state = layer(x if i == 0 else self.dropout(x), lengths, packed)  # (B, T, H*dirs)
        if self.config.pool_embeddings:
            # the embeddings before dropout: the bag-of-words path sees every word
            x = torch.cat([x, embedded], dim=-1)  # (B, T, H*dirs + E)
        pooled = self._pool(x, lengths)  # (B, D * len(pooling))
        if self.ngrams is not None:
            if tokens is None:
                raise ValueError("this model reads word pairs: classify() needs the tokens")
            pooled = torch.cat([pooled, self._pool_pairs(tokens, lengths)], dim=-1)
        assert state is not None  # num_layers >= 1, so the loop ran
        return self.head(self.dropout(pooled)), state  # (B, C)

    def _pool_pairs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> the mean embedding of each row's adjacent word pairs (B, N); a row
        of one word has no pair and gets zeros."""
        assert self.ngrams is not None
        first, second = tokens[:, :-1], tokens[:, 1:]  # (B, T-1): pair t is (token t, t+1)
        # a multiplicative hash: ids below 2**20 and the prime below 2**21 stay inside int64;
        # pairs that collide share an embedding, the price of a fixed-size table
        buckets = (first * 1_000_003 + second) % self.config.ngram_buckets  # (B, T-1)
        pairs = (lengths.to(tokens.device) - 1).clamp(min=0)  # (B,): real pairs per row
        mask = length_mask(pairs, buckets.shape[1]).unsqueeze(-1)  # (B, T-1, 1)
        summed = (self.ngrams(buckets) * mask).sum(1)  # (B, N): padding pairs masked out
        return summed / pairs.clamp(min=1).unsqueeze(1).to(summed.dtype)  # (B, N)

    def _pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, D * len(pooling)); padding never enters a pool."""
        lengths = lengths.to(x.device)
        mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
        pooled = []
        for kind in self.config.pooling:
            if kind == "last":
                pooled.append(self._last(x, lengths))  # (B, D)
            elif kind == "mean":
                # sum of real positions over the real length, not over T
                pooled.append((x * mask).sum(1) / lengths.unsqueeze(1).to(x.dtype))  # (B, D)
            else:
                # -inf at padding: its outputs (zeros when packed, the run over padding when not)
                # must never win the max
                pooled.append(x.masked_fill(~mask, float("-inf")).amax(1))  # (B, D)
        return torch.cat(pooled, dim=-1)  # (B, pooled_dim * len(pooling))

    def _last(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each direction's final output: forward at position len-1, backward at position 0."""
        index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])  # (B, 1, D)
        last = x.gather(1, index).squeeze(1)  # (B, D): every feature at position len-1
        if not self.config.bidirectional:
            return last
        # features are [forward H | backward H | embeddings E when pooled]; the backward
        # direction ends at position 0, where it has read the whole row
        hidden = self.config.hidden_dim
        return torch.cat(
            [last[:, :hidden], x[:, 0, hidden : 2 * hidden], last[:, 2 * hidden :]], -1
        )  # (B, D)


def final_hidden(hidden: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each row's output (B, H) at its own last real position of hidden (B, T, H): the rows of
    one packed batch end at different places (`lengths`; None: all at the end)."""
    if lengths is None:
        return hidden[:, -1]
    rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
    return hidden[rows, lengths.to(hidden.device) - 1]


class LanguageModel(nn.Module):
    """Next-token model: `forward(tokens, state) -> (logits, state)`; state carries over."""

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        # a speaker's name, read letter by letter from the same embeddings, becomes one vector
        # the recurrent stack reads beside every token of the speech (models/speakers.py)
        self.speaker_encoder = (
            nn.GRU(config.embed_dim, config.speaker_dim, batch_first=True)
            if config.speaker_dim
            else None
        )
        self.rnn = make_rnn(
            config.cell,
            config.embed_dim + config.speaker_dim,
            config.hidden_dim,
            config.num_layers,
            config.dropout,
        )
        # on the embeddings and on the top layer's output; make_rnn adds it between layers
        self.dropout = nn.Dropout(config.dropout)
        self.head: nn.Module
        if config.adaptive_cutoffs:
            # frequent words get the full width, rarer clusters a projection div_value times
            # narrower: most of the cost and parameters of a large vocabulary's softmax go
            self.head = nn.AdaptiveLogSoftmaxWithLoss(
                config.hidden_dim,
                config.vocab_size,
                list(config.adaptive_cutoffs),
                div_value=config.adaptive_div_value,
            )
        elif config.tie_weights:
            # Tying needs the head's input to have the embedding's width.
            projection: nn.Module = (
                nn.Identity()
                if config.hidden_dim == config.embed_dim
                else nn.Linear(config.hidden_dim, config.embed_dim, bias=False)
            )
            decoder = nn.Linear(config.embed_dim, config.vocab_size)
            # one (V, E) matrix both reads tokens in and scores them out (Press & Wolf, 2017)
            decoder.weight = self.embedding.weight
            self.head = nn.Sequential(projection, decoder)
        else:
            self.head = nn.Linear(config.hidden_dim, config.vocab_size)

    def speaker_vectors(self, names: list[list[int]]) -> torch.Tensor:
        """Token ids of N names (each non-empty) -> their vectors (N, S)."""
        if self.speaker_encoder is None:
            raise ValueError("this model reads no speakers (speaker_dim 0)")
        device = self.embedding.weight.device
        lengths = torch.tensor([len(name) for name in names])
        padded = torch.zeros(len(names), int(lengths.max()), dtype=torch.long)
        for row, name in enumerate(names):
            padded[row, : len(name)] = torch.tensor(name)
        embedded = self.embedding(padded.to(device))  # (N, L, E)
        _, last = run_rnn(self.speaker_encoder, embedded, lengths)  # (1, N, S) after each name
        assert isinstance(last, torch.Tensor)  # a GRU's state is one tensor
        return last[0]

    def features(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        lengths: torch.Tensor | None = None,
        packed: bool = True,
        speakers: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """tokens (B, T) -> hidden (B, T, H) after dropout, and the state after each row's end.
        A model that reads speakers reads `speakers` (B, T, S) beside the tokens (None: no
        speaker anywhere)."""
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        if self.speaker_encoder is not None:
            if speakers is None:
                speakers = x.new_zeros(*tokens.shape, self.config.speaker_dim)
            x = torch.cat([x, self.dropout(speakers.to(x.dtype))], dim=-1)  # (B, T, E + S)
        hidden, new_state = run_rnn(self.rnn, x, lengths, state, packed)  # (B, T, H)
        return self.dropout(hidden), new_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) -> logits (..., V); with an adaptive softmax, log-probabilities."""
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            # log_prob takes a 2-D (N, H) batch: flatten the leading dimensions, then restore them
            flat = self.head.log_prob(hidden.reshape(-1, hidden.shape[-1]))  # (N, V)
            return flat.view(*hidden.shape[:-1], -1)  # (..., V); softmax of it is unchanged
        out: torch.Tensor = self.head(hidden)  # (..., V)
        return out

    def target_log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) for hidden (N, H), targets (N,); no full softmax when adaptive."""
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            # scores only the head and each target's own cluster: cheaper than log_prob's (N, V)
            output: torch.Tensor = self.head(hidden, targets).output  # (N,)
            return output
        # float32: a half-precision log-softmax over a large vocabulary loses the small terms
        log_probs = torch.log_softmax(self.logits(hidden).float(), dim=-1)  # (N, V)
        return log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)

    def next_logits(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        lengths: torch.Tensor | None = None,
        speakers: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Logits (B, V) after each row's last real token only, and the state there: reading a
        prompt needs no projection to the vocabulary at the positions before."""
        hidden, new_state = self.features(tokens, state, lengths, speakers=speakers)  # (B, T, H)
        return self.logits(final_hidden(hidden, lengths)), new_state  # (B, V)

    def forward(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        lengths: torch.Tensor | None = None,
        speakers: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """tokens (B, T) -> logits (B, T, V), state after each row's last real token."""
        hidden, new_state = self.features(tokens, state, lengths, speakers=speakers)  # (B, T, H)
        return self.logits(hidden), new_state  # (B, T, V)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "sequence-classifier": SequenceClassifier,
    "language-model": LanguageModel,
}


def build_model(config: ModelConfig) -> nn.Module:
    """The module for a config."""
    return ARCHITECTURES[architecture_name(config)](config)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    # parameters() yields a shared tensor once, so a tied embedding is not counted twice
    return sum(p.numel() for p in model.parameters())

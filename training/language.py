"""The language-model tasks: `next-word` (words, WikiText-2) and `generate` (characters, Tiny
Shakespeare), trained with truncated backpropagation through time over parallel streams."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures import LanguageModel, build_model
from models.cache import WindowedMemory, mix, mix_rows, target_copy
from models.checkpoint import Checkpoint
from models.config import CacheConfig, SamplingParams
from models.decoding import generate_ids, make_generator
from models.format import CheckpointConfig
from models.recurrent import State, detach_state
from models.speakers import SpeakerInputs, names_of_ids, speaker_inputs
from models.tokenizers import (
    EOS,
    UNK,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    fit_word_tokenizer,
    is_word,
)
from models.wordtext import WIKITEXT
from training.cache_fit import fit_cache
from training.config import LanguageModelTrainConfig, SettingError, TrainConfig
from training.everyday import TypedText, encode_reviews, load_everyday, typed_reviews
from training.reading import read_windows
from training.short_texts import short_texts
from training.speakers import name_dependence
from training.tasks import SAMPLES, Finished
from training.text import TextSplits, char_ids, load_char_splits, load_word_splits, word_ids

SPLITS = ("train", "valid", "test")


def streams(ids: torch.Tensor, count: int) -> torch.Tensor:
    """(N,) -> (count, N // count): parallel streams, each a contiguous stretch of the text."""
    length = ids.numel() // count
    return ids[: length * count].view(count, length)


class _Objective(nn.Module):
    """Wraps the model so DistributedDataParallel sees the loss computation as one forward.
    For a model that reads speakers, `names` holds the token ids of every speaker's name that
    the batches' speaker indices point into."""

    def __init__(self, model: LanguageModel, names: list[list[int]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: State | None,
        speakers: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        beside = None
        if speakers is not None and self.names is not None:  # (B, T) indices, -1: none
            beside = _speaker_vectors(self.model, self.names, speakers.to(inputs.device))
        hidden, new_state = self.model.features(inputs, state, speakers=beside)  # (B, T, H)
        log_probs = self.model.target_log_probs(
            hidden.reshape(-1, hidden.shape[-1]).float(), targets.reshape(-1)
        )
        return -log_probs.mean(), new_state


def _speaker_vectors(
    model: LanguageModel, names: list[list[int]], index: torch.Tensor
) -> torch.Tensor:
    """(B, T) indices into `names` (-1: no speaker) -> (B, T, S) vectors, each name of the
    window encoded once, with its gradient."""
    present = index.unique()
    present = present[present >= 0]
    width = model.config.speaker_dim
    table = model.embedding.weight.new_zeros(len(names) + 1, width)  # the last row: no speaker
    if present.numel():
        vectors = model.speaker_vectors([names[i] for i in present.tolist()])  # (K, S)
        table = table.index_copy(0, present, vectors.to(table.dtype))
    return table[index]  # -1 reads the last row


def zero_rows(state: State, rows: torch.Tensor) -> State:
    """The state with the streams where `rows` (B,) is true set to zeros: they start afresh."""

    def zeroed(part: torch.Tensor) -> torch.Tensor:  # (layers, B, H)
        return part * (~rows).to(part).view(1, -1, 1)

    if isinstance(state, tuple):
        return (zeroed(state[0]), zeroed(state[1]))
    return zeroed(state)


class LanguageModelTask:
    """One run of a language-model task: parallel streams of the training text, cut into
    windows of `bptt` tokens, the state carried from each window to the next."""

    metric = "loss"
    higher_is_better = False

    def __init__(
        self,
        kind: TextTask,
        config: LanguageModelTrainConfig,
        splits: TextSplits,
        tokenizer: Tokenizer,
        checkpoint_config: CheckpointConfig,
        ids: dict[str, torch.Tensor],
        everyday: dict[str, TypedText] | None = None,
    ) -> None:
        self.kind, self.config, self.splits, self.tokenizer = kind, config, splits, tokenizer
        self.checkpoint_config = checkpoint_config
        self.train_ids, self.valid_ids, self.test_ids = ids["train"], ids["valid"], ids["test"]
        # held-out everyday English (next-word with everyday_data): measured once, at the end
        self.everyday = everyday or {}
        self.state: State | None = None
        # a model that reads speakers: each training stream's speakers, as read from its start
        # (indices into `speaker_names`), computed for the first stream count asked for
        self.speaker_names: list[list[int]] | None = None
        self._speakers: tuple[int, torch.Tensor] | None = None

    def objective(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, LanguageModel)
        if model.config.speaker_dim:
            self.speaker_names = []
        return _Objective(model, self.speaker_names)

    def _stream_speakers(self, data: torch.Tensor) -> torch.Tensor:
        """(count, L) streams -> (count, L) speaker indices into `speaker_names`."""
        if self._speakers is None or self._speakers[0] != data.shape[0]:
            assert self.speaker_names is not None
            table: dict[str, int] = {}
            rows = []
            for row in data.tolist():
                names = names_of_ids(self.tokenizer, row)
                rows.append([-1 if n is None else table.setdefault(n, len(table)) for n in names])
            self.speaker_names[:] = [self.tokenizer.encode(name).ids for name in table]
            self._speakers = (data.shape[0], torch.tensor(rows, dtype=torch.long))
        return self._speakers[1]

    def steps_per_epoch(self, world: int) -> int:
        length = self.train_ids.numel() // (self.config.batch_size * world)
        steps = (length - 1 - self.config.bptt) // self.config.bptt
        limit = self.config.max_train_batches
        return min(steps, limit) if limit else steps

    def start_epoch(self) -> None:
        self.state = None

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, ...]]:
        every = streams(self.train_ids, self.config.batch_size * world)
        rows = slice(rank * self.config.batch_size, (rank + 1) * self.config.batch_size)
        data = every[rows]
        speakers = None
        if self.speaker_names is not None:
            speakers = self._stream_speakers(every)[rows]
        # a different window phase each epoch, so the same cut points do not recur
        offset = random.Random(self.config.seed * 1000 + epoch).randrange(self.config.bptt)
        for step in range(self.steps_per_epoch(world)):
            start = offset + step * self.config.bptt
            window = data[:, start : start + self.config.bptt + 1]
            if speakers is None:
                yield window[:, :-1], window[:, 1:]
            else:  # the speaker at each input position
                yield window[:, :-1], window[:, 1:], speakers[:, start : start + self.config.bptt]

    def loss(
        self, objective: nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, int]:
        inputs, targets = batch[0], batch[1]
        device = next(objective.parameters()).device
        state = None if self.state is None else detach_state(self.state)
        if state is not None and self.config.state_resets > 0:
            state = zero_rows(state, torch.rand(inputs.shape[0]) < self.config.state_resets)
        speakers = batch[2] if len(batch) > 2 else None
        loss, self.state = objective(inputs.to(device), targets.to(device), state, speakers)
        return loss, inputs.numel()

    def validate(self, model: nn.Module) -> dict[str, float]:
        assert isinstance(model, LanguageModel)
        return evaluate_ids(
            model,
            self.valid_ids,
            self.config.eval_batch_size,
            self.config.eval_bptt,
            self.config.max_eval_batches,
            speakers=speaker_inputs(model, self.tokenizer),  # fresh: the weights have moved
        )

    def finish(self, model: nn.Module) -> Finished:
        """Measure the test split once and sample the card's prompts."""
        assert isinstance(model, LanguageModel)
        device = next(model.parameters()).device
        card: dict[str, object] = {}
        checkpoint_config = self.checkpoint_config
        if self.config.fit_cache:
            valid = streams(self.valid_ids, self.config.eval_batch_size).to(device)
            cache, card["cache"] = fit_cache(
                model, valid, self.config.eval_bptt, self.config.max_eval_batches,
                speaker_inputs(model, self.tokenizer),
            )  # fmt: skip
            checkpoint_config = dataclasses.replace(checkpoint_config, cache=cache)
        test = self.kind.measure(
            model, self.tokenizer, checkpoint_config.cache, self.test_ids, self.splits.test,
            self.config,
        )  # fmt: skip
        everyday = {
            split: measure_words(
                model,
                self.tokenizer,
                text.ids.to(device),
                self.config,
                checkpoint_config.cache,
                text,
            )
            for split, text in self.everyday.items()
        }
        test.update({f"everyday_{k}": v for k, v in everyday.get("test", {}).items()})
        if self.kind.text_measure is not None:  # how the model reads a prompt, for choosing
            card["validation_text"] = self.kind.text_measure(
                model, self.tokenizer, self.splits.valid, checkpoint_config.cache
            )
        samples = card_samples(
            model, self.tokenizer, checkpoint_config.cache, self.config.sample_prompts,
            self.kind.sample_length, self.config.seed,
        )  # fmt: skip
        if samples:
            card["samples"] = samples
        if "valid" in everyday:
            card["everyday_validation"] = everyday["valid"]
        return Finished(checkpoint_config, test, self.splits.name, self.splits.sha256, card)


def card_samples(
    model: LanguageModel,
    tokenizer: Tokenizer,
    cache: CacheConfig | None,
    prompts: Sequence[str],
    length: int,
    seed: int,
) -> list[dict[str, str]]:
    """A few samples for the card, each prompt with its own seed (seed, seed + 1, ...)."""
    params = SamplingParams(temperature=0.8, top_k=0, top_p=0.95)
    speakers = speaker_inputs(model, tokenizer)
    out = []
    for number, prompt in enumerate(prompts):
        ids = tokenizer.read(prompt)  # as the service reads a prompt
        text = prompt
        generator = make_generator(seed + number)
        for token in generate_ids(model, ids, length, params, generator, cache, speakers):
            text += tokenizer.show(token, text)  # and shows what follows
        out.append(
            {
                "prompt": prompt,
                "seed": str(seed + number),
                "temperature": "0.8",
                "top_p": "0.95",
                "text": text,
            }
        )
    return out


def evaluate_ids(
    model: LanguageModel,
    ids: torch.Tensor,
    batch_size: int,
    bptt: int,
    max_batches: int = 0,
    top_k: tuple[int, ...] = (),
    words: torch.Tensor | None = None,
    cache: CacheConfig | None = None,
    typed: TypedText | None = None,
    speakers: SpeakerInputs | None = None,
) -> dict[str, float]:
    """Mean next-token loss in nats over every position (state carried), perplexity, bits per
    token, and top-k accuracy for each k asked for (needs full distributions: slower). With
    `words` (V,), True at the ids that are words, also what a person typing sees: top-3 counted
    on word targets among the 3 most likely words, and the share of the raw top-3 that is not
    a word (punctuation, line ends). With a `cache`, of the model and its continuous cache, as
    decoding computes them. With `typed` (the text `ids` is, as it was typed), also top-3 on
    every typed word, those outside the vocabulary included: `typed_word_top3_accuracy` with
    the cache's copies of such words among the suggestions, as the service makes them, and
    `typed_word_top3_vocabulary_only` without them. A model that reads speakers reads each
    stream's (`speakers`), as known from the stream's start."""
    device = next(model.parameters()).device
    data = streams(ids, batch_size).to(device)
    beside = speakers.of_ids(data) if speakers is not None else None
    memory = WindowedMemory(cache) if cache is not None else None
    nll, count = 0.0, 0
    hits = dict.fromkeys(top_k, 0)
    word_hits, word_targets, nonword_slots = 0, 0, 0
    is_word = words.to(device) if words is not None else None
    typed_data = streams(typed.typed, batch_size).to(device) if typed is not None else None
    typed_is_word = None  # (V + U,): which ids of the typed text are words
    if typed is not None and is_word is not None and top_k:
        typed_is_word = torch.cat([is_word, words_among(typed.outside).to(device)])
    held_typed: torch.Tensor | None = None  # (B, M): the typed ids of the pairs held
    typed_hits, vocabulary_hits, typed_targets, outside_targets = 0, 0, 0, 0
    with torch.inference_mode():
        for number, window in enumerate(read_windows(model, data, bptt, max_batches, beside)):
            hidden, targets = window.hidden, window.targets
            every_typed, flat_typed = None, None
            if typed_data is not None:  # the same positions, as typed
                start = number * bptt
                typed_targets_now = typed_data[:, start + 1 : start + 1 + targets.shape[1]]
                flat_typed = typed_targets_now.reshape(-1)
                if memory is not None:  # the memory's pairs, as the memory holds them
                    every_typed = typed_targets_now
                    if held_typed is not None:
                        every_typed = torch.cat([held_typed, typed_targets_now], 1)
                    held_typed = every_typed[:, -memory.config.window :]
            flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]).float(), targets.reshape(-1)
            target_log_probs = window.target_log_probs  # (B, T)
            copied = None
            if memory is not None:  # each position's shares of the pairs before it
                weights, every_id = memory.weights(hidden, targets)  # (B, T, K), (B, K)
                copy = target_copy(weights, every_id, targets)
                mass = weights.sum(-1)
                target_log_probs = mix(target_log_probs, copy, mass, memory.config.weight)
                copied = (weights.reshape(-1, weights.shape[-1]), every_id, targets.shape[1])
            nll -= float(target_log_probs.sum())
            count += flat_targets.numel()
            for chunk in range(0, flat.shape[0], 1024) if top_k else ():
                rows = slice(chunk, chunk + 1024)
                logits = model.logits(flat[rows])
                streams_of = None  # each row's stream, where the cache's pairs are per stream
                if copied is not None and memory is not None:
                    row_weights, every_id, steps = copied
                    streams_of = torch.arange(flat.shape[0], device=device)[rows] // steps
                    logits = mix_rows(
                        torch.log_softmax(logits.float(), -1), row_weights[rows],
                        every_id[streams_of], memory.config.weight,
                    )  # fmt: skip
                best = logits.topk(max(top_k), dim=-1).indices
                wanted = flat_targets[rows, None]
                for k in top_k:
                    hits[k] += int((best[:, :k] == wanted).any(-1).sum())
                if is_word is not None:
                    nonword_slots += int((~is_word[best[:, :3]]).sum())
                    target_is_word = is_word[wanted[:, 0]]  # (N,)
                    best_words = logits.masked_fill(~is_word, float("-inf")).topk(3, -1).indices
                    found = (best_words == wanted).any(-1) & target_is_word
                    word_hits += int(found.sum())
                    word_targets += int(target_is_word.sum())
                if typed_is_word is not None and flat_typed is not None and is_word is not None:
                    typed_wanted = flat_typed[rows]  # (N,)
                    counted = typed_is_word[typed_wanted]  # (N,): targets that are words
                    typed_targets += int(counted.sum())
                    outside_targets += int((counted & (typed_wanted >= is_word.numel())).sum())
                    in_vocabulary = (best_words == typed_wanted[:, None]).any(-1) & counted
                    vocabulary_hits += int(in_vocabulary.sum())
                    if streams_of is None:  # no cache: nothing to copy from
                        typed_hits += int(in_vocabulary.sum())
                        continue
                    assert every_typed is not None and memory is not None  # as streams_of
                    best_typed = typed_top3(
                        logits, is_word, row_weights[rows], every_typed[streams_of],
                        typed_wanted, memory.config.weight,
                    )  # fmt: skip
                    typed_hits += int((best_typed & counted).sum())
    loss = nll / max(1, count)
    metrics = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_token": loss / math.log(2),
        "tokens": float(count),
    }
    metrics.update({f"top{k}_accuracy": hits[k] / max(1, count) for k in top_k})
    if is_word is not None and top_k:
        metrics["word_top3_accuracy"] = word_hits / max(1, word_targets)
        metrics["word_targets"] = float(word_targets)
        metrics["nonword_top3_share"] = nonword_slots / max(1, 3 * count)
    if typed_is_word is not None:
        metrics["typed_word_top3_accuracy"] = typed_hits / max(1, typed_targets)
        metrics["typed_word_top3_vocabulary_only"] = vocabulary_hits / max(1, typed_targets)
        metrics["typed_outside_share"] = outside_targets / max(1, typed_targets)
        metrics["typed_word_targets"] = float(typed_targets)
    return metrics


def typed_candidates(
    log_probs: torch.Tensor,
    is_word: torch.Tensor,
    weights: torch.Tensor,
    pair_ids: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the service offers a person typing, as probabilities (N, V + U): the vocabulary's
    words (from the mixed log-probabilities (N, V), words only) and then the U words outside
    the vocabulary that the cache's pairs hold (`found` (U,), their typed ids, sorted). A pair
    whose typed id (N, K) is vocab_size + k copies that word with its share (N, K) times
    `weight`, as `models.cache.unknown_copies` does for the service."""
    vocab_size = log_probs.shape[-1]
    outside = pair_ids >= vocab_size  # (N, K)
    found = torch.unique(pair_ids[outside])  # (U,) sorted
    column = torch.full_like(pair_ids, found.numel())  # a spare column for the other pairs
    column[outside] = torch.searchsorted(found, pair_ids[outside])
    copies = torch.zeros(pair_ids.shape[0], found.numel() + 1, device=pair_ids.device)
    copies = copies.scatter_add_(1, column, weights.float())[:, :-1] * weight  # (N, U)
    words = log_probs.float().exp().masked_fill(~is_word, 0.0)  # (N, V)
    return torch.cat([words, copies], 1), found


def typed_top3(
    log_probs: torch.Tensor,
    is_word: torch.Tensor,
    weights: torch.Tensor,
    pair_ids: torch.Tensor,
    targets: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """Whether each typed target (N,) is among the 3 most likely of `typed_candidates`."""
    candidates, found = typed_candidates(log_probs, is_word, weights, pair_ids, weight)
    vocab_size = log_probs.shape[-1]
    best = candidates.topk(3, -1).indices  # (N, 3)
    wanted = torch.where(targets < vocab_size, targets, -1)  # (N,): a vocabulary word's column
    if found.numel():  # an outside word's column, where the pairs hold it
        place = torch.searchsorted(found, targets).clamp(max=found.numel() - 1)
        wanted = torch.where(found[place] == targets, vocab_size + place, wanted)
    return (best == wanted[:, None]).any(-1)


def measure_words(
    model: LanguageModel,
    tokenizer: Tokenizer,
    ids: torch.Tensor,
    config: LanguageModelTrainConfig,
    cache: CacheConfig | None = None,
    typed: TypedText | None = None,
) -> dict[str, float]:
    """Perplexity and top-k, and top-3 on word targets among words, on a stream of ids (of the
    model and its continuous cache, where it has one); with `typed`, on the words as typed."""
    return evaluate_ids(
        model, ids, config.eval_batch_size, config.eval_bptt, config.max_eval_batches,
        (1, 3), word_mask(tokenizer), cache, typed,
    )  # fmt: skip


def word_mask(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) True at the ids whose tokens are words."""
    return words_among([tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)])


def words_among(tokens: Sequence[str]) -> torch.Tensor:
    """(N,) True where the token is a word."""
    return torch.tensor([is_word(token) for token in tokens], dtype=torch.bool)


def _language_config(config: TrainConfig) -> LanguageModelTrainConfig:
    if not isinstance(config, LanguageModelTrainConfig):
        raise TypeError(
            f"a language-model task needs a LanguageModelTrainConfig, got {type(config).__name__}"
        )
    return config


def _fit_words(train: str) -> Tokenizer:
    return fit_word_tokenizer(
        train.splitlines(), "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT
    )


def _word_ids(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    if not isinstance(tokenizer, WordTokenizer):
        raise TypeError(f"next-word reads words; the tokenizer is a {tokenizer.kind} one")
    return word_ids(tokenizer, text)


def _cutoffs(config: LanguageModelTrainConfig, vocab_size: int) -> tuple[int, ...]:
    """The adaptive softmax cut-offs for this vocabulary: a smoke run's tiny vocabulary gets its
    own (a quarter and a half of it); otherwise the configured ones, which must fit."""
    asked: tuple[int, ...] = config.model["adaptive_cutoffs"]
    if config.smoke and asked:
        return (vocab_size // 4, vocab_size // 2)
    if any(c >= vocab_size - 1 for c in asked):
        raise ValueError(f"adaptive_cutoffs {asked} must be below the vocabulary size {vocab_size}")
    return asked


@dataclass(frozen=True)
class TextTask:
    """A language-model task behind the interface in `training.tasks`: `next-word` (words) and
    `generate` (characters) differ only in the fields below."""

    name: str
    sample: Path
    load: Callable[[LanguageModelTrainConfig], TextSplits]
    fit: Callable[[str], Tokenizer]  # the tokenizer from the training text
    encode: Callable[[Tokenizer, str], torch.Tensor]  # text -> ids (N,)
    top_k: tuple[int, ...]  # top-k accuracies the test split reports
    sample_length: int  # tokens sampled per prompt for the card
    # the test split is also read as short texts of this many tokens, each from nothing
    short_text_length: int
    # more test measures that read the test text itself (how the model reads its prompt)
    text_measure: (
        Callable[[LanguageModel, Tokenizer, str, CacheConfig | None], dict[str, float]] | None
    ) = None

    def build(self, config: TrainConfig) -> tuple[LanguageModelTask, nn.Module]:
        """Data, tokenizer (fitted on the training split), model and checkpoint config."""
        config = _language_config(config)
        splits = self.load(config)
        tokenizer = self.fit(splits.train)
        vocab_size = tokenizer.vocab_size
        model_config = config.model_config(
            vocab_size, adaptive_cutoffs=_cutoffs(config, vocab_size)
        )
        if getattr(model_config, "speaker_dim", 0) and not isinstance(tokenizer, CharTokenizer):
            raise SettingError(f"speaker_dim is a generate setting, not one of {self.name}")
        checkpoint_config = CheckpointConfig(
            task=self.name,
            model=model_config,
            tokenizer=tokenizer.kind,
            max_length=config.max_length,
            dtype=config.storage_dtype,
        )
        encoded = {split: self.encode(tokenizer, getattr(splits, split)) for split in SPLITS}
        everyday: dict[str, TypedText] = {}
        if config.everyday_data is not None:
            everyday, encoded["train"] = self.everyday_ids(config, tokenizer, encoded["train"])
        task = LanguageModelTask(
            self, config, splits, tokenizer, checkpoint_config, encoded, everyday
        )
        return task, build_model(model_config)

    def everyday_ids(
        self, config: LanguageModelTrainConfig, tokenizer: Tokenizer, train: torch.Tensor
    ) -> tuple[dict[str, TypedText], torch.Tensor]:
        """The held-out everyday reviews ("valid" and "test"), as read and as typed, and the
        training text with `everyday_tokens` of the training reviews after it (each batch's
        parallel streams then hold both, in proportion)."""
        if self.name != "next-word" or not isinstance(tokenizer, WordTokenizer):
            raise SettingError(f"everyday_data is a next-word setting, not one of {self.name}")
        assert config.everyday_data is not None
        everyday = load_everyday(config.everyday_data, config.seed)
        held = {
            "valid": typed_reviews(tokenizer, everyday.valid),
            "test": typed_reviews(tokenizer, everyday.test),
        }
        if config.everyday_tokens:
            mixed = encode_reviews(tokenizer, everyday.train, config.everyday_tokens)
            train = torch.cat([train, mixed])
        return held, train

    def measure(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        cache: CacheConfig | None,
        ids: torch.Tensor,
        text: str,
        config: LanguageModelTrainConfig,
    ) -> dict[str, float]:
        """The test metrics of a model (and its cache) on the test split's ids and text."""
        device = next(model.parameters()).device
        words = word_mask(tokenizer) if self.top_k else None
        speakers = speaker_inputs(model, tokenizer)

        def measured(with_cache: CacheConfig | None) -> dict[str, float]:
            return evaluate_ids(
                model, ids.to(device), config.eval_batch_size, config.eval_bptt,
                config.max_eval_batches, self.top_k, words, with_cache, speakers=speakers,
            )  # fmt: skip

        metrics = measured(cache)
        if cache is not None:  # what the cache buys: the model alone on the same text
            metrics["loss_without_cache"] = measured(None)["loss"]
        if self.short_text_length:
            metrics.update(
                short_texts(model, ids, cache, self.short_text_length, words, speakers=speakers)
            )
        if self.text_measure is not None:
            metrics.update(self.text_measure(model, tokenizer, text, cache))
        return metrics

    def evaluate(self, checkpoint: Checkpoint, config: TrainConfig) -> dict[str, float]:
        config = _language_config(config)
        if not isinstance(checkpoint.model, LanguageModel):
            raise TypeError(f"{checkpoint.name}: not a language model")
        text = self.load(config).test
        ids = self.encode(checkpoint.tokenizer, text)
        metrics = self.measure(
            checkpoint.model, checkpoint.tokenizer, checkpoint.config.cache, ids, text, config
        )
        if config.everyday_data is not None:
            # the test reviews as the card's test metrics name them, and the held-out training
            # reviews (what a run's card records as everyday_validation, for choosing)
            nothing = torch.zeros(0, dtype=torch.long)  # no training text to mix them into
            held, _ = self.everyday_ids(config, checkpoint.tokenizer, nothing)
            for split, prefix in (("test", "everyday_"), ("valid", "everyday_validation_")):
                measured = measure_words(
                    checkpoint.model, checkpoint.tokenizer, held[split].ids, config,
                    checkpoint.config.cache, held[split],
                )  # fmt: skip
                metrics.update({f"{prefix}{k}": v for k, v in measured.items()})
        return metrics


NEXT_WORD = TextTask(
    "next-word", SAMPLES / "wikitext-2-sample", load_word_splits, _fit_words, _word_ids, (1, 3), 40,
    30,
)  # fmt: skip
GENERATE = TextTask(
    "generate", SAMPLES / "tinyshakespeare-sample", load_char_splits, CharTokenizer.fit, char_ids,
    (), 300, 200, name_dependence,
)  # fmt: skip

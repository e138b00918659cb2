"""Continuous batching for generation: every active sequence advances by one token per batched step
of the recurrent cell; sampling stays per request (its own seeded generator), so a seed gives the
same text alone or inside a busy batch."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from models.architectures import LanguageModel
from models.cache import Memory
from models.config import CacheConfig, SamplingParams
from models.decoding import apply_penalties, make_generator, sample_next
from models.recurrent import State, concat_states, select_state, without_onednn
from models.speakers import SpeakerTracker, speaker_inputs
from models.tokenizers import Tokenizer
from service.engine.operations import Event, FinishEvent, TokenEvent, TokenLogprob
from service.prefix_cache import PrefixCache, ReadPrompt, read_prompts

logger = logging.getLogger("lstm_serve.generation")


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    params: SamplingParams
    seed: int
    stop: tuple[str, ...]
    emit: Callable[[Event], None]  # called on the engine's thread; must not block
    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float = math.inf  # time.monotonic(): past it the text so far is the answer
    logprobs: int | None = None  # None: none; k: each token's log-probability and top k


class StopScanner:
    """Holds back just enough text that a stop sequence split across tokens is never streamed."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add a piece; return (text safe to emit now, whether a stop sequence was reached)."""
        self.text += piece
        search_from = max(0, self.sent - self.hold)
        hits = [i for i in (self.text.find(s, search_from) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self._release(len(self.text)), True
        return self._release(max(self.sent, len(self.text) - self.hold)), False

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        out, self.sent = self.text[self.sent : upto], max(self.sent, upto)
        return out


@dataclass
class _Sequence:
    request: GenerationRequest
    generator: torch.Generator
    logits: torch.Tensor  # (V,) for the next token
    state: State
    scanner: StopScanner
    produced: int = 0
    last_token: int = 0
    counts: Counter[int] = field(default_factory=Counter)  # tokens generated, for the penalties
    pending: list[TokenLogprob] = field(default_factory=list)  # not yet sent with an event
    # the prompt's distinct tokens, for the repetition penalty (once, not at every step)
    prompt_tokens: frozenset[int] = frozenset()
    # with a continuous cache: the text's (hidden state, next token) pairs so far, and the hidden
    # state `logits` came from
    memory: Memory | None = None
    hidden: torch.Tensor | None = None
    # a model that reads speakers: who is speaking in the text so far, and that name's vector
    tracker: SpeakerTracker | None = None
    speaker: torch.Tensor | None = None

    def release(self) -> tuple[TokenLogprob, ...]:
        released, self.pending = tuple(self.pending), []
        return released


class GenerationScheduler:
    """Lives on the engine's inference thread; `submit` may be called from any thread."""

    def __init__(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        max_active: int,
        cache: PrefixCache | None,
        continuous: CacheConfig | None = None,
    ) -> None:
        self.model, self.tokenizer, self.max_active, self.cache = (
            model,
            tokenizer,
            max_active,
            cache,
        )
        self.continuous = continuous  # the checkpoint's continuous cache, if it has one
        self.speakers = speaker_inputs(model, tokenizer)  # None unless the model reads them
        self.device = next(model.parameters()).device
        self._incoming: deque[GenerationRequest] = deque()
        self._lock = threading.Lock()
        self._active: list[_Sequence] = []
        self._joined = 0  # sequences admitted since the last sample, first in _active
        # never sample the unknown or padding token: they have no text to show
        banned = {tokenizer.unk_id, tokenizer.pad_id} - {None}
        self._banned = torch.tensor(sorted(banned), dtype=torch.long, device=self.device)

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            self._incoming.append(request)

    def waiting(self) -> int:
        with self._lock:
            return len(self._incoming)

    def active(self) -> int:
        with self._lock:
            return len(self._active) + len(self._incoming)

    def admit(self) -> None:
        """Read the prompts of all waiting requests in one packed pass (up to max_active
        sequences running at once); they sample their first token at the next step."""
        with self._lock:
            free = self.max_active - len(self._active)
            taken = [self._incoming.popleft() for _ in range(min(free, len(self._incoming)))]
        waiting = []
        for request in taken:
            if request.cancelled.is_set():
                request.emit(FinishEvent("", 0, "cancelled"))
            else:
                waiting.append(request)
        if not waiting:
            return
        trackers = [SpeakerTracker() if self.speakers else None for _ in waiting]
        read: list[ReadPrompt | None]
        try:
            prompts = [r.prompt_ids for r in waiting]
            beside = self._prompt_speakers(prompts, trackers)
            read = list(
                read_prompts(self.model, prompts, self.cache, self.continuous, speakers=beside)
            )
        except Exception:  # read each alone, so one bad prompt fails only itself
            logger.exception("prefill of %d prompts failed", len(waiting))
            trackers = [SpeakerTracker() if self.speakers else None for _ in waiting]
            read = [self._read_alone(r, t) for r, t in zip(waiting, trackers, strict=True)]
        joining = []
        for request, prefix, tracker in zip(waiting, read, trackers, strict=True):
            if prefix is not None:
                generator = make_generator(request.seed)
                scanner = StopScanner(request.stop)
                sequence = _Sequence(request, generator, prefix.logits, prefix.state, scanner)
                sequence.memory, sequence.hidden = prefix.memory, prefix.hidden
                if self.speakers is not None and tracker is not None:
                    sequence.tracker, sequence.speaker = tracker, self.speakers.vector(tracker.name)
                if request.params.repetition_penalty != 1.0:
                    sequence.prompt_tokens = frozenset(request.prompt_ids)
                joining.append(sequence)
        # first in the next step's sampling loop: a new stream's first token is sent before the
        # running sequences' next ones (the loop over 31 of them took longer than a lone stream's
        # whole time to first token); each sequence has its own generator, so order changes no text
        self._active = joining + self._active
        self._joined += len(joining)

    def _prompt_speakers(
        self, prompts: list[list[int]], trackers: list[SpeakerTracker | None]
    ) -> list[torch.Tensor] | None:
        """Each prompt's speakers (T, S), its tracker left after the prompt; None for a model
        that reads none."""
        if self.speakers is None:
            return None
        return [
            self.speakers.of_text(ids, tracker)
            for ids, tracker in zip(prompts, trackers, strict=True)
        ]

    def _read_alone(
        self, request: GenerationRequest, tracker: SpeakerTracker | None
    ) -> ReadPrompt | None:
        try:
            prompt = [request.prompt_ids]
            beside = self._prompt_speakers(prompt, [tracker])
            return read_prompts(self.model, prompt, self.cache, self.continuous, speakers=beside)[0]
        except Exception as error:
            logger.exception("prefill failed")
            request.emit(FinishEvent("", 0, "error", type(error).__name__))
            return None

    def step(self) -> None:
        """Sample one token for every active sequence, then advance them all in one cell step."""
        self.sample()
        self.forward()

    @torch.inference_mode()
    def sample(self, joined_sent: Callable[[], None] | None = None) -> None:
        """Sample and emit one token for every active sequence (from the logits of its last
        step); the finished ones leave. An engine sends the tokens before it calls `forward`,
        and the first tokens of the sequences that just joined before the others are sampled
        (`joined_sent`, called once they are emitted)."""
        running: list[_Sequence] = []
        joined, self._joined = self._joined, 0
        for index, sequence in enumerate(self._active):
            if index == joined and joined and joined_sent is not None:
                joined_sent()
            if sequence.request.cancelled.is_set():
                sequence.request.emit(
                    FinishEvent(sequence.scanner.text, sequence.produced, "cancelled")
                )
                continue
            if self._advance(sequence):
                running.append(sequence)
        self._active = running

    @torch.inference_mode()
    def forward(self) -> None:
        """Advance every active sequence by the token it sampled, in one cell step."""
        running = self._active
        if not running:
            return
        tokens = torch.tensor([[s.last_token] for s in running], device=self.device)  # (B, 1)
        try:
            state = concat_states([s.state for s in running])
            beside = None
            if self.speakers is not None:  # each sequence's current speaker: (B, 1, S)
                beside = torch.stack([s.speaker for s in running if s.speaker is not None])[:, None]
            with without_onednn():
                hidden, new_state = self.model.features(tokens, state, speakers=beside)
                logits = self.model.logits(hidden)  # (B, 1, V)
        except Exception as error:  # the sequences of this step fail; the next step is clean
            logger.exception("generation step of %d sequences failed", len(running))
            for sequence in running:  # kept, they would go on from stale logits and state
                sequence.request.emit(
                    FinishEvent(
                        sequence.scanner.text, sequence.produced, "error", type(error).__name__
                    )
                )
            self._active = []
            return
        for row, sequence in enumerate(running):
            sequence.logits = logits[row, -1]
            if sequence.memory is not None:
                sequence.hidden = hidden[row, -1]
            sequence.state = select_state(new_state, torch.tensor([row], device=self.device))

    def _advance(self, sequence: _Sequence) -> bool:
        """Sample and emit one token; False when the sequence has finished."""
        request = sequence.request
        if time.monotonic() > request.deadline:
            return self._finish(sequence, "time_limit")
        distribution = sequence.logits
        if sequence.memory is not None and sequence.hidden is not None:
            distribution = sequence.memory.log_probs(distribution, sequence.hidden)
        allowed = distribution.index_fill(0, self._banned, float("-inf"))
        logits = apply_penalties(allowed, sequence.counts, request.params, sequence.prompt_tokens)
        token = sample_next(logits, request.params, sequence.generator)
        if sequence.memory is not None and sequence.hidden is not None:
            sequence.memory.add(sequence.hidden[None], torch.tensor([token]))
        sequence.counts[token] += 1
        piece = self.tokenizer.show(token, sequence.scanner.text)
        if sequence.tracker is not None and self.speakers is not None:
            speaking = sequence.tracker.name
            sequence.tracker.feed(piece)
            if sequence.tracker.name != speaking:  # the text has named a new speaker
                sequence.speaker = self.speakers.vector(sequence.tracker.name)
        if request.logprobs is not None:
            entry = self._logprob(allowed, token, piece, sequence.scanner.text, request.logprobs)
            sequence.pending.append(entry)
        sequence.produced += 1
        sequence.last_token = token
        safe, stopped = sequence.scanner.feed(piece)
        if safe:
            request.emit(TokenEvent(safe, token, sequence.produced - 1, sequence.release()))
        if stopped:
            request.emit(
                FinishEvent(
                    sequence.scanner.text,
                    sequence.produced,
                    "stop_sequence",
                    logprobs=sequence.release(),
                )
            )
            return False
        if sequence.produced >= request.max_new_tokens:
            return self._finish(sequence, "length")
        return True

    def _finish(self, sequence: _Sequence, reason: str) -> bool:
        """End a sequence with the text it has: what the stop scanner still held back is sent
        first (no stop sequence can follow)."""
        tail = sequence.scanner.flush()
        if tail:
            sequence.request.emit(
                TokenEvent(tail, sequence.last_token, sequence.produced - 1, sequence.release())
            )
        released = sequence.release()
        sequence.request.emit(
            FinishEvent(sequence.scanner.text, sequence.produced, reason, logprobs=released)
        )
        return False

    def _logprob(
        self, logits: torch.Tensor, token: int, piece: str, before: str, top: int
    ) -> TokenLogprob:
        """The token's log-probability and the `top` most likely tokens at its place, each as
        the text it would have added after `before`; logits (V,) with the tokens that are never
        sampled (unknown, padding) at -inf."""
        log_probs = torch.log_softmax(logits.float(), -1)  # (V,)
        alternatives: tuple[tuple[str, float], ...] = ()
        if top:
            best = log_probs.topk(top)
            alternatives = tuple(
                (self.tokenizer.show(int(i), before), round(float(v), 6))
                for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
            )
        return TokenLogprob(piece, round(float(log_probs[token]), 6), alternatives)

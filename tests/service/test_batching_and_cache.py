"""Engine correctness (not speed): batched equals unbatched, cached equals cold, a seed gives the
same text alone and inside a busy batch, stop sequences never leak into a stream."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.architectures import LanguageModel
from models.config import SamplingParams
from models.tokenizers import CharTokenizer
from service.engine.operations import Event, FinishEvent, TokenEvent
from service.generation import GenerationRequest, GenerationScheduler, StopScanner
from service.inference import (
    GROUP_SIZE,
    MAX_PADDING,
    NextWordQuery,
    length_groups,
    next_word_distributions,
)
from service.prefix_cache import PrefixCache, read_prefixes
from tests.service.support import run_generations, tiny_language_model

TEXT = "to be or not to be, that is the question\n"


def _cold(model: LanguageModel, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]))
    return torch.log_softmax(logits[0, -1], dim=-1)


def test_cached_prefix_gives_exactly_the_cold_answer() -> None:
    model, cache = tiny_language_model(), PrefixCache(1 << 20)
    short, long = [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7]
    read_prefixes(model, [short], cache)[0]
    warm, _ = read_prefixes(model, [long], cache)[0]
    torch.testing.assert_close(warm, _cold(model, long), rtol=0, atol=1e-5)
    assert (cache.hits, cache.misses, cache.tokens_saved) == (1, 1, 4)
    again, _ = read_prefixes(model, [long], cache)[0]
    assert torch.equal(again, warm) and cache.hits == 2


def test_cache_stays_within_its_byte_budget_evicting_least_recent() -> None:
    model = tiny_language_model()
    one_entry = PrefixCache(1 << 20)
    read_prefixes(model, [[1]], one_entry)[0]
    cache = PrefixCache(one_entry.bytes * 2)
    for first in (1, 2, 3):
        read_prefixes(model, [[first, 5]], cache)[0]
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    assert cache.longest([1, 5])[0] == 0  # the oldest went first
    assert cache.longest([3, 5, 9])[0] == 2


def test_cache_counts_the_memory_its_entries_keep_alive() -> None:
    """Entries read in one batch are rows of batched tensors; the cache must hold compact copies,
    or each entry keeps the whole batch alive while counting one row (a 30x overrun was seen)."""
    model, cache = tiny_language_model(), PrefixCache(1 << 30)
    read_prefixes(model, [[1, 2], [3], [4, 5, 6], [7, 8]], cache)
    alive = {}
    for entry in cache._entries.values():
        tensors = [
            entry.logits,
            *(entry.state if isinstance(entry.state, tuple) else [entry.state]),
        ]
        for tensor in tensors:
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
            alive[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    assert cache.bytes == sum(alive.values())


def test_batched_next_word_with_cache_hits_equals_each_cold() -> None:
    model, cache = tiny_language_model(), PrefixCache(1 << 20)
    contexts = [[1, 2, 3], [1, 2, 3, 4, 5], [7], [9, 8, 7, 6, 5, 4]]
    read_prefixes(model, [[1, 2, 3]], cache)[0]  # an exact hit, a partial hit and two misses below
    queries = [NextWordQuery(c, None, 0, 3) for c in contexts]
    batched = next_word_distributions(model, queries, cache)
    for context, got in zip(contexts, batched, strict=True):
        torch.testing.assert_close(got, _cold(model, context), rtol=0, atol=1e-5)


def _request(
    prompt: list[int], seed: int, events: list[Event], stop: tuple[str, ...] = ()
) -> GenerationRequest:
    return GenerationRequest(prompt, 30, SamplingParams(temperature=1.0), seed, stop, events.append)


def test_seed_gives_the_same_text_alone_and_in_a_busy_batch() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    prompt = tokenizer.encode("to be").ids
    alone: list[Event] = []
    run_generations(GenerationScheduler(model, tokenizer, 8, None), [_request(prompt, 42, alone)])
    busy: list[Event] = []
    others = [
        _request(tokenizer.encode(p).ids, s, []) for p, s in (("that", 1), ("q", 2), ("or not", 3))
    ]
    run_generations(
        GenerationScheduler(model, tokenizer, 8, PrefixCache(1 << 20)),
        [others[0], _request(prompt, 42, busy), *others[1:]],
    )
    assert alone[-1] == busy[-1]
    assert isinstance(alone[-1], FinishEvent) and alone[-1].tokens == 30
    assert "".join(e.text for e in alone if isinstance(e, TokenEvent)) == alone[-1].text


def test_cancelled_sequence_leaves_at_the_next_step() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    scheduler = GenerationScheduler(tiny_language_model(tokenizer.vocab_size), tokenizer, 8, None)
    events: list[Event] = []
    request = _request([1, 2], 0, events)
    scheduler.submit(request)
    scheduler.admit()
    scheduler.step()
    request.cancelled.set()
    scheduler.step()
    assert scheduler.active() == 0
    assert isinstance(events[-1], FinishEvent) and events[-1].finish_reason == "cancelled"


def test_stop_scanner_never_streams_a_stop_split_across_tokens() -> None:
    scanner = StopScanner(("\n\nROMEO",))
    streamed = ""
    for piece in ["Good night", "\n", "\n", "RO", "ME", "O: more"]:
        safe, stopped = scanner.feed(piece)
        streamed += safe
        if stopped:
            break
    assert stopped and streamed == "Good night" == scanner.text


def test_stop_scanner_releases_held_text_at_the_end() -> None:
    scanner = StopScanner(("xyz",))
    emitted = scanner.feed("abcx")[0] + scanner.feed("y")[0] + scanner.flush()
    assert emitted == "abcxy"


def test_length_groups_keep_padding_small_and_every_index_once() -> None:
    assert MAX_PADDING == 0.2  # the expected groups below are cut at 20% padding
    lengths = [30, 3, 100, 4, 29, 5, 98, 31, *[3] * (GROUP_SIZE + 1)]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        width = max(lengths[i] for i in group)
        assert len(group) <= GROUP_SIZE
        assert width * len(group) - sum(lengths[i] for i in group) <= 0.2 * width * len(group)
    # GROUP_SIZE threes fill a group; 5 would pad [3, 3, 4] by 25%, so it starts its own
    expected = [[3] * GROUP_SIZE, [3, 3, 4], [5], [29, 30, 31], [98, 100]]
    assert [sorted(lengths[i] for i in g) for g in groups] == expected


def test_prompts_read_together_and_a_bad_one_fails_alone() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    scheduler = GenerationScheduler(model, tokenizer, 8, None)
    good: list[Event] = []
    bad: list[Event] = []
    scheduler.submit(_request(tokenizer.encode("to be").ids, 1, good))
    scheduler.submit(_request([tokenizer.vocab_size + 5], 2, bad))  # an id the model does not have
    scheduler.admit()
    assert scheduler.active() == 1
    assert isinstance(bad[-1], FinishEvent) and bad[-1].finish_reason == "error"
    alone: list[Event] = []
    run_generations(
        GenerationScheduler(model, tokenizer, 8, None),
        [_request(tokenizer.encode("to be").ids, 1, alone)],
    )
    while scheduler.active():
        scheduler.admit()
        scheduler.step()
    assert good[-1] == alone[-1]


def test_a_joining_streams_first_token_is_out_before_the_running_ones_are_sampled() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    scheduler = GenerationScheduler(tiny_language_model(tokenizer.vocab_size), tokenizer, 8, None)
    order: list[str] = []

    def emit_as(name: str) -> Callable[[Event], None]:
        return lambda event: order.append(name)

    for seed in (1, 2):
        scheduler.submit(
            GenerationRequest([1, 2], 30, SamplingParams(), seed, (), emit_as("running"))
        )
    scheduler.admit()
    scheduler.step()
    order.clear()
    scheduler.submit(GenerationRequest([3, 4], 30, SamplingParams(), 3, (), emit_as("joining")))
    scheduler.admit()
    scheduler.sample(joined_sent=lambda: order.append("sent"))
    assert order == ["joining", "sent", "running", "running"]
    scheduler.forward()
    order.clear()
    scheduler.sample(joined_sent=lambda: order.append("sent"))  # nobody joined: no early send
    assert order == ["joining", "running", "running"]


def test_a_generation_step_runs_without_onednn_and_a_prompts_read_with_it() -> None:
    """One time step is faster on PyTorch's own CPU kernels, a prompt's read on oneDNN's
    (models/recurrent.py, `without_onednn`); the switch is back on after the step."""
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    onednn: list[bool] = []  # at each call of the recurrent stack
    model.rnn.register_forward_pre_hook(
        lambda module, inputs: onednn.append(torch._C._get_mkldnn_enabled())
    )
    scheduler = GenerationScheduler(model, tokenizer, 8, None)
    scheduler.submit(_request(tokenizer.encode("to be or").ids, 0, []))
    scheduler.admit()  # reads the prompt
    scheduler.step()  # samples its first token, then one step
    assert onednn == [True, False]
    assert torch._C._get_mkldnn_enabled()


def test_a_word_typed_after_a_cached_text_is_read_without_onednn() -> None:
    """A read of one new token from a cached state is one time step (without oneDNN); a longer
    read keeps it (service/prefix_cache.py)."""
    model, cache = tiny_language_model(), PrefixCache(1 << 20)
    onednn: list[bool] = []
    model.rnn.register_forward_pre_hook(
        lambda module, inputs: onednn.append(torch._C._get_mkldnn_enabled())
    )
    read_prefixes(model, [[1, 2, 3]], cache)  # three tokens: oneDNN
    read_prefixes(model, [[1, 2, 3, 4]], cache)  # one more from the cached state: without
    read_prefixes(model, [[1, 2, 3, 4, 5, 6]], cache)  # two more: oneDNN
    assert onednn == [True, False, True]
    assert torch._C._get_mkldnn_enabled()
    torch.testing.assert_close(
        read_prefixes(model, [[1, 2, 3, 4]], None)[0][0], cache.longest([1, 2, 3, 4])[1].logits
    )

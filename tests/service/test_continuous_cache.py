"""A model with a continuous cache is served as it is measured: a seed gives the same text alone,
in a busy batch and from cached prefixes (with their memories), and the log-probabilities the
engine reports are those of the mixed distribution, as evaluation computes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel
from models.cache import WindowedMemory
from models.checkpoint import load_checkpoint
from models.config import CacheConfig, SamplingParams
from models.tokenizers import CharTokenizer
from service.engine.operations import Event, FinishEvent, TokenEvent
from service.generation import GenerationRequest, GenerationScheduler
from service.inference import (
    NextWordQuery,
    build_query,
    next_word_distributions,
    read_next_words,
    suggest,
)
from service.prefix_cache import PrefixCache
from tests.service.conftest import SettingsFactory
from tests.service.support import (
    busy_and_cached,
    run_generations,
    serve,
    tiny_language_model,
    token_ids,
)
from training.language import typed_candidates

SHIPPED = Path(__file__).resolve().parents[2] / "artifacts"
TEXT = "to be or not to be, that is the question\n"
CACHE = CacheConfig(window=12, theta=20.0, weight=0.5)  # a window the text outgrows


def _request(prompt: list[int], seed: int, events: list[Event]) -> GenerationRequest:
    params = SamplingParams(temperature=1.0)
    return GenerationRequest(prompt, 40, params, seed, (), events.append, logprobs=0)


def _evaluated(model: LanguageModel, text: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """The mixed log-probabilities (1, T, V) at each position of text (1, T), as evaluation
    computes them, `next_ids` (1, T) being the token after each."""
    with torch.inference_mode():
        hidden, _ = model.features(text)
        log_probs = torch.log_softmax(model.logits(hidden), -1)
        return WindowedMemory(CACHE).log_probs(log_probs, hidden, next_ids)


def _alone(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    prompt: list[int],
    seed: int,
    prefixes: PrefixCache | None = None,
    continuous: CacheConfig | None = CACHE,
) -> list[Event]:
    """The events of one generation, alone in its scheduler."""
    events: list[Event] = []
    scheduler = GenerationScheduler(model, tokenizer, 8, prefixes, continuous)
    run_generations(scheduler, [_request(prompt, seed, events)])
    return events


def test_a_seed_gives_one_text_alone_in_a_batch_and_from_cached_prefixes() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    prompt = tokenizer.encode("to be or not").ids
    expected = token_ids(_alone(model, tokenizer, prompt, 42))
    without = _alone(model, tokenizer, prompt, 42, continuous=None)
    assert expected != token_ids(without)  # the cache changes the text of this model

    prefixes = PrefixCache(1 << 24)
    scheduler = GenerationScheduler(model, tokenizer, 8, prefixes, CACHE)
    others = (tokenizer.encode("that").ids, tokenizer.encode("q").ids)
    busy, again = busy_and_cached(scheduler, _request, prompt, 5, others, 42)
    assert prefixes.hits >= 1
    assert busy == expected
    assert again == expected  # the whole prompt cached


def test_a_one_token_prompt_starts_with_an_empty_memory() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    for cache in (None, PrefixCache(1 << 24)):  # read cold, then from the cached entry
        finish = _alone(model, tokenizer, [3], 0, cache)[-1]
        assert isinstance(finish, FinishEvent) and finish.finish_reason == "length"
        assert finish.tokens == 40


def test_reported_log_probabilities_are_the_mixed_distributions() -> None:
    tokenizer = CharTokenizer.fit(TEXT)
    model = tiny_language_model(tokenizer.vocab_size)
    prompt = tokenizer.encode("to be or not to").ids
    events = _alone(model, tokenizer, prompt, 3)
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    reported = [
        entry.logprob for e in events if isinstance(e, TokenEvent) for entry in e.logprobs
    ] + [entry.logprob for entry in finish.logprobs]
    generated = token_ids(events)
    text = torch.tensor([prompt + generated])  # (1, T)
    mixed = _evaluated(model, text[:, :-1], text[:, 1:])  # (1, T-1, V)
    # the engine never samples the unknown token: its distribution is the rest, renormalised
    mixed = torch.log_softmax(mixed.index_fill(2, torch.tensor([tokenizer.unk_id]), -torch.inf), -1)
    picked = mixed[0, len(prompt) - 1 :].gather(1, torch.tensor(generated)[:, None])[:, 0]
    assert len(reported) == len(generated) == 40
    torch.testing.assert_close(torch.tensor(reported), picked, rtol=0, atol=1e-4)


def test_the_service_generates_with_the_checkpoints_cache_unless_turned_off(
    make_settings: SettingsFactory,
) -> None:
    body = {"prompt": "ROMEO:\n", "max_new_tokens": 60, "seed": 5, "temperature": 1.0}
    texts, shown = [], []
    for setting in (True, False):
        with serve(make_settings(continuous_cache=setting)) as client:
            models = {m["name"]: m for m in client.get("/models").json()["models"]}
            shown.append(models["generate"]["continuous_cache"])
            assert models["sentiment"]["continuous_cache"] is None  # a classifier has none
            texts.append(client.post("/generate", json=body).json()["text"])
    assert shown == [{"window": 64, "theta": 20.0, "weight": 0.1, "floor": 0.5}, None]
    assert texts[0] != texts[1]


def test_next_word_distributions_mix_the_texts_cache_cold_and_from_cached_prefixes() -> None:
    model = tiny_language_model(30)
    contexts = [[1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2], [7, 8, 9, 7, 8], [4]]
    expected = []
    for ids in contexts:
        text = torch.tensor([ids])
        # the distribution after the last token: next_ids beyond the text are never read
        after = torch.cat([text[:, 1:], text[:, :1]], 1)
        expected.append(_evaluated(model, text, after)[0, -1])
    queries = [NextWordQuery(ids, None, 0, 3) for ids in contexts]
    prefixes = PrefixCache(1 << 24)
    next_word_distributions(model, [NextWordQuery(contexts[0][:6], None, 0, 3)], prefixes, CACHE)
    for cache in (None, prefixes, prefixes):  # cold; a partial hit and two misses; exact hits
        got = next_word_distributions(model, queries, cache, CACHE)
        for one, want in zip(got, expected, strict=True):
            torch.testing.assert_close(one, want, rtol=0, atol=1e-5)
    assert prefixes.hits >= 4
    plain = next_word_distributions(model, queries[:1], None)[0]
    assert not torch.allclose(plain, expected[0], atol=1e-3)  # the cache changes it


def test_words_outside_the_vocabulary_are_copied_as_evaluation_counts_them() -> None:
    """The service offers a word of the text that the vocabulary lacks with the probability the
    cache copies it with (what the model reads as <unk>, id 0 here), and evaluation's typed
    measure ranks the same numbers, also once the text outgrows the window and from a cached
    prefix."""
    model = tiny_language_model(30)
    words = {3: "Zork", 8: "Blip", 13: "Zork", 17: "Zork", 21: "Quux"}
    ids = [5, 6, 7, 0, 9, 5, 6, 7, 0, 9, 5, 6, 7, 0, 9, 5, 6, 0, 9, 5, 6, 0, 7, 5, 6, 7]
    outside = tuple(words.get(j) for j in range(len(ids)))
    query = NextWordQuery(ids, None, len(words), 3, outside=outside)
    # evaluation: the typed ids (30 + k for the k-th outside word), the last position's shares
    typed_ids = {"Zork": 30, "Blip": 31, "Quux": 32}
    typed = [typed_ids[w] if w else i for i, w in zip(ids, outside, strict=True)]
    pairs = torch.tensor([[*typed[1:], 0]])  # the pairs' typed ids, as the memory holds them
    with torch.inference_mode():
        hidden, _ = model.features(torch.tensor([ids]))
        log_probs = torch.log_softmax(model.logits(hidden), -1)
        weights, _ = WindowedMemory(CACHE).weights(hidden, pairs)
    every_word = torch.ones(30, dtype=torch.bool)
    expected, found = typed_candidates(
        log_probs[0, -1:], every_word, weights[0, -1:], pairs, CACHE.weight
    )
    want = {w: float(expected[0, 30 + found.tolist().index(t)]) for w, t in typed_ids.items()}
    assert {w for w, p in want.items() if p > 0} == {"Zork", "Quux"}  # Blip left the window
    prefixes = PrefixCache(1 << 24)
    first = NextWordQuery(ids[:9], None, 1, 3, outside=outside[:9])
    read_next_words(model, [first], prefixes, CACHE)
    for cache in (None, prefixes):  # read whole; from the cached prefix's memory
        got = read_next_words(model, [query], cache, CACHE)[0].copies
        assert set(got) == {"Zork", "Quux"}
        for word, probability in got.items():
            assert probability == pytest.approx(want[word], abs=1e-6)
    assert prefixes.hits >= 1
    assert read_next_words(model, [query], None, None)[0].copies == {}  # no cache, no copies


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_shipped_next_word_model_copies_names_alike_on_cuda() -> None:
    text = (
        "Mr. Bennet was a man of quick parts. Mr. Bingley was good-looking and gentlemanlike. "
        "His friend Mr. Darcy soon drew the attention of the room. Mr. Bingley danced every "
        "dance, while Mr. Darcy danced only once. Mr. Bennet said to his wife that Mr."
    )
    answers = {}
    for device in ("cpu", "cuda"):
        checkpoint = load_checkpoint(SHIPPED / "next-word", device=device)
        assert isinstance(checkpoint.model, LanguageModel)
        query = build_query(checkpoint, text, 3, 4096, copies=True)
        read = read_next_words(checkpoint.model, [query], None, checkpoint.config.cache)[0]
        answers[device] = (suggest(checkpoint, query, read.log_probs, read.copies), read.copies)
    (cpu, cpu_copies), (cuda, cuda_copies) = answers["cpu"], answers["cuda"]
    assert [s.word for s in cuda.suggestions] == [s.word for s in cpu.suggestions]
    assert {"Bingley", "Darcy"} <= {s.word for s in cpu.suggestions} | set(cpu_copies)
    assert cuda_copies.keys() == cpu_copies.keys()
    for word, probability in cpu_copies.items():
        assert cuda_copies[word] == pytest.approx(probability, abs=1e-4)

"""The continuous cache: token by token (decoding) equals window by window (evaluation), its
distributions are distributions, it copies what followed a matching state, a weight of 0 changes
no text, and a checkpoint carries it (and refuses a malformed one by name)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel, SequenceClassifier
from models.cache import Memory, WindowedMemory, mix, target_copy
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import CacheConfig, ClassifierConfig, LanguageModelConfig, SamplingParams
from models.decoding import generate_ids, make_generator
from models.format import CONFIG, FILES, MANIFEST, CheckpointConfig, InvalidConfigError, sha256_file
from models.tokenizers import CharTokenizer

CPU = torch.device("cpu")


def _stream(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model log-probabilities (2, 23, 7), hidden states (2, 23, 8), next tokens (2, 23)."""
    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(2, 23, 7, generator=generator), -1)
    hidden = torch.randn(2, 23, 8, generator=generator)
    return log_probs, hidden, torch.randint(0, 7, (2, 23), generator=generator)


@pytest.mark.parametrize(("window", "floor"), [(1, None), (5, None), (100, None), (5, 0.3)])
def test_token_by_token_equals_window_by_window(window: int, floor: float | None) -> None:
    config = CacheConfig(window, 3.0, 0.2, floor)
    log_probs, hidden, ids = _stream()
    windowed, targets = WindowedMemory(config), WindowedMemory(config)
    whole, picked = [], []
    for start in range(0, 23, 6):  # windows of 6, the last one shorter
        part = slice(start, start + 6)
        whole.append(windowed.log_probs(log_probs[:, part], hidden[:, part], ids[:, part]))
        own = log_probs[:, part].gather(2, ids[:, part, None])[..., 0]
        # the targets alone, as evaluation mixes them
        weights, pairs = targets.weights(hidden[:, part], ids[:, part])
        copy = target_copy(weights, pairs, ids[:, part])
        picked.append(mix(own, copy, weights.sum(-1), config.weight))
    mixed = torch.cat(whole, 1)  # (2, 23, 7)
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 23))
    torch.testing.assert_close(mixed.gather(2, ids[..., None])[..., 0], torch.cat(picked, 1))
    for row in range(2):
        memory = Memory(config, 8, CPU)
        for t in range(23):
            # logits shifted by a constant: the cache normalises them itself
            got = memory.log_probs(log_probs[row, t] + 3.0, hidden[row, t])
            torch.testing.assert_close(got, mixed[row, t], rtol=0, atol=1e-5)
            memory.add(hidden[row, t : t + 1], ids[row, t : t + 1])
            if t == 11:
                memory = memory.copy()  # a copy goes on exactly as the original would
        assert memory.size == min(window, 23)


def test_the_first_position_has_nothing_to_copy_and_keeps_the_models_distribution() -> None:
    log_probs, hidden, ids = _stream()
    mixed = WindowedMemory(CacheConfig(10, 3.0, 0.5)).log_probs(log_probs, hidden, ids)
    torch.testing.assert_close(mixed[:, 0], log_probs[:, 0])
    assert not torch.allclose(mixed[:, 1:], log_probs[:, 1:])


def test_it_copies_the_token_that_followed_the_matching_state() -> None:
    config = CacheConfig(10, 50.0, 0.3)
    memory = Memory(config, 4, CPU)
    memory.add(torch.eye(4)[:2] * 7.0, torch.tensor([3, 5]))  # state e0 -> token 3, e1 -> 5
    uniform = torch.zeros(6)
    probs = memory.log_probs(uniform, torch.tensor([2.0, 0.0, 0.0, 0.0])).exp()  # like e0
    weight_on_first = 1 / (1 + math.exp(-50.0))  # softmax of cosines 1 and 0, sharpened
    assert float(probs[3]) == pytest.approx(0.7 / 6 + 0.3 * weight_on_first, abs=1e-6)
    assert float(probs[5]) == pytest.approx(0.7 / 6 + 0.3 * (1 - weight_on_first), abs=1e-6)
    assert float(probs[0]) == pytest.approx(0.7 / 6, abs=1e-6)


def _model(vocab: int) -> LanguageModel:
    torch.manual_seed(0)
    config = LanguageModelConfig(vocab_size=vocab, embed_dim=8, hidden_dim=16, num_layers=2)
    return LanguageModel(config).eval()


def test_a_floor_leaves_weak_matches_nearly_the_models_distribution() -> None:
    memory = Memory(CacheConfig(10, 20.0, 0.3, floor=0.9), 4, CPU)
    memory.add(torch.eye(4)[:2], torch.tensor([3, 5]))  # two states, unlike the query below
    uniform = torch.zeros(6)
    weak = memory.log_probs(uniform, torch.tensor([0.0, 0.0, 1.0, 0.0])).exp()  # cosines 0, 0
    share = 1 / (2 + math.exp(20.0 * 0.9))  # each pair's against the sentinel
    assert float(weak[3]) == pytest.approx((1 - 0.3 * 2 * share) / 6 + 0.3 * share, abs=1e-6)
    assert float(weak[0]) == pytest.approx(1 / 6, abs=1e-6)  # all but nothing stays the model's
    strong = memory.log_probs(uniform, torch.tensor([1.0, 0.0, 0.0, 0.0])).exp()  # cosine 1: e0
    assert float(strong[3]) > 0.7 / 6 + 0.3 * 0.9  # past the floor, most of the weight copies


def test_a_weight_of_zero_changes_no_text_and_a_real_one_does() -> None:
    model = _model(12)
    params = SamplingParams(temperature=1.0)

    def text(cache: CacheConfig | None) -> list[int]:
        return list(generate_ids(model, [1, 2, 3, 1, 2], 60, params, make_generator(7), cache))

    assert text(CacheConfig(50, 20.0, 0.0)) == text(None)
    assert text(CacheConfig(50, 20.0, 0.6)) != text(None)
    assert text(CacheConfig(50, 20.0, 0.6)) == text(CacheConfig(50, 20.0, 0.6))  # seeded


def test_a_checkpoint_carries_its_cache_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.fit("to be or not to be")
    model = _model(tokenizer.vocab_size)
    for cache in (CacheConfig(1000, 20.0, 0.07, floor=0.8), CacheConfig(1000, 20.0, 0.07)):
        config = CheckpointConfig("generate", model.config, "char", 256, cache=cache)
        save_checkpoint(tmp_path, model, config, tokenizer, {})
        assert load_checkpoint(tmp_path).config.cache == cache
    data = json.loads((tmp_path / CONFIG).read_text())
    assert data["cache"] == {"window": 1000, "theta": 20.0, "weight": 0.07}  # no floor: none
    for bad, said in [
        ({"window": 0, "theta": 20.0, "weight": 0.1}, "cache.window must be from 1"),
        ({"window": 10, "theta": 20.0, "weight": 1.0}, "cache.weight must be in [0, 1)"),
        ({"window": 10, "theta": -1.0, "weight": 0.1}, "cache.theta must be in (0, 1000]"),
        ({"window": 10, "theta": 20.0}, "cache must be an object of window, theta, weight and"),
        ({"window": 10, "theta": 20.0, "weight": 0.1, "floor": 1.5}, "cache.floor must be a"),
    ]:
        (tmp_path / CONFIG).write_text(json.dumps({**data, "cache": bad}))
        lines = [f"{sha256_file(tmp_path / name)}  {name}\n" for name in FILES]
        (tmp_path / MANIFEST).write_text("".join(lines))
        with pytest.raises(InvalidConfigError, match=r"config\.json") as raised:
            load_checkpoint(tmp_path)
        assert said in str(raised.value)


def test_a_classifier_with_a_cache_is_refused_by_name(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.fit("to be or not to be")
    classifier = SequenceClassifier(ClassifierConfig(vocab_size=tokenizer.vocab_size))
    cache = CacheConfig(10, 20.0, 0.1)
    config = CheckpointConfig("sentiment", classifier.config, "char", 64, ("a", "b"), cache=cache)
    save_checkpoint(tmp_path, classifier, config, tokenizer, {})
    with pytest.raises(InvalidConfigError, match="a cache belongs to a language model"):
        load_checkpoint(tmp_path)

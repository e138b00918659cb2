"""Decoding: seeds reproduce text, filters keep exactly the allowed tokens, stops are found."""

from __future__ import annotations

import pytest
import torch

from models.architectures import LanguageModel, LanguageModelConfig
from models.decoding import (
    SamplingParams,
    filter_logits,
    find_stop,
    generate_ids,
    make_generator,
    sample_next,
    top_k_next,
)


def _model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LanguageModelConfig(vocab_size=25, embed_dim=8, hidden_dim=16)).eval()


def test_same_seed_same_text_other_seed_other_text() -> None:
    model, params = _model(), SamplingParams(temperature=1.0)
    run = lambda seed: list(generate_ids(model, [1, 2, 3], 40, params, make_generator(seed)))  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)
    assert len(run(7)) == 40


def test_greedy_generation_matches_argmax_of_a_full_pass() -> None:
    model = _model()
    ids = list(generate_ids(model, [4, 5], 6, SamplingParams(temperature=0), make_generator(0)))
    sequence = [4, 5]
    for _ in range(6):
        logits, _ = model(torch.tensor([sequence]))
        sequence.append(int(logits[0, -1].argmax()))
    assert ids == sequence[2:]


def test_top_k_next_orders_probabilities() -> None:
    probs, ids = top_k_next(torch.tensor([0.0, 3.0, 1.0, 2.0]), 3)
    assert ids.tolist() == [1, 3, 2]
    assert probs[0] > probs[1] > probs[2]


def test_top_k_and_top_p_keep_exactly_the_allowed_tokens() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda p: torch.isfinite(filter_logits(logits, p)).nonzero().flatten().tolist()  # noqa: E731
    assert kept(SamplingParams(top_k=2)) == [0, 1]
    assert kept(SamplingParams(top_p=0.5)) == [0]
    assert kept(SamplingParams(top_p=0.8)) == [0, 1]
    assert kept(SamplingParams(top_p=0.81)) == [0, 1, 2]


def test_samples_only_from_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = make_generator(1)
    draws = {sample_next(logits, SamplingParams(top_k=2), generator) for _ in range(200)}
    assert draws == {0, 1}


@pytest.mark.parametrize(
    "bad", [{"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_sampling_params_reject_out_of_range(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)  # type: ignore[arg-type]


def test_find_stop_returns_earliest() -> None:
    assert find_stop("abc\n\nROMEO:", ["ROMEO", "\n\n"]) == 3
    assert find_stop("abc", ["x", ""]) == -1

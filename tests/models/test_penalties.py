"""Presence and frequency penalties: exact arithmetic on the logits, bounds, and a greedy loop that
a penalty breaks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from models.config import SamplingParams
from models.decoding import apply_penalties


def test_penalties_subtract_presence_once_and_frequency_per_count() -> None:
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0, float("-inf")])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    penalised = apply_penalties(logits, Counter({1: 2, 3: 1, 4: 3}), params)
    assert penalised.tolist() == [1.0, 1.0, 3.0, 3.25, float("-inf")]
    assert logits.tolist() == [1.0, 2.0, 3.0, 4.0, float("-inf")]  # the input is unchanged


def test_negative_penalties_favour_generated_tokens() -> None:
    params = SamplingParams(presence_penalty=-1.0, frequency_penalty=-0.5)
    assert apply_penalties(torch.zeros(3), {2: 2}, params).tolist() == [0.0, 0.0, 2.0]


def test_no_penalty_or_nothing_generated_leaves_the_logits() -> None:
    logits = torch.arange(4.0)
    assert apply_penalties(logits, {1: 3}, SamplingParams()) is logits
    assert apply_penalties(logits, {}, SamplingParams(frequency_penalty=1.0)) is logits


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [-2.01, 2.01])
def test_penalties_are_bounded(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be in \\[-2, 2\\]"):
        SamplingParams(**{name: value})  # type: ignore[arg-type]


def test_repetition_penalty_lowers_prompt_and_generated_tokens_either_sign() -> None:
    logits = torch.tensor([2.0, -2.0, 4.0, -4.0, 1.0])
    params = SamplingParams(repetition_penalty=2.0)
    penalised = apply_penalties(logits, Counter({2: 1}), params, prompt_ids=[0, 1, 1])
    # 0 and 1 from the prompt, 2 generated: positive halved, negative doubled; 3 and 4 untouched
    assert penalised.tolist() == [1.0, -4.0, 2.0, -4.0, 1.0]
    # below 1 favours them instead
    favoured = apply_penalties(logits, {}, SamplingParams(repetition_penalty=0.5), prompt_ids=[0])
    assert favoured.tolist() == [4.0, -2.0, 4.0, -4.0, 1.0]


@pytest.mark.parametrize("value", [0.0, -1.0, 2.01])
def test_repetition_penalty_is_bounded(value: float) -> None:
    with pytest.raises(ValueError, match="repetition_penalty must be in \\(0, 2\\]"):
        SamplingParams(repetition_penalty=value)


def test_a_greedy_loop_is_broken_by_the_repetition_penalty() -> None:
    # a toy model that always prefers the token it just saw: greedy repeats it for ever
    logits = torch.tensor([0.5, 3.0, 2.0])
    seen: Counter[int] = Counter()
    picks = []
    for _ in range(3):
        token = int(apply_penalties(logits, seen, SamplingParams(repetition_penalty=2.0)).argmax())
        seen[token] += 1
        picks.append(token)
    assert picks == [1, 2, 1]  # without the penalty: [1, 1, 1]

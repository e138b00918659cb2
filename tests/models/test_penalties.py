"""Presence and frequency penalties: exact arithmetic on the logits, bounds, and a greedy loop that
a penalty breaks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from models.decoding import SamplingParams, apply_penalties


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

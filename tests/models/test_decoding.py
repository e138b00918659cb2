"""Decoding: seeds reproduce text, filters keep exactly the allowed tokens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.architectures import LanguageModel
from models.config import LanguageModelConfig, SamplingParams
from models.decoding import (
    MIN_TEMPERATURE,
    filter_logits,
    generate_ids,
    make_generator,
    sample_next,
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


def _nucleus_ok(logits: torch.Tensor, params: SamplingParams, token: int) -> bool:
    """Whether `token` may be sampled: among the top-k of the logits, and the mass of the tokens
    more likely than it (at this temperature) is below top_p; always true of the most likely."""
    values = logits.double()
    if token == int(values.argmax()) or values[token] == values.max():
        return True
    if params.top_k and int((values > values[token]).sum()) >= params.top_k:
        return False
    probs = torch.softmax(values / max(params.temperature, MIN_TEMPERATURE), dim=-1)
    return float(probs[values > values[token]].sum()) < params.top_p + 1e-9


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    logits=st.lists(st.floats(-1e4, 1e4, width=32, allow_nan=False), min_size=2, max_size=40),
    temperature=st.one_of(
        st.floats(0.0, 5.0), st.floats(0.0, 1e-30), st.sampled_from([1e-40, 1e-45, 5e-324])
    ),
    top_k=st.integers(0, 50),
    top_p=st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1e-46, 5e-324])),
    seed=st.integers(0, 2**32),
)
def test_every_accepted_parameter_samples_from_the_allowed_tokens(
    logits: list[float], temperature: float, top_k: int, top_p: float, seed: int
) -> None:
    """Over the whole range the API accepts (temperature 0-5, top_k 0-100,000, top_p in (0, 1]),
    tiny values included: the token is never NaN's fall-through, always in top-k and the nucleus."""
    values = torch.tensor(logits, dtype=torch.float32)
    params = SamplingParams(temperature, top_k, top_p)
    token = sample_next(values, params, make_generator(seed))
    assert 0 <= token < len(logits)
    assert _nucleus_ok(values, params, token), (token, values.tolist())


@pytest.mark.parametrize("params", [SamplingParams(temperature=1e-40), SamplingParams(top_p=1e-46)])
def test_tiny_temperature_or_top_p_is_greedy_not_the_last_token(params: SamplingParams) -> None:
    """Both once gave the last vocabulary token whatever the logits (float32 underflow, NaN)."""
    logits = torch.tensor([0.5, 3.0, 1.0, 2.0])
    assert [sample_next(logits, params, make_generator(seed)) for seed in range(20)] == [1] * 20


def test_nan_logits_are_never_sampled() -> None:
    logits = torch.tensor([float("nan"), 1.0, float("nan"), 0.5])
    tokens = {sample_next(logits, SamplingParams(), make_generator(seed)) for seed in range(50)}
    assert tokens <= {1, 3}
    with pytest.raises(ValueError, match="no usable value"):
        sample_next(torch.full((3,), float("nan")), SamplingParams(), make_generator(0))

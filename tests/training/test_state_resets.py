"""Streams whose carried state is zeroed during training (`state_resets`): a generation starts
from nothing and a short prompt, which a model trained only on carried state never saw."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from training.__main__ import main
from training.config import LanguageModelTrainConfig
from training.language import LanguageModelTask, zero_rows


def test_zero_rows_starts_the_chosen_streams_afresh_and_keeps_the_others() -> None:
    h, c = torch.randn(2, 4, 3), torch.randn(2, 4, 3)  # (layers, streams, hidden)
    rows = torch.tensor([True, False, True, False])
    pair = zero_rows((h, c), rows)
    assert isinstance(pair, tuple)
    for old, new in zip((h, c), pair, strict=True):
        assert torch.equal(new[:, rows], torch.zeros(2, 2, 3))
        assert torch.equal(new[:, ~rows], old[:, ~rows])
    gru = torch.randn(1, 4, 3)  # a GRU's state is one tensor
    single = zero_rows(gru, rows)
    assert isinstance(single, torch.Tensor)
    assert torch.equal(single[:, ~rows], gru[:, ~rows])
    assert not single[:, rows].any()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_reset_stream_computes_as_if_nothing_came_before(share: float) -> None:
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=11, embed_dim=4, hidden_dim=8)).eval()
    config = LanguageModelTrainConfig(state_resets=share)
    ids = {split: torch.arange(40) % 11 for split in ("train", "valid", "test")}
    task = LanguageModelTask(
        cast(Any, None), config, cast(Any, None), cast(Any, None), cast(Any, None), ids
    )
    objective = task.objective(model)
    inputs, targets = torch.randint(0, 11, (2, 2, 5))
    task.loss(objective, (inputs, targets))  # the first window leaves a state to carry
    fresh, _ = objective(inputs, targets, None)
    carried = task.loss(objective, (inputs, targets))[0]
    assert torch.allclose(carried, fresh) == (share == 1.0)


def test_a_share_outside_zero_to_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--smoke", "--state-resets", "1.5"]) == 1
    assert capsys.readouterr().err == (
        "python -m training generate: state_resets must be within 0..1, got 1.5\n"
    )

"""The measure of how much a character model reads the speaker's name in its prompt."""

from __future__ import annotations

import math

import pytest
import torch

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from models.tokenizers import CharTokenizer
from training.speakers import name_dependence, speeches

PLAY = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nAnd then take hands:\nno more.\n\n"
    "First Citizen:\nWe are accounted poor citizens.\n"
)


def test_speeches_start_after_a_blank_line_with_a_name() -> None:
    found = speeches(PLAY, 10)
    assert [name for name, _ in found] == ["ROMEO", "JULIET", "First Citizen"]
    assert found[0][1] == "But soft, "


def test_a_model_that_reads_the_name_scores_above_one_that_cannot() -> None:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit(PLAY)
    config = LanguageModelConfig(vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=16)
    model = LanguageModel(config).eval()
    reads = name_dependence(model, tokenizer, PLAY, length=10)
    assert reads["name_pairs"] == 3
    assert reads["name_kl_nats_per_char"] > 0
    assert reads["speech_loss_own_name"] != reads["speech_loss_other_name"]
    # with its forget gates shut and no recurrent weights, the model keeps nothing of the name
    with torch.no_grad():
        for name, parameter in model.rnn.named_parameters():
            if name.startswith("weight_hh"):
                parameter.zero_()
            if name.startswith("bias_ih"):
                parameter[16:32] = -1e4  # LSTM gate order: input, forget, cell, output
    forgets = name_dependence(model, tokenizer, PLAY, length=10)
    assert forgets["name_kl_nats_per_char"] < 1e-9
    # the name changes nothing, so either name predicts the speech equally; an untrained model
    # is near log(vocabulary size) nats per character
    assert forgets["speech_loss_own_name"] == pytest.approx(forgets["speech_loss_other_name"])
    assert forgets["speech_loss_own_name"] == pytest.approx(math.log(tokenizer.vocab_size), rel=0.2)

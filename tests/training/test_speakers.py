"""The measure of how much a character model reads the speaker's name in its prompt."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from models.tokenizers import CharTokenizer
from training.__main__ import main
from training.config import LanguageModelTrainConfig
from training.language import GENERATE, LanguageModelTask
from training.speakers import name_dependence, speaker_targets, speeches
from training.text import TextSplits, char_ids

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


def test_speaker_targets_name_each_speech_from_the_end_of_its_name_line() -> None:
    play = PLAY + "\nROMEO:\nShe speaks.\n"
    targets, names = speaker_targets(play, min_speeches=2)
    assert names == ["ROMEO"]  # JULIET and First Citizen speak once: no class of their own
    first_speech = play.index("But soft")
    assert targets[first_speech - 1] == 0  # the name line's newline: the name has been read
    assert (targets[first_speech - 1 : play.index("\n\nJULIET")] == 0).all()
    assert (targets[: first_speech - 1] == -1).all()  # reading the name: not known yet
    # Juliet's speech, the blank line before it and her name line: no class
    assert (targets[play.index("\n\nJULIET") : play.index("\n\nFirst Citizen")] == -1).all()
    second = play.index("She speaks")
    assert (targets[second - 1 :] == 0).all()
    assert (targets[play.index("\nROMEO:\nShe") : second - 1] == -1).all()
    everyone, named = speaker_targets(play, min_speeches=1)
    assert named == ["First Citizen", "JULIET", "ROMEO"]
    assert everyone[play.index("O Romeo")] == 1
    assert len(everyone) == len(play)


def _task(text: str, speaker_loss: float) -> LanguageModelTask:
    tokenizer = CharTokenizer.fit(text)
    ids = {split: char_ids(tokenizer, text) for split in ("train", "valid", "test")}
    splits = TextSplits(text, text, text, "play", {})
    config = LanguageModelTrainConfig(speaker_loss=speaker_loss, batch_size=2, bptt=8)
    return LanguageModelTask(GENERATE, config, splits, tokenizer, cast(Any, None), ids)


def test_each_batch_names_the_speaker_of_each_input_position() -> None:
    text = (PLAY + "\n") * 6  # each speaker has 6 speeches
    task = _task(text, 0.5)
    targets, names = speaker_targets(text)
    assert task.speaker_names == names == ["First Citizen", "JULIET", "ROMEO"]
    half = len(text) // 2  # two streams: the text's halves
    for step, (inputs, _, speakers) in enumerate(task.batches(epoch=0, rank=0, world=1)):
        for row in range(2):
            # where this window starts in the text: find it by its characters
            window = task.tokenizer.decode(inputs[row].tolist())
            start = text.index(window, row * half + step * 8)
            assert torch.equal(speakers[row], targets[start : start + 8])


def test_the_speaker_loss_adds_a_weighted_classifier_loss() -> None:
    torch.manual_seed(0)
    text = (PLAY + "\n") * 6
    task = _task(text, 0.5)
    model = LanguageModel(
        LanguageModelConfig(vocab_size=task.tokenizer.vocab_size, embed_dim=8, hidden_dim=16)
    )
    objective = task.objective(model).eval()  # no dropout: the three computations agree
    # a window with positions of no known speaker (between speeches): they must not count
    inputs, targets, speakers = next(
        batch for batch in task.batches(epoch=0, rank=0, world=1) if (batch[2] < 0).any()
    )
    with torch.no_grad():
        with_speakers, _ = objective(inputs, targets, None, speakers)
        alone, _ = objective(inputs, targets, None)  # the next character's loss only
        hidden, _ = model.features(inputs)
        named = objective.speaker_head(hidden.reshape(-1, 16))
    known = speakers.reshape(-1) >= 0
    expected = nn.functional.cross_entropy(named[known], speakers.reshape(-1)[known])
    assert known.any() and not known.all()
    assert float(with_speakers) == pytest.approx(float(alone + 0.5 * expected), rel=1e-5)
    # the classifier is the objective's, never the model's: the checkpoint does not carry it
    assert not any(name.startswith("speaker") for name in model.state_dict())
    assert "speaker_head.weight" in objective.state_dict()
    assert _task(text, 0.0).objective(model).speaker_head is None


def test_the_speaker_loss_needs_a_play_and_characters(
    wikitext_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="no speaker with 5 speeches"):
        _task("No speakers here, only prose.\n" * 20, 0.5)
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--speaker-loss", "0.5"]
    assert main(argv) == 1
    assert "speaker_loss is a generate setting" in capsys.readouterr().err
    assert main(["generate", "--smoke", "--speaker-loss", "-1"]) == 1
    assert "speaker_loss must be 0 or more, got -1.0" in capsys.readouterr().err

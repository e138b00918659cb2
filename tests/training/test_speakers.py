"""The measure of how much a character model reads the speaker's name in its prompt."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from models.speakers import names_of_ids
from models.tokenizers import CharTokenizer
from tests.training.conftest import SMOKE_FLAGS
from training.__main__ import evaluate, main
from training.config import LanguageModelTrainConfig
from training.language import GENERATE, streams
from training.speakers import name_dependence, speeches, unigram_name_gain

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
    assert forgets["speech_own_name_better"] == 0.5
    assert forgets["speech_loss_own_name"] == pytest.approx(math.log(tokenizer.vocab_size), rel=0.2)


def test_each_training_stream_names_its_speakers_as_read_from_its_start(
    shakespeare_file: Path,
) -> None:
    config = LanguageModelTrainConfig(
        data=str(shakespeare_file), batch_size=3, bptt=16, model={"speaker_dim": 4}
    )
    task, model = GENERATE.build(config)
    assert isinstance(model, LanguageModel)
    task.objective(model)
    every = streams(task.train_ids, 3)  # (3, L): what the three streams read
    named = [names_of_ids(task.tokenizer, row) for row in every.tolist()]
    assert any(name is not None for row in named for name in row)
    # each epoch's windows start at a phase of its own (LanguageModelTask.batches)
    offset = random.Random(config.seed * 1000).randrange(16)
    for step, (inputs, _, speakers) in enumerate(task.batches(epoch=0, rank=0, world=1)):
        assert task.speaker_names is not None
        start = offset + step * 16
        assert torch.equal(inputs, every[:, start : start + 16])
        for row in range(3):
            window = [
                None if index < 0 else task.tokenizer.decode(task.speaker_names[index])
                for index in speakers[row].tolist()
            ]
            assert window == named[row][start : start + 16]


def test_a_run_that_reads_speakers_is_measured_as_its_card_says(
    shakespeare_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    flags = ["--data", str(shakespeare_file), *SMOKE_FLAGS, "--speaker-dim", "4"]
    assert (
        main(["generate", *flags, "--run-dir", str(tmp_path / "run"), "--export-dir", str(out)])
        == 0
    )
    card = json.loads((out / "card.json").read_text())
    measured = evaluate(str(out), str(shakespeare_file), threads=1, device="cpu")
    rounded = {k: round(v, 4) for k, v in measured.items()}
    assert rounded == {k: round(v, 4) for k, v in card["metrics"]["test"].items()}
    assert card["config"]["speaker_dim"] == 4


def test_speaker_dim_is_a_setting_of_the_character_model(
    wikitext_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--speaker-dim", "4"]
    assert main(argv) == 1
    assert "speaker_dim is a generate setting, not one of next-word" in capsys.readouterr().err


def test_a_name_is_worth_more_where_speakers_use_words_of_their_own() -> None:
    def play(lines: dict[str, str], repeats: int) -> str:
        return "".join(
            f"\n\n{name}:\n{line}\n" for _ in range(repeats) for name, line in lines.items()
        )

    own = {"ROMEO": "love love Juliet love", "KING": "crown crown France war"}
    shared = {"ROMEO": "the day is long", "KING": "the day is long"}
    assert unigram_name_gain(play(own, 20), play(own, 3)) > 0.05
    assert unigram_name_gain(play(shared, 20), play(shared, 3)) < 1e-3

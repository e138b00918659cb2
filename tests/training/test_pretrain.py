"""The classifier's language-model pretraining: each direction predicts its neighbour, the
classifier starts from what the stage learnt, and the card records it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.architectures import SequenceClassifier
from models.checkpoint import load_checkpoint
from models.config import ClassifierConfig
from training.__main__ import main
from training.config import resolve_config
from training.pretrain import BidirectionalLM, plain_lines

VOCAB = 24  # ids 2..23 are words; 0 pads, 1 is unknown


def _trained_loss(sequences: torch.Tensor, bidirectional: bool) -> float:
    """The language-model loss of a tiny classifier's first layer after training on `sequences`
    (B, T) for 300 steps, measured on the last batch."""
    torch.manual_seed(0)
    config = ClassifierConfig(
        vocab_size=VOCAB, embed_dim=16, hidden_dim=32, bidirectional=bidirectional
    )
    model = BidirectionalLM(SequenceClassifier(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    lengths = torch.full((sequences.shape[1],), sequences.shape[2])
    loss = torch.tensor(0.0)
    for step in range(300):
        loss, _ = model(sequences[step % len(sequences)], lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_direction_predicts_its_neighbour_not_the_token_itself(bidirectional: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    # text where every word fixes the next and the one before (a cycle through the words):
    # both directions can learn it to a loss near 0
    starts = torch.randint(0, VOCAB - 2, (10, 16, 1), generator=generator)
    cycle = (starts + torch.arange(20)) % (VOCAB - 2) + 2  # (10, 16, 20)
    assert _trained_loss(cycle, bidirectional) < 0.3
    # words drawn independently: nothing beats guessing, log 22 = 3.09 nats, unless a direction
    # saw the word it predicts (a shifted target would train to near 0 here as above)
    noise = torch.randint(2, VOCAB, (10, 16, 20), generator=generator)
    assert _trained_loss(noise, bidirectional) > 0.9 * math.log(VOCAB - 2)


def test_padding_is_never_predicted_or_read() -> None:
    torch.manual_seed(0)
    model = BidirectionalLM(SequenceClassifier(ClassifierConfig(vocab_size=VOCAB, hidden_dim=8)))
    model.eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    with torch.no_grad():
        loss, count = model(tokens, torch.tensor([3, 5]))
        alone, alone_count = model(tokens[:1, :3], torch.tensor([3]))
        rest, rest_count = model(tokens[1:], torch.tensor([5]))
    assert count == 2 * (2 + 4)  # each direction: length - 1 predictions per row
    mixed = (float(alone) * alone_count + float(rest) * rest_count) / (alone_count + rest_count)
    assert float(loss) == pytest.approx(mixed, rel=1e-5)


def test_wikitext_markup_is_undone_for_the_classifier() -> None:
    text = " = Valkyria = \n\n The well @-@ known <unk> sold 1 @,@ 000 copies . \n = = Plot = = \n"
    assert plain_lines(text) == ["The well-known sold 1,000 copies ."]


def _run(data: Path, out: Path, *flags: str) -> Path:
    main(
        [
            "sentiment",
            "--smoke",
            "--data",
            str(data),
            "--run-dir",
            str(out),
            "--export-dir",
            str(out / "checkpoint"),
            *flags,
        ]
    )
    return out / "checkpoint"


def test_a_run_pretrains_then_classifies_and_records_it(
    sentiment_dir: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "extra.txt"
    corpus.write_text(" = Heading = \n a wonderful , moving film \n a dull , tedious mess \n")
    # a learning rate of 0 for the classifier keeps the weights the stage left
    pretrained = _run(
        sentiment_dir,
        tmp_path / "pre",
        "--pretrain-epochs",
        "1",
        "--pretrain-data",
        str(corpus),
        "--lr",
        "0",
    )
    plain = _run(sentiment_dir, tmp_path / "plain", "--lr", "0")
    card = json.loads((pretrained / "card.json").read_text())
    record = card["pretraining"]
    assert record["paragraphs"] == 2 and record["pretrain_data"] == str(corpus)
    assert record["steps"] > 0 and record["validation_curve"][-1]["lm_loss"] > 0
    assert (tmp_path / "pre" / "pretrain" / "resume.pt").is_file()
    assert "pretraining" not in json.loads((plain / "card.json").read_text())
    # same seed and data: only the stage can have moved the embeddings and the first layer
    a, b = load_checkpoint(pretrained).model, load_checkpoint(plain).model
    assert not torch.equal(a.embedding.weight, b.embedding.weight)
    assert torch.equal(a.head.weight, b.head.weight)  # the head is not pretrained


def test_pretraining_and_a_starting_checkpoint_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrain_epochs and init_from"):
        resolve_config("sentiment", None, {"pretrain_epochs": 2, "init_from": str(tmp_path)})
    with pytest.raises(ValueError, match="pretrain_epochs must be 0 or more"):
        resolve_config("sentiment", None, {"pretrain_epochs": -1})

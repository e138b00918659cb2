"""Everyday English for the next-word model: reviews read into the corpus's words, some mixed
into the training text, held-out ones measured beside the test split and reproduced by
`evaluate`."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.tokenizers import EOS, UNK, fit_word_tokenizer
from models.wordtext import WIKITEXT
from training.__main__ import evaluate, main
from training.config import LanguageModelTrainConfig, resolve_config, smoke_overrides
from training.data import read_labeled
from training.everyday import encode_reviews, load_everyday, typed_reviews
from training.language import GENERATE, NEXT_WORD, typed_top3

WORD_MEASURES = {"perplexity", "word_top3_accuracy", "word_targets", "nonword_top3_share"}


def _config(data: Path, **settings: object) -> LanguageModelTrainConfig:
    config = smoke_overrides(resolve_config("next-word", None, {"data": str(data), "smoke": True}))
    assert isinstance(config, LanguageModelTrainConfig)
    return dataclasses.replace(config, **settings)  # type: ignore[arg-type]


def test_held_out_reviews_never_join_the_training_text(sentiment_dir: Path) -> None:
    everyday = load_everyday(sentiment_dir, seed=0)
    train = {e.text for e in read_labeled(sentiment_dir / "train.jsonl")}
    assert len(everyday.valid) == 4 and len(everyday.train) == 44  # a tenth of 48, held out
    assert not set(everyday.valid) & set(everyday.train)
    assert set(everyday.valid) | set(everyday.train) == train
    assert everyday.test == [e.text for e in read_labeled(sentiment_dir / "test.jsonl")]


def test_everyday_tokens_of_training_reviews_follow_the_training_text(
    wikitext_dir: Path, sentiment_dir: Path
) -> None:
    alone, _ = NEXT_WORD.build(_config(wikitext_dir))
    mixed, _ = NEXT_WORD.build(
        _config(wikitext_dir, everyday_data=str(sentiment_dir), everyday_tokens=300)
    )
    base = alone.train_ids.numel()
    assert torch.equal(mixed.train_ids[:base], alone.train_ids)
    reviews = load_everyday(sentiment_dir).train
    added = encode_reviews(mixed.tokenizer, reviews, 300)
    assert 300 <= added.numel() < 300 + max(len(mixed.tokenizer.read(r)) for r in reviews)
    assert torch.equal(mixed.train_ids[base:], added)
    assert int(added[0]) == mixed.tokenizer.eos_id  # each review opens as the service reads it
    # measured without training on them: the validation and test reviews, never the mixed ones
    assert set(mixed.everyday) == {"valid", "test"}


def test_a_run_with_everyday_data_measures_it_and_evaluate_reproduces_it(
    wikitext_dir: Path, sentiment_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--run-dir", str(tmp_path)]
    argv += ["--export-dir", str(export), "--everyday-data", str(sentiment_dir)]
    argv += ["--everyday-tokens", "300"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    card = json.loads((export / "card.json").read_text())
    test = card["metrics"]["test"]
    assert {k.removeprefix("everyday_") for k in test if k.startswith("every")} >= WORD_MEASURES
    assert set(card["everyday_validation"]) >= WORD_MEASURES
    assert card["config"]["everyday_tokens"] == 300
    again = {k: round(v, 4) for k, v in evaluate(str(export), str(wikitext_dir), 1, "cpu").items()}
    assert {k: v for k, v in again.items() if k in test} == {
        k: round(v, 4) for k, v in test.items()
    }
    validation = {
        k.removeprefix("everyday_validation_"): v for k, v in again.items() if k not in test
    }
    assert validation == {k: round(v, 4) for k, v in card["everyday_validation"].items()}


def test_evaluate_measures_everyday_text_for_any_next_word_checkpoint(
    wikitext_dir: Path, sentiment_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--run-dir", str(tmp_path)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--export-dir", str(export)]) == 0
    plain = evaluate(str(export), str(wikitext_dir), 1, "cpu")
    assert not any(k.startswith("everyday_") for k in plain)
    # the test reviews and the held-out training ones, each with every word measure
    measured = evaluate(str(export), str(wikitext_dir), 1, "cpu", str(sentiment_dir))
    assert {k: v for k, v in measured.items() if not k.startswith("everyday_")} == plain
    assert (
        measured["everyday_word_targets"] > 0 and measured["everyday_validation_word_targets"] > 0
    )
    assert {k.removeprefix("everyday_validation_") for k in measured} >= WORD_MEASURES
    assert 0 <= measured["everyday_word_top3_accuracy"] <= 1
    assert load_checkpoint(export).config.task == "next-word"


def test_everyday_data_is_a_next_word_setting(sentiment_dir: Path, shakespeare_file: Path) -> None:
    config = smoke_overrides(
        resolve_config("generate", None, {"data": str(shakespeare_file), "smoke": True})
    )
    config = dataclasses.replace(config, everyday_data=str(sentiment_dir))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="next-word setting"):
        GENERATE.build(config)


def test_evaluate_says_so_when_the_cards_reviews_are_not_there(
    wikitext_dir: Path, sentiment_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (reviews / name).write_bytes((sentiment_dir / name).read_bytes())
    export = tmp_path / "export"
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--run-dir", str(tmp_path)]
    argv += ["--export-dir", str(export), "--everyday-data", str(reviews)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    for name in ("train.jsonl", "test.jsonl"):
        (reviews / name).unlink()
    reviews.rmdir()
    capsys.readouterr()
    measured = evaluate(str(export), str(wikitext_dir), 1, "cpu")
    assert not any(k.startswith("everyday_") for k in measured)
    assert f"measured the reviews in {reviews}, not found here" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--everyday-tokens", "1000"], "everyday_tokens needs everyday_data"),
        (["--everyday-tokens", "-5", "--everyday-data", "."], "must be 0 or more, got -5"),
    ],
)
def test_everyday_tokens_without_reviews_or_below_zero_is_refused(
    wikitext_dir: Path,
    tmp_path: Path,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--run-dir", str(tmp_path)]
    assert main([*argv, *flags]) == 1
    assert message in capsys.readouterr().err


def test_typed_reviews_are_read_as_the_service_reads_them_and_keep_their_words() -> None:
    words = fit_word_tokenizer(
        ["the film was good <eos>"], "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT
    )
    reviews = ["The film was Zorkish.", "", "Zorkish film, Blipful film"]
    typed = typed_reviews(words, reviews)
    assert torch.equal(typed.ids, encode_reviews(words, reviews))
    assert typed.outside == ["Zorkish", ".", ",", "Blipful"]  # as typed; <unk> when read
    size = words.vocab_size
    outside = typed.typed >= size
    assert torch.equal(typed.ids[outside], torch.full((int(outside.sum()),), words.unk_id))
    assert typed.typed[outside].tolist() == [size, size + 1, size, size + 2, size + 3]


def test_typed_top3_counts_a_copied_word_outside_the_vocabulary() -> None:
    vocab = 5  # ids 0-4; typed ids 5 and 6 are two words outside the vocabulary
    log_probs = torch.log(torch.tensor([[0.1, 0.4, 0.3, 0.15, 0.05]] * 3))
    is_word = torch.tensor([False, True, True, True, True])  # id 0 is <unk>
    pairs = torch.tensor([[5, 6, 2], [5, 6, 2], [2, 2, 2]])  # each row's held pairs, typed
    shares = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [1.0, 0.0, 0.0]])
    targets = torch.tensor([5, 6, 5])
    # row 0: word 5 copied with 0.5 * 0.9 = 0.45, above every word of the vocabulary; row 1:
    # word 6's 0.025 is below the three best (0.4, 0.3, 0.15); row 2: word 5 is not held
    hits = typed_top3(log_probs, is_word, shares, pairs, targets, 0.5)
    assert hits.tolist() == [True, False, False]
    vocabulary = typed_top3(log_probs, is_word, shares, pairs, torch.tensor([1, 4, 3]), 0.5)
    assert vocabulary.tolist() == [True, False, True]  # row 0: 5 (0.45), 1, 2 outrank 4 and 3
    assert vocab == log_probs.shape[1]


def test_read_text_measures_a_text_file_as_typed_with_and_without_the_cache(
    wikitext_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export"
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--run-dir", str(tmp_path)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--export-dir", str(export)]) == 0
    novel = tmp_path / "novel.txt"
    novel.write_text("Mr. Zorblax came .\n\n" + "Then Mr. Zorblax said the first word .\n\n" * 40)
    capsys.readouterr()
    assert main(["read-text", str(export), str(novel), "--start", "0.5"]) == 0
    measured = json.loads(capsys.readouterr().out)
    # the second half: 20 paragraphs of 7 words ("." is no word) and the end of one more
    assert measured["typed_word_targets"] == pytest.approx(20 * 7 + 3, abs=3)
    assert measured["typed_outside_share"] > 0.05  # Zorblax, a word no vocabulary has
    for prefix in ("", "without_cache_"):
        assert 0 <= measured[f"{prefix}typed_word_top3_accuracy"] <= 1
        assert measured[f"{prefix}typed_word_targets"] == measured["typed_word_targets"]
    # without a cache nothing is copied: a word outside the vocabulary is never suggested
    assert (
        measured["without_cache_typed_word_top3_accuracy"]
        == measured["without_cache_typed_word_top3_vocabulary_only"]
    )
    assert main(["read-text", str(export), str(tmp_path / "none.txt")]) == 1
    assert main(["read-text", str(export), str(novel), "--start", "1.5"]) == 1
    assert "--start must be within 0..1" in capsys.readouterr().err

"""Corpus readers and splits: labelled files, the stratified validation split, the character
corpus's contiguous train/valid/test cut and the word corpus's files."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from models.tokenizers import EOS, UNK, fit_word_tokenizer
from training import sentiment
from training.config import LanguageModelTrainConfig, SentimentConfig
from training.data import DataError, Example, read_labeled, sha256_of, split_validation
from training.language import load_char_splits, load_word_splits, streams, word_ids

from .conftest import reviews, shakespeare, write_csv, write_jsonl


def labelled(positives: int, negatives: int) -> list[Example]:
    return [Example(f"good {i}", 1) for i in range(positives)] + [
        Example(f"bad {i}", 0) for i in range(negatives)
    ]


def test_split_validation_is_stratified_and_disjoint() -> None:
    examples = labelled(30, 10)
    train, valid = split_validation(examples, 0.2, seed=0)
    assert Counter(e.label for e in valid) == {1: 6, 0: 2}
    assert Counter(e.label for e in train) == {1: 24, 0: 8}
    assert not {e.text for e in train} & {e.text for e in valid}
    assert sorted(e.text for e in train + valid) == sorted(e.text for e in examples)


def test_split_validation_is_deterministic_per_seed() -> None:
    examples = labelled(50, 50)
    first = split_validation(examples, 0.1, seed=7)
    assert split_validation(examples, 0.1, seed=7) == first
    assert split_validation(examples, 0.1, seed=8) != first
    # the input list is not reordered
    assert examples == labelled(50, 50)


def test_split_validation_with_zero_fraction_keeps_everything_for_training() -> None:
    train, valid = split_validation(labelled(3, 4), 0.0, seed=0)
    assert valid == []
    assert sorted(e.text for e in train) == sorted(e.text for e in labelled(3, 4))


def test_read_labeled_jsonl_and_csv_with_label_names(tmp_path: Path) -> None:
    rows = reviews(6, seed=0)
    expected = [Example(str(r["text"]), int(str(r["label"]))) for r in rows]
    assert read_labeled(write_jsonl(tmp_path / "a.jsonl", rows)) == expected
    assert read_labeled(write_csv(tmp_path / "b.csv", rows, ("neg", "pos"))) == expected
    csv_path = write_csv(tmp_path / "c.csv", rows, ("Negative", "POSITIVE"))
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    assert read_labeled(gz) == expected


def test_read_labeled_keeps_commas_quotes_and_newlines_in_csv(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": 'He said "no", then\nleft.', "label": 0}]
    assert read_labeled(write_csv(tmp_path / "q.csv", rows, ("0", "1"))) == [
        Example('He said "no", then\nleft.', 0)
    ]


def test_read_labeled_rejects_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"text": "a", "label": 1})
        + "\n"
        + json.dumps({"text": "b", "label": "meh"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"bad.jsonl, record 2: label 'meh'"):
        read_labeled(path)
    path.write_text(json.dumps({"review": "a", "label": 1}) + "\n")
    with pytest.raises(DataError, match=r"record 1: needs 'text' and 'label'"):
        read_labeled(path)
    other = tmp_path / "reviews.txt"
    other.write_text("text")
    with pytest.raises(DataError, match=r"expected a \.jsonl or \.csv"):
        read_labeled(other)


def test_sentiment_load_data_from_a_directory(sentiment_dir: Path) -> None:
    config = SentimentConfig(data=str(sentiment_dir), valid_fraction=0.25)
    data = sentiment.load_data(config)
    assert (len(data.train), len(data.valid), len(data.test)) == (36, 12, 20)
    assert Counter(e.label for e in data.valid) == {0: 6, 1: 6}
    assert data.name == sentiment_dir.name
    assert data.sha256 == {
        name: sha256_of(sentiment_dir / name) for name in ("train.jsonl", "test.jsonl")
    }
    test_texts = {e.text for e in data.test}
    assert test_texts == {str(r["text"]) for r in reviews(20, seed=2)}


def test_sentiment_load_data_from_one_file_has_no_test_split(sentiment_dir: Path) -> None:
    data = sentiment.load_data(SentimentConfig(data=str(sentiment_dir / "train.jsonl")))
    assert data.test == []
    assert len(data.train) + len(data.valid) == 48
    assert list(data.sha256) == ["train.jsonl"]


def test_sentiment_load_data_without_a_train_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no train\.jsonl"):
        sentiment.load_data(SentimentConfig(data=str(tmp_path)))


def test_char_splits_put_test_at_the_end_and_never_overlap_train(tmp_path: Path) -> None:
    text = shakespeare(1000, seed=0)
    (tmp_path / "input.txt").write_text(text)
    config = LanguageModelTrainConfig(data=str(tmp_path), valid_fraction=0.05, test_fraction=0.1)
    splits = load_char_splits(config)
    # 900 characters before the test split: blocks of 900 // (20 * 4) = 11, every 20th validates
    blocks = [text[i : min(i + 11, 900)] for i in range(0, 900, 11)]
    assert splits.valid == "".join(blocks[19::20]) and len(splits.valid) == 44
    assert splits.train == "".join(b for i, b in enumerate(blocks) if i % 20 != 19)
    assert splits.test == text[900:]
    assert splits.name == tmp_path.name  # the corpus's folder: "tinyshakespeare", not the file
    assert splits.sha256 == {"input.txt": sha256_of(tmp_path / "input.txt")}


@pytest.mark.parametrize(("length", "test_fraction"), [(997, 0.1), (2500, 0.2), (101, 0.33)])
def test_char_split_boundaries_for_awkward_lengths(
    tmp_path: Path, length: int, test_fraction: float
) -> None:
    text = "".join(chr(0x4E00 + i) for i in range(length))  # every character distinct
    path = tmp_path / "input.txt"
    path.write_text(text)
    config = LanguageModelTrainConfig(
        data=str(path), valid_fraction=0.05, test_fraction=test_fraction
    )
    splits = load_char_splits(config)
    assert sorted(splits.train + splits.valid + splits.test) == sorted(text)
    assert splits.valid and not set(splits.valid) & set(splits.train)
    assert text.endswith(splits.test)
    assert len(splits.test) == length - int(length * (1 - test_fraction))
    assert not set(splits.train) & set(splits.test)  # no character of the test part is trained on


def test_char_splits_read_gzip_and_name_the_corpus(tmp_path: Path) -> None:
    text = shakespeare(400, seed=1)
    (tmp_path / "input.txt.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    splits = load_char_splits(LanguageModelTrainConfig(data=str(tmp_path)))
    assert sorted(splits.train + splits.valid + splits.test) == sorted(text)
    assert text.endswith(splits.test)
    assert splits.name == tmp_path.name
    assert list(splits.sha256) == ["input.txt.gz"]


def test_char_splits_without_input_txt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no input\.txt"):
        load_char_splits(LanguageModelTrainConfig(data=str(tmp_path)))


def test_word_splits_read_the_three_files(wikitext_dir: Path) -> None:
    splits = load_word_splits(LanguageModelTrainConfig(data=str(wikitext_dir)))
    for split in ("train", "valid", "test"):
        assert getattr(splits, split) == (wikitext_dir / f"{split}.txt").read_text()
    assert splits.name == wikitext_dir.name
    assert sorted(splits.sha256) == ["test.txt", "train.txt", "valid.txt"]


def test_word_splits_cut_a_missing_valid_file_from_the_end_of_train(tmp_path: Path) -> None:
    lines = [f" line {i} \n" for i in range(100)]
    (tmp_path / "wiki.train.tokens").write_text("".join(lines))
    (tmp_path / "wiki.test.tokens").write_text(" the end \n")
    splits = load_word_splits(LanguageModelTrainConfig(data=str(tmp_path), valid_fraction=0.05))
    assert splits.train == "".join(lines[:95])
    assert splits.valid == "".join(lines[95:])
    assert splits.test == " the end \n"


def test_word_splits_need_train_and_test(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(" a \n")
    with pytest.raises(DataError, match=r"needs train\.txt and test\.txt"):
        load_word_splits(LanguageModelTrainConfig(data=str(tmp_path)))


def test_word_ids_count_one_eos_per_line_and_map_unknown_words() -> None:
    tokenizer = fit_word_tokenizer(
        [" = Title = ", " a b <unk> "], "pretokenized", specials=(UNK, EOS)
    )
    vocab = tokenizer.vocabulary()
    ids = word_ids(tokenizer, " = Title = \n \n a zebra \n").tolist()
    eos = vocab[EOS]
    assert ids == [vocab["="], vocab["Title"], vocab["="], eos, eos, vocab["a"], vocab[UNK], eos]


def test_streams_are_contiguous_stretches() -> None:
    data = streams(torch.arange(10), 3)
    assert data.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

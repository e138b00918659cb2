"""Short text cut from reviews, and the metrics reported on it."""

from __future__ import annotations

import random

import pytest
import torch

from training.data import Example
from training.sentences import MAX_WORDS, MIN_WORDS, crop, one_sentence_set, sentences
from training.sentiment import classification_metrics, expected_calibration_error


def test_sentences_split_at_end_marks_and_html_breaks() -> None:
    text = "A fine film.<br /><br />The cast is great!!! Was it long? Yes... a bit"
    assert sentences(text) == [
        "A fine film.",
        "The cast is great!!!",
        "Was it long?",
        "Yes...",
        "a bit",
    ]


def test_one_sentence_set_keeps_labels_bounds_and_is_repeatable() -> None:
    reviews = [
        Example("Too short. " + "This one has exactly enough words in it. " * 3, 1),
        Example("No. Nope. Never.", 0),  # nothing of MIN_WORDS words: left out
        Example("The plot drags on and on for far too long. I was bored.", 0),
    ]
    chosen = one_sentence_set(reviews, seed=0)
    assert [e.label for e in chosen] == [1, 0]
    assert all(MIN_WORDS <= len(e.text.split()) <= MAX_WORDS for e in chosen)
    assert chosen[1].text == "The plot drags on and on for far too long."
    assert one_sentence_set(reviews, seed=0) == chosen


def test_crop_takes_one_or_two_adjacent_sentences() -> None:
    pieces = [[1, 2], [3], [4, 5, 6]]
    seen = {tuple(crop(pieces, random.Random(seed))) for seed in range(200)}
    assert seen <= {(1, 2), (3,), (4, 5, 6), (1, 2, 3), (3, 4, 5, 6)}
    assert (4, 5, 6) in seen and (1, 2, 3) in seen


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    # confidence 0.75 throughout, right on 3 of 4
    probabilities = torch.tensor([[0.25, 0.75]] * 4)
    ece = expected_calibration_error
    assert ece(probabilities, torch.tensor([1, 1, 1, 0])) == pytest.approx(0)
    # confidence 0.75, right on 1 of 4: off by 0.5
    assert ece(probabilities, torch.tensor([1, 0, 0, 0])) == pytest.approx(0.5)


def test_recall_of_each_class_shows_a_lean() -> None:
    logits = torch.tensor([[0.0, 1.0]] * 3 + [[1.0, 0.0]])  # predicts positive 3 times of 4
    metrics = classification_metrics(logits, torch.tensor([1, 1, 0, 0]))
    assert metrics["recall_positive"] == 1.0
    assert metrics["recall_negative"] == 0.5
    assert metrics["predicted_positive"] == 0.75

"""Everyday English for the next-word model. WikiText-2 is encyclopedia prose; what a person types
is not. Reviews (IMDB's: informal, first-person English) are read into the word corpus's own
tokens, as the service reads typed text (`WordTokenizer.read`: the corpus's conventions, its
vocabulary, unknown words as <unk>), so the vocabulary and the WikiText-2 perplexity stay
comparable. Some of the training reviews can join the training text; a held-out set of them
(validation, for choosing) and of the test reviews (reported) measure how well the model
suggests the next word of everyday text."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from models.tokenizers import Tokenizer, WordTokenizer
from training.data import DataError, find_labeled, read_labeled
from training.sentences import flat

VALID_REVIEWS = 500  # training reviews never mixed in: the validation measure
TEST_REVIEWS = 1000  # test reviews measured: every k-th of the test file


@dataclass(frozen=True)
class EverydayText:
    train: list[str]  # reviews that may join the training text, in a fixed random order
    valid: list[str]
    test: list[str]


def _reviews_file(folder: Path, split: str) -> Path:
    found = find_labeled(folder, split)
    if found is None:
        raise DataError(f"{folder}: no {split}.jsonl or {split}.csv (optionally .gz) of reviews")
    return found


def load_everyday(folder: str | Path, seed: int = 0) -> EverydayText:
    """A folder of reviews (train and test, as the sentiment task reads them): the training
    reviews shuffled by `seed`, the last VALID_REVIEWS of them held out for validation, and
    TEST_REVIEWS spread over the test file. Each review is one line of plain text."""
    root = Path(folder)
    train = [flat(e.text) for e in read_labeled(_reviews_file(root, "train"))]
    test = [flat(e.text) for e in read_labeled(_reviews_file(root, "test"))]
    random.Random(seed).shuffle(train)
    held = min(VALID_REVIEWS, len(train) // 10)
    every = max(1, len(test) // TEST_REVIEWS)
    return EverydayText(train[: len(train) - held], train[len(train) - held :], test[::every])


@dataclass(frozen=True)
class TypedText:
    """Reviews as the model reads them and as they were typed: `ids` (N,) has <unk> for each
    word outside the vocabulary; `typed` (N,) is the same stream with each such word as an id of
    its own, vocab_size + k for the k-th distinct one, `outside[k]`. What a word's suggestion is
    measured against when the word was typed, not as the model reads it."""

    ids: torch.Tensor
    typed: torch.Tensor
    outside: list[str]


def typed_reviews(tokenizer: WordTokenizer, reviews: list[str]) -> TypedText:
    """The reviews as `encode_reviews` reads them (each opened by <eos>), and as typed."""
    if tokenizer.eos_id is None:
        raise ValueError("typed reviews need a vocabulary with <eos>, as next-word's has")
    ids: list[int] = []
    typed: list[int] = []
    outside: dict[str, int] = {}
    for review in reviews:
        words = tokenizer.words(review)
        found = [tokenizer.word_id(w) for w in words]  # None outside the vocabulary
        read = tokenizer.context_of(found)  # <eos>, then one id per word
        ids.extend(read)
        typed.append(read[0])
        for word, token, known in zip(words, read[1:], found, strict=True):
            if known is None:
                token = tokenizer.vocab_size + outside.setdefault(word, len(outside))
            typed.append(token)
    as_tensor = torch.tensor(ids, dtype=torch.long)
    return TypedText(as_tensor, torch.tensor(typed, dtype=torch.long), list(outside))


def encode_reviews(tokenizer: Tokenizer, reviews: list[str], limit: int = 0) -> torch.Tensor:
    """The reviews as one stream of ids, each opened by <eos> as the service reads a text (and
    as a WikiText line follows the one before); with `limit`, whole reviews until it is reached."""
    ids: list[int] = []
    for review in reviews:
        if limit and len(ids) >= limit:
            break
        ids.extend(tokenizer.read(review))
    return torch.tensor(ids, dtype=torch.long)

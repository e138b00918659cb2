"""Short text from long reviews: sentences cut out of a review, for training on crops (so one
sentence, what a person types into the playground, is in distribution) and for a one-sentence
evaluation set (each sentence with its review's label: noisy, since one sentence of a positive
review can be neutral, but it measures what full reviews cannot)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from training.data import Example

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # IMDB's line breaks, as HTML
# a sentence ends at . ! or ? (runs of them too, "!!!") before white space
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# a sentence a person would type as a whole review: at least a short clause, at most a long line
MIN_WORDS, MAX_WORDS = 4, 40


def flat(text: str) -> str:
    """A review as one line: its HTML line breaks and runs of white space made single spaces."""
    return " ".join(_BREAK.sub(" ", text).split())


def sentences(text: str) -> list[str]:
    """The review's sentences, in order, as they are written (line breaks become spaces)."""
    return [s for s in _SENTENCE_END.split(flat(text)) if s]


def eligible(text: str) -> list[str]:
    """The sentences of MIN_WORDS to MAX_WORDS words."""
    return [s for s in sentences(text) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]


def one_sentence_set(examples: Sequence[Example], seed: int = 0) -> list[Example]:
    """One sentence from each review that has one, chosen at random (fixed by `seed` and the
    review's position), labelled with the review's label."""
    chosen = []
    for index, example in enumerate(examples):
        candidates = eligible(example.text)
        if candidates:
            rng = random.Random(seed * 1_000_003 + index)
            chosen.append(Example(rng.choice(candidates), example.label))
    return chosen


def crop(pieces: Sequence[list[int]], rng: random.Random) -> list[int]:
    """One or two adjacent encoded sentences of a review, chosen at random."""
    start = rng.randrange(len(pieces))
    count = 1 if start == len(pieces) - 1 or rng.random() < 0.7 else 2
    return [i for piece in pieces[start : start + count] for i in piece]

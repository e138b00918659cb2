"""Who is speaking in a play's text, as a character model that reads speakers is told.

A play names its speaker on a line of its own before each speech: after a blank line (or at the
start of the text), a capitalised name and a colon ("ROMEO:\\n", "First Citizen:\\n"). From the
newline that ends such a line until the next one, that name is the speaker. A model with
`speaker_dim` > 0 reads, beside each character, a vector of the current speaker's name
(`LanguageModel.speaker_vectors`), so the name of a prompt stays with the text that follows it
instead of fading from the recurrent state. The rule is the same for training, evaluation and
generation: `SpeakerTracker` reads text piece by piece, as a generation produces it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

from models.architectures import LanguageModel
from models.tokenizers import Tokenizer

# a speaker's name: a capital letter, then letters, spaces and apostrophes (1 to 30 more)
NAME = re.compile(r"[A-Z][A-Za-z' ]{1,30}")
_LONGEST_LINE = 33  # a name line: the name (up to 31 characters) and its colon, and one more


class SpeakerTracker:
    """The current speaker of a text read piece by piece (`feed`); `name` is None until a
    speaker's line has been read. `copy()` continues a text from where another stopped."""

    __slots__ = ("_blank_before", "_line", "name")

    def __init__(self) -> None:
        self.name: str | None = None
        self._line = ""  # the current line so far, while it can still be a speaker's line
        self._blank_before = True  # the line before was blank (or there was none)

    def feed_char(self, char: str) -> None:
        if char != "\n":
            if len(self._line) <= _LONGEST_LINE:
                self._line += char
            return
        line = self._line
        if self._blank_before and line.endswith(":") and NAME.fullmatch(line[:-1]):
            self.name = line[:-1]
        self._blank_before = line == ""
        self._line = ""

    def feed(self, text: str) -> None:
        for char in text:
            self.feed_char(char)

    def copy(self) -> SpeakerTracker:
        twin = SpeakerTracker()
        twin.name, twin._line, twin._blank_before = self.name, self._line, self._blank_before
        return twin


def speakers_of(pieces: Iterable[str], tracker: SpeakerTracker | None = None) -> list[str | None]:
    """The speaker after reading each piece of text (each character of a string), continuing
    `tracker`, which is advanced past them, when given."""
    tracker = tracker if tracker is not None else SpeakerTracker()
    found: list[str | None] = []
    for piece in pieces:
        tracker.feed(piece)
        found.append(tracker.name)
    return found


def names_of_ids(
    tokenizer: Tokenizer, ids: Sequence[int], tracker: SpeakerTracker | None = None
) -> list[str | None]:
    """The speaker after each token of `ids` (continuing `tracker`, which is advanced)."""
    return speakers_of((tokenizer.id_to_token(int(token)) for token in ids), tracker)


def speaker_inputs(model: LanguageModel, tokenizer: Tokenizer) -> SpeakerInputs | None:
    """What a model that reads speakers needs beside its tokens; None for any other model."""
    return SpeakerInputs(model, tokenizer) if model.config.speaker_dim else None


class SpeakerInputs:
    """The speaker vectors a model reads beside each token of its texts, computed once per name
    (for inference: the vectors carry no gradient)."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._vectors: dict[str, torch.Tensor] = {}
        parameter = next(model.parameters())
        self._none = torch.zeros(model.config.speaker_dim, device=parameter.device)

    def vector(self, name: str | None) -> torch.Tensor:
        """(S,): the name's vector; zeros for no speaker."""
        if name is None:
            return self._none
        found = self._vectors.get(name)
        if found is None:
            with torch.inference_mode():
                ids = [self.tokenizer.encode(name).ids]
                found = self.model.speaker_vectors(ids)[0].float()
            if len(self._vectors) > 4096:  # a bound for a service that reads any name
                self._vectors.clear()
            self._vectors[name] = found
        return found

    def of_rows(self, rows: Sequence[Sequence[str | None]], steps: int) -> torch.Tensor:
        """(B, steps, S): each row's speakers, padded with no speaker."""
        out = self._none.new_zeros(len(rows), steps, self._none.shape[0])
        for row, names in enumerate(rows):
            distinct: dict[str | None, list[int]] = {}
            for position, name in enumerate(names):
                if name is not None:
                    distinct.setdefault(name, []).append(position)
            for name, positions in distinct.items():
                out[row, positions] = self.vector(name)
        return out

    def of_text(self, ids: Sequence[int], tracker: SpeakerTracker | None = None) -> torch.Tensor:
        """(T, S): the speaker at each token of `ids` (continuing `tracker`, advanced)."""
        return self.of_rows([names_of_ids(self.tokenizer, ids, tracker)], len(ids))[0]

    def of_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids, each row a text read from its start -> (B, T, S)."""
        names = [names_of_ids(self.tokenizer, row) for row in rows.tolist()]
        return self.of_rows(names, rows.shape[1])

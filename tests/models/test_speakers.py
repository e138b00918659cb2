"""Who is speaking in a play's text, and a character model that reads it beside each character."""

from __future__ import annotations

import pytest
import torch

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from models.speakers import (
    SpeakerInputs,
    SpeakerTracker,
    names_of_ids,
    speaker_inputs,
    speakers_of,
)
from models.tokenizers import CharTokenizer

PLAY = (
    "ROMEO:\nBut soft, what light?\n\n"
    "JULIET:\nO Romeo, Romeo!\nAnd then take hands:\nno more.\n\n"
    "First Citizen:\nWe are accounted poor.\n"
)


def test_a_speaker_is_named_from_the_end_of_the_name_line_to_the_next() -> None:
    speakers = speakers_of(PLAY)
    assert len(speakers) == len(PLAY)
    first_newline = PLAY.index("\n")
    assert speakers[:first_newline] == [None] * first_newline  # reading the name: not yet
    assert speakers[first_newline] == "ROMEO"  # its line's newline: the name has been read
    juliet = PLAY.index("JULIET:\n") + len("JULIET:")
    assert set(speakers[first_newline:juliet]) == {"ROMEO"}  # to the next speaker's newline
    # a line ending in a colon inside a speech ("And then take hands:") names nobody
    assert set(speakers[juliet : PLAY.index("First Citizen:") + 14]) == {"JULIET"}
    assert speakers[-1] == "First Citizen"


@pytest.mark.parametrize(
    "text",
    [
        "said:\nROMEO:\n",  # no blank line before the name
        "\n\nromeo:\n",  # not capitalised
        "\n\nR:\n",  # one letter
        "\n\n" + "A" * 40 + ":\n",  # longer than a name
        "\n\nROMEO: hi\n",  # more on the line than the name
        "\n\nROMEO 2:\n",  # a digit
    ],
)
def test_lines_that_are_not_a_speakers_name_name_nobody(text: str) -> None:
    assert speakers_of(text)[-1] is None


def test_reading_in_pieces_equals_reading_at_once() -> None:
    whole = speakers_of(PLAY)
    tracker = SpeakerTracker()
    pieces = [PLAY[i : i + 7] for i in range(0, len(PLAY), 7)]
    named = []
    for piece in pieces:
        named.extend(speakers_of(piece, tracker))
    assert named == whole
    # a copy goes on from where the text stopped, and leaves the original alone
    half = SpeakerTracker()
    speakers_of(PLAY[:40], half)
    twin = half.copy()
    assert speakers_of(PLAY[40:], twin) == whole[40:]
    assert half.name == whole[39]


def _model(speaker_dim: int = 4) -> tuple[LanguageModel, CharTokenizer]:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit(PLAY)
    config = LanguageModelConfig(
        vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=16, num_layers=1,
        speaker_dim=speaker_dim,
    )  # fmt: skip
    return LanguageModel(config).eval(), tokenizer


def test_names_read_together_get_the_vectors_they_get_alone() -> None:
    model, tokenizer = _model()
    names = [tokenizer.encode(n).ids for n in ("ROMEO", "First Citizen", "JULIET")]
    with torch.no_grad():
        together = model.speaker_vectors(names)
        alone = torch.cat([model.speaker_vectors([name]) for name in names])
    assert together.shape == (3, 4)
    torch.testing.assert_close(together, alone)
    assert not torch.allclose(together[0], together[2])


def test_no_speaker_reads_as_zeros_and_a_speaker_changes_what_follows() -> None:
    model, tokenizer = _model()
    ids = torch.tensor([tokenizer.encode(PLAY).ids])  # (1, T)
    with torch.no_grad():
        plain, _ = model.features(ids)
        zeros, _ = model.features(ids, speakers=torch.zeros(1, ids.shape[1], 4))
        inputs = SpeakerInputs(model, tokenizer)
        named, _ = model.features(ids, speakers=inputs.of_ids(ids))
    torch.testing.assert_close(plain, zeros)
    first_newline = PLAY.index("\n")
    # the same until a speaker is known, different from there on
    torch.testing.assert_close(named[0, :first_newline], plain[0, :first_newline])
    assert not torch.allclose(named[0, first_newline:], plain[0, first_newline:])


def test_speaker_inputs_follow_the_text_and_are_none_for_a_model_without_them() -> None:
    model, tokenizer = _model()
    inputs = speaker_inputs(model, tokenizer)
    assert inputs is not None
    ids = tokenizer.encode(PLAY).ids
    names = names_of_ids(tokenizer, ids)
    assert names == speakers_of(PLAY)
    vectors = inputs.of_text(ids)  # (T, S)
    for position in (0, PLAY.index("\n"), PLAY.index("O Romeo"), len(PLAY) - 1):
        torch.testing.assert_close(vectors[position], inputs.vector(names[position]))
    assert not inputs.vector(None).any()
    plain, _ = _model(speaker_dim=0)
    assert speaker_inputs(plain, tokenizer) is None
    with pytest.raises(ValueError, match="reads no speakers"):
        plain.speaker_vectors([[1, 2]])
    with pytest.raises(ValueError, match="speaker_dim must be 0 or more"):
        LanguageModelConfig(vocab_size=5, speaker_dim=-1)

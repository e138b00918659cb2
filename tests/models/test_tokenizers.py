"""Tokenizers: offsets point into the original text; unknown input maps to the unknown id."""

from __future__ import annotations

import json

import pytest

from models.tokenizers import (
    EOS,
    UNK,
    CharTokenizer,
    WordTokenizer,
    fit_word_tokenizer,
    tokenizer_from_json,
)
from models.wordtext import WIKITEXT, join_abbreviations, wikitext_words


def _text_tokenizer() -> WordTokenizer:
    return fit_word_tokenizer(["A good film. A GOOD film!", "bad film"], "text")


def test_text_style_lowercases_splits_punctuation_and_keeps_offsets() -> None:
    tokenizer = _text_tokenizer()
    text = "Good<br />film, don't"
    encoding = tokenizer.encode(text)
    pieces = [text[start:end] for start, end in encoding.offsets]
    assert pieces == ["Good", "film", ",", "don't"]
    assert encoding.ids[0] == tokenizer.token_to_id("good")
    assert encoding.ids[3] == tokenizer.unk_id


def test_specials_take_the_first_ids() -> None:
    tokenizer = _text_tokenizer()
    assert (tokenizer.pad_id, tokenizer.unk_id) == (0, 1)
    assert tokenizer.vocab_size == 2 + len({"a", "good", "film", ".", "!", "bad"})


def test_pretokenized_style_keeps_corpus_tokens() -> None:
    tokenizer = fit_word_tokenizer(["the cat @-@ sat <unk>"], "pretokenized", specials=["<unk>"])
    ids = tokenizer.encode("the cat @-@ dog").ids
    assert [tokenizer.id_to_token(i) for i in ids] == ["the", "cat", "@-@", "<unk>"]


def test_word_tokenizer_json_round_trip() -> None:
    tokenizer = _text_tokenizer()
    restored = tokenizer_from_json(tokenizer.to_json())
    assert restored.encode("a bad, good film").ids == tokenizer.encode("a bad, good film").ids


def test_char_tokenizer_round_trip_and_unknown() -> None:
    tokenizer = CharTokenizer.fit("hello world")
    restored = tokenizer_from_json(tokenizer.to_json())
    encoding = restored.encode("hold✓")
    assert encoding.ids[-1] == restored.unk_id == 0
    assert encoding.offsets[-1] == (4, 5)
    assert restored.decode(restored.encode("hello").ids) == "hello"
    assert restored.vocab_size == len(set("hello world")) + 1


def test_empty_and_unknown_text_never_raise() -> None:
    tokenizer = _text_tokenizer()
    assert tokenizer.encode("").ids == []
    assert set(tokenizer.encode("\x00 𝔘𝔫𝔨 שלום 🙂").ids) == {tokenizer.unk_id}


def test_ids_are_contiguous_when_a_special_occurs_in_the_corpus() -> None:
    tokenizer = fit_word_tokenizer(
        ["a <unk> b", "<unk> c a"], "pretokenized", specials=["<unk>", "<eos>"]
    )
    ids = sorted(tokenizer.vocabulary().values())
    assert ids == list(range(tokenizer.vocab_size))
    assert tokenizer.token_to_id("<unk>") == 0 and tokenizer.token_to_id("<eos>") == 1


def test_a_lone_surrogate_is_an_unknown_token_never_an_error() -> None:
    """JSON's "\\ud800" escape parses to a lone surrogate, which `tokenizers` refuses; the word
    tokenizer reads it as an unknown token (the service refuses such text before, see
    tests/service/test_bad_input.py; this is the library's own guarantee)."""
    tokenizer = _text_tokenizer()
    text = "good \ud800 film\udfff"
    encoding = tokenizer.encode(text)
    pieces = [text[start:end] for start, end in encoding.offsets]
    assert pieces == ["good", "\ud800", "film", "\udfff"]
    assert encoding.ids[1] == encoding.ids[3] == tokenizer.unk_id
    assert encoding.ids[2] == tokenizer.token_to_id("film")
    assert tokenizer.token_to_id("\ud800") is None
    chars = CharTokenizer.fit("ab")
    assert chars.encode("a\ud800").ids == [chars.token_to_id("a"), chars.unk_id]


def test_tokens_starting_with_a_prefix_ignore_case() -> None:
    words = fit_word_tokenizer(["The history of the city", "a historical war"], "pretokenized")
    found = {words.id_to_token(i) for i in words.starting_with("HIST")}
    assert found == {"history", "historical"}
    assert words.starting_with("zzq") == []
    chars = CharTokenizer.fit("abcA")
    assert sorted(chars.id_to_token(i) for i in chars.starting_with("a")) == ["A", "a"]


def test_a_corpus_vocabulary_keeps_its_text_conventions_through_json() -> None:
    words = fit_word_tokenizer(
        ["the well @-@ known 1 @,@ 000"], "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT
    )
    again = tokenizer_from_json(words.to_json())
    assert isinstance(again, WordTokenizer) and again.conventions is WIKITEXT
    # raw text read into the corpus's tokens, then shown as a person writes it
    assert again.words("The well-known 1,000") == ["The", "well", "@-@", "known", "1", "@,@", "000"]
    ids = again.read("The well-known")
    assert ids[0] == again.eos_id and again.unk_id not in ids  # "The" found as "the"
    shown = ""
    for token in ids[1:]:
        shown += again.show(token, shown)
    assert shown == " the well - known"
    assert again.show(again.eos_id or 0, shown) == "\n"


def test_typographic_text_is_read_as_the_corpus_writes_it() -> None:
    """Curly quotes and apostrophes, an ellipsis character, a typed dash and underscores around
    an emphasised word become WikiText's own tokens, so "don’t" reads as the corpus's "don 't"."""
    typed = "“Well,” she said, “I don’t know—it’s _very_ odd…” Mr. Darcy's house--a 2,000-acre park"
    plain = """"Well," she said, "I don't know — it's very odd ..." """
    plain += "Mr. Darcy's house — a 2,000-acre park"
    assert wikitext_words(typed) == wikitext_words(plain)
    assert wikitext_words(typed) == [
        '"', "Well", ",", '"', "she", "said", ",", '"', "I", "don", "'t", "know", "—", "it", "'s",
        "very", "odd", "...", '"', "Mr", ".", "Darcy", "'s", "house", "—", "a", "2", "@,@", "000",
        "@-@", "acre", "park",
    ]  # fmt: skip
    assert wikitext_words("a - b, x----y") == ["a", "-", "b", ",", "x", "-", "-", "-", "-", "y"]


def test_a_blank_line_ends_a_paragraph_as_a_corpus_line_ends_and_a_wrapped_line_does_not() -> None:
    text = "It is a truth universally\nacknowledged.\n\n  \nHowever little known"
    assert wikitext_words(text) == [
        "It", "is", "a", "truth", "universally", "acknowledged", ".", "<eos>", "However",
        "little", "known",
    ]  # fmt: skip
    assert wikitext_words("\n\nThe end.\n\n") == ["The", "end", ".", "<eos>"]
    words = fit_word_tokenizer(
        ["the end ."], "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT
    )
    assert words.read("the end.\n\nthe") == [
        words.eos_id,
        *words.read("the end.")[1:],
        words.eos_id,
        words.read("the")[1],
    ]


def test_an_abbreviation_the_vocabulary_has_is_one_token_a_sentence_end_is_not() -> None:
    words = fit_word_tokenizer(
        ["Mr. U.S. e.g. I. No. the"], "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT
    )
    read = words.words("Mr. Darcy went to the U.S., e.g. Boston. So did I. No. 5 said no.")
    assert read == [
        "Mr.", "Darcy", "went", "to", "the", "U.S.", ",", "e.g.", "Boston", ".", "So", "did",
        "I", ".", "No.", "5", "said", "no", ".",
    ]  # fmt: skip
    assert join_abbreviations(["U", ".", "K", "."], lambda token: token == "U.K.") == ["U.K."]
    assert join_abbreviations(["Mr", "."], lambda token: False) == ["Mr", "."]


def test_a_vocabulary_saved_before_conventions_were_saved_reads_as_wikitext() -> None:
    words = fit_word_tokenizer(["a b"], "pretokenized", specials=(UNK, EOS), conventions=WIKITEXT)
    plain = json.loads(words.to_json())["tokenizer"]  # the tokenizers library's JSON alone
    assert tokenizer_from_json(json.dumps(plain)).conventions is WIKITEXT  # type: ignore[union-attr]
    raw = fit_word_tokenizer(["a b"], "text")  # a raw-text vocabulary has none
    assert tokenizer_from_json(raw.to_json()).conventions is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown text conventions 'klingon'"):
        tokenizer_from_json(
            json.dumps({"type": "word", "conventions": "klingon", "tokenizer": plain})
        )

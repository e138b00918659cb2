"""How next-word reads the end of a text: a line break ends a word (Enter after a word asks for
the next one), a partial word no vocabulary word starts with is said so, and WikiText's markup
is never suggested."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from models.tokenizers import fit_word_tokenizer
from models.wordtext import WIKITEXT
from service.inference import _suggestible


def _next_word(client: TestClient, text: str, top_k: int = 3) -> dict[str, Any]:
    response = client.post("/next-word", json={"text": text, "top_k": top_k})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_line_break_after_a_word_asks_for_the_next_word(client: TestClient) -> None:
    typing = _next_word(client, "the hist")
    assert (typing["completing"], typing["prefix"]) == (True, "hist")
    for text in ("the history\n", "the history\r\n", "the history "):
        answer = _next_word(client, text)
        assert (answer["completing"], answer["prefix"]) == (False, None), text
        assert answer["context_tokens"] == 2


def test_an_unknown_partial_word_is_named_in_the_answer(client: TestClient) -> None:
    answer = _next_word(client, "the zzq")
    assert answer["completing"] is False
    assert answer["unknown_prefix"] == "zzq"
    assert answer["unknown_words"] == 1
    assert _next_word(client, "the hist")["unknown_prefix"] is None


def test_a_word_of_the_text_outside_the_vocabulary_is_offered_and_completed(
    client: TestClient,
) -> None:
    """The continuous cache copies what followed earlier positions; where that was a word the
    vocabulary lacks (a name, read as <unk>), the word itself is offered, never <unk>."""
    text = "I met Zorblax . Zorblax is tall . Then Zorblax"
    answer = _next_word(client, text[: -len("lax")])  # typing it again: "Zorb"
    assert (answer["completing"], answer["prefix"]) == (True, "Zorb")
    assert answer["suggestions"][0]["word"] == "Zorblax"
    assert 0 < answer["suggestions"][0]["probability"] < 1
    offered = _next_word(client, text + " is", top_k=10)["suggestions"]
    assert all(s["word"] != "<unk>" for s in offered)
    assert _next_word(client, "Then Zorb")["unknown_prefix"] == "Zorb"  # nothing to copy yet


def test_markup_is_never_suggested_and_punctuation_only_where_the_text_calls_for_it() -> None:
    words = fit_word_tokenizer(["the = @-@ , ."], "pretokenized", conventions=WIKITEXT)

    def suggestible(token: str, text_started: bool, most_likely: bool = True) -> bool:
        return _suggestible(words, token, text_started, most_likely)

    for markup in ("=", "@-@", "@,@", "@.@", "<eos>", "<unk>"):
        assert not suggestible(markup, text_started=True)
    assert suggestible("The", text_started=False)
    assert suggestible("the", text_started=True, most_likely=False)
    assert not suggestible('"', text_started=False)
    assert suggestible(",", text_started=True)
    # punctuation that is not the single most likely next token gives its place to a word
    assert not suggestible(",", text_started=True, most_likely=False)


def test_suggestions_are_words_where_punctuation_is_not_most_likely(client: TestClient) -> None:
    answer = _next_word(client, "Thank you very much for your", top_k=10)
    words = [s["word"] for s in answer["suggestions"]]
    assert all(any(c.isalnum() for c in w) for w in words[1:]), words

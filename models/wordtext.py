"""The text conventions of a word-level corpus: how raw text a person types becomes the corpus's
own tokens, and how those tokens are shown as text again. A word tokenizer fitted on such a
corpus carries its conventions by name (saved in its tokenizer.json), so training, evaluation
and the service read and show text the same way.

WikiText's: numbers and hyphenated words are split with marker tokens ("1,000" -> "1 @,@ 000",
"well-known" -> "well @-@ known"), clitics are their own tokens ("don't" -> "do n't" in the
corpus; raw "don't" reads as "don 't", the closest the corpus has), punctuation marks are
tokens, and every line ends with <eos>."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_NUMBER_MARK = re.compile(r"(?<=\d)([,.])(?=\d)")
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_WORD = re.compile(r"@[-,.]@|'\w+|\w+|[^\w\s]")


def wikitext_words(text: str) -> list[str]:
    """Raw text split into WikiText's tokens (its marker tokens for number and hyphen joins)."""
    text = _HYPHEN.sub(" @-@ ", _NUMBER_MARK.sub(r" @\1@ ", text))
    return _WORD.findall(text)


@dataclass(frozen=True)
class TextConventions:
    name: str
    words: Callable[[str], list[str]]  # raw text -> the corpus's tokens
    display: Mapping[str, str] = field(default_factory=dict)  # token -> how it is shown
    # tokens a person never types and is never offered (they are still read in context)
    markup: frozenset[str] = frozenset()


WIKITEXT = TextConventions(
    "wikitext",
    wikitext_words,
    display={"@-@": "-", "@,@": ",", "@.@": "."},
    markup=frozenset({"=", "@-@", "@,@", "@.@"}),  # "= Heading =" lines and the joiners
)
CONVENTIONS = {conventions.name: conventions for conventions in (WIKITEXT,)}

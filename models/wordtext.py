"""The text conventions of a word-level corpus: how raw text a person types becomes the corpus's
own tokens, and how those tokens are shown as text again. A word tokenizer fitted on such a
corpus carries its conventions by name (saved in its tokenizer.json), so training, evaluation
and the service read and show text the same way.

WikiText's: numbers and hyphenated words are split with marker tokens ("1,000" -> "1 @,@ 000",
"well-known" -> "well @-@ known"), clitics are their own tokens ("don't" -> "do n't" in the
corpus; raw "don't" reads as "don 't", the closest the corpus has), punctuation marks are
tokens, and every line ends with <eos>. The corpus writes quotes and apostrophes in ASCII, an
ellipsis as "...", and a dash as "—"; what a person types or a book prints often has the
typographic forms ("don’t", “yes”, "…"), a typewriter's dash ("--") or underscores around an
emphasised word ("_very_"), and each is read as the corpus writes it ("don’t" -> "don 't", not
"don ’ t"). A blank line ends a paragraph, as a line of the corpus ends: it reads as <eos>;
a single line break (a hard-wrapped line) is a space."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_NUMBER_MARK = re.compile(r"(?<=\d)([,.])(?=\d)")
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_WORD = re.compile(r"@[-,.]@|\.\.\.|'\w+|\w+|[^\w\s]")
_AS_THE_CORPUS_WRITES = str.maketrans(
    {"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "…": "...", "_": " "}
)
_TYPED_DASH = re.compile(r"(?<!-)-{2,3}(?!-)")  # "--" or "---" between words: a dash


_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")  # a paragraph's end: a line with nothing on it
LINE_END = "<eos>"  # the token that ends each line of a WikiText corpus


def wikitext_words(text: str) -> list[str]:
    """Raw text split into WikiText's tokens (its marker tokens for number and hyphen joins),
    each paragraph after the first opened by the <eos> that ended the one before."""
    words: list[str] = []
    for paragraph in _BLANK_LINE.split(text):
        if words and words[-1] != LINE_END:
            words.append(LINE_END)
        paragraph = _TYPED_DASH.sub(" — ", paragraph.translate(_AS_THE_CORPUS_WRITES))
        paragraph = _HYPHEN.sub(" @-@ ", _NUMBER_MARK.sub(r" @\1@ ", paragraph))
        words.extend(_WORD.findall(paragraph))
    return words


def join_abbreviations(words: list[str], known: Callable[[str], bool]) -> list[str]:
    """Runs of a word and its period ("Mr", ".", or "U", ".", "S", ".") joined into one token
    where the vocabulary has the whole (`known`): the corpus writes "Mr.", "U.S." and "e.g." so,
    and reads "Mr ." as the end of a sentence. A single letter and its period ("I.") stays two
    tokens: at the end of a typed sentence it is far more often a word than an initial."""
    joined: list[str] = []
    i = 0
    while i < len(words):
        end, whole, run = i, "", ""
        k = i
        while k + 1 < len(words) and words[k + 1] == "." and words[k].isalnum():
            run += words[k] + "."
            k += 2
            if len(run) > 2 and known(run):
                end, whole = k, run  # the longest run the vocabulary has
        if whole:
            joined.append(whole)
            i = end
        else:
            joined.append(words[i])
            i += 1
    return joined


@dataclass(frozen=True)
class TextConventions:
    name: str
    words: Callable[[str], list[str]]  # raw text -> the corpus's tokens
    display: Mapping[str, str] = field(default_factory=dict)  # token -> how it is shown
    # tokens a person never types and is never offered (they are still read in context)
    markup: frozenset[str] = frozenset()
    # a word and its period are one token where the vocabulary has them so ("Mr.")
    abbreviations: bool = False


WIKITEXT = TextConventions(
    "wikitext",
    wikitext_words,
    display={"@-@": "-", "@,@": ",", "@.@": "."},
    markup=frozenset({"=", "@-@", "@,@", "@.@"}),  # "= Heading =" lines and the joiners
    abbreviations=True,
)
CONVENTIONS = {conventions.name: conventions for conventions in (WIKITEXT,)}

"""Tokenizers behind one small interface: word vocabularies stored in the Hugging Face `tokenizers`
JSON format, and a character vocabulary. Unknown input maps to the unknown id; it never raises."""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from models.wordtext import CONVENTIONS, WIKITEXT, TextConventions, join_abbreviations

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
_HAS_WORD = re.compile(r"\w")


def is_word(token: str) -> bool:
    """A token a person reads as a word: letters or digits, not punctuation, not a special."""
    return token not in (PAD, UNK, EOS) and bool(_HAS_WORD.search(token))


# A word keeps an inner apostrophe ("don't"); any other run of punctuation is one token per mark.
_WORD_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """Lone surrogates (JSON's "\\ud800" parses to one) as U+FFFD: the `tokenizers` library
    raises on a string that is not valid Unicode. One character for one keeps every offset."""
    return _SURROGATE.sub("\ufffd", text)


@dataclass(frozen=True)
class Encoding:
    """Token ids and, for each, its (start, end) character span in the original text."""

    ids: list[int]
    offsets: list[tuple[int, int]]


def truncate_ids(ids: list[int], max_length: int, head: int = 0) -> tuple[list[int], bool]:
    """Keep the first `head` ids and the last `max_length - head`; say whether anything was cut."""
    if len(ids) <= max_length:
        return ids, False
    # a review's opening and its verdict at the end carry the sentiment; the middle goes
    return ids[:head] + ids[len(ids) - (max_length - head) :], True


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def unk_id(self) -> int: ...

    @property
    def pad_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int | None: ...

    def encode(self, text: str) -> Encoding: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_token(self, token_id: int) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...

    def to_json(self) -> str: ...

    def starting_with(self, prefix: str) -> list[int]: ...

    def read(self, text: str) -> list[int]:
        """The ids a language model reads for raw text (a prompt)."""
        ...

    def show(self, token_id: int, before: str) -> str:
        """The text a generated token adds after the text `before`."""
        ...


class PrefixIndex:
    """Which tokens start with a prefix, ignoring case (a word being typed): the vocabulary
    lower-cased and sorted once, then two bisections per question."""

    def __init__(self, tokens: Iterable[tuple[str, int]]) -> None:
        pairs = sorted((token.lower(), token_id) for token, token_id in tokens)
        self._keys = [key for key, _ in pairs]
        self._ids = [token_id for _, token_id in pairs]

    def ids(self, prefix: str) -> list[int]:
        lowered = prefix.lower()
        start = bisect.bisect_left(self._keys, lowered)
        end = bisect.bisect_left(self._keys, lowered + "\U0010ffff", lo=start)
        return self._ids[start:end]


class WordTokenizer:
    """A word vocabulary; the normalizer and pre-tokenizer travel inside the JSON."""

    kind = "word"

    def __init__(self, tokenizer: HFTokenizer, conventions: TextConventions | None = None) -> None:
        if tokenizer.token_to_id(UNK) is None:
            raise ValueError(f"a word vocabulary needs the unknown token {UNK!r}")
        self._tokenizer = tokenizer
        # a corpus's conventions (models.wordtext): how raw text becomes its tokens and back;
        # None for a vocabulary of raw text, which encode() reads itself
        self.conventions = conventions
        self._prefixes: PrefixIndex | None = None  # built on first use

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())

    @property
    def unk_id(self) -> int:
        unk = self._tokenizer.token_to_id(UNK)
        assert unk is not None  # checked in __init__
        return int(unk)

    @property
    def pad_id(self) -> int | None:
        return self._tokenizer.token_to_id(PAD)

    @property
    def eos_id(self) -> int | None:
        return self._tokenizer.token_to_id(EOS)

    def encode(self, text: str) -> Encoding:
        # no <eos> or other specials added: callers decide where a text ends
        encoded = self._tokenizer.encode(_valid_unicode(text), add_special_tokens=False)
        # offsets index the text as given (the normalizer tracks them), so callers can point
        # back at each token's characters, e.g. for per-token explanations
        return Encoding(list(encoded.ids), [tuple(o) for o in encoded.offsets])  # type: ignore[misc]

    def decode(self, ids: Sequence[int]) -> str:
        # space-joined tokens: exact for pre-tokenized corpora, an approximation of raw text
        return " ".join(self.id_to_token(i) for i in ids)

    def id_to_token(self, token_id: int) -> str:
        token = self._tokenizer.id_to_token(int(token_id))
        return UNK if token is None else str(token)

    def token_to_id(self, token: str) -> int | None:
        found = self._tokenizer.token_to_id(_valid_unicode(token))
        return None if found is None else int(found)

    def vocabulary(self) -> dict[str, int]:
        return dict(self._tokenizer.get_vocab())

    def starting_with(self, prefix: str) -> list[int]:
        """Ids of the words that start with `prefix`, ignoring case."""
        if self._prefixes is None:
            self._prefixes = PrefixIndex(self._tokenizer.get_vocab().items())
        return self._prefixes.ids(prefix)

    def words(self, text: str) -> list[str]:
        """Raw text as the vocabulary's tokens (words not in it included), by its conventions."""
        if self.conventions is not None:
            words = self.conventions.words(text)
            if not self.conventions.abbreviations:
                return words
            return join_abbreviations(words, lambda token: self.token_to_id(token) is not None)
        normalizer, pre_tokenizer = self._tokenizer.normalizer, self._tokenizer.pre_tokenizer
        text = normalizer.normalize_str(text) if normalizer is not None else text
        return [w for w, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else [text]

    def word_id(self, word: str) -> int | None:
        """The word's id in its own case, else lower-cased, else capitalised; None if unknown."""
        for form in (word, word.lower(), word.capitalize()):
            found = self.token_to_id(form)
            if found is not None:
                return found
        return None

    def context_ids(self, words: Sequence[str]) -> list[int]:
        """The ids a language model reads for these words: <eos> first (it read every line as
        following one), unknown words as <unk>."""
        return self.context_of([self.word_id(w) for w in words])

    def context_of(self, found: Sequence[int | None]) -> list[int]:
        """`context_ids` from the words' `word_id`s already looked up (None: unknown)."""
        start = [self.eos_id] if self.eos_id is not None else []
        context = start + [self.unk_id if i is None else i for i in found]
        return context or [self.unk_id]

    def read(self, text: str) -> list[int]:
        return self.context_ids(self.words(text))

    def shown(self, token: str) -> str:
        """A token as a person reads it ("@-@" -> "-" in WikiText)."""
        return self.conventions.display.get(token, token) if self.conventions else token

    def show(self, token_id: int, before: str) -> str:
        """A word with a space before it (none at the start of a line), <eos> as a line break."""
        token = self.id_to_token(token_id)
        if token == EOS:
            return "\n"
        word = self.shown(token)
        return word if before.endswith("\n") else " " + word

    def is_markup(self, token: str) -> bool:
        """A token of the corpus's markup: read in context, never offered to a person."""
        return self.conventions is not None and token in self.conventions.markup

    def to_json(self) -> str:
        if self.conventions is None:
            return str(self._tokenizer.to_str())
        # the tokenizers library's own JSON inside, with the conventions' name beside it
        inner = json.loads(self._tokenizer.to_str())
        name = self.conventions.name
        return json.dumps({"type": "word", "conventions": name, "tokenizer": inner})


def new_word_pipeline(style: str) -> HFTokenizer:
    """An empty word-level tokenizer with the normalizer and pre-tokenizer of a style.

    - "text": raw user text (reviews): NFKC, HTML line breaks removed, lower-cased, words and
      punctuation marks split apart.
    - "pretokenized": corpora already split on spaces (WikiText, PTB): split on whitespace only,
      so the vocabulary is exactly the corpus's own.
    """
    # a placeholder vocabulary: fit_word_tokenizer installs the real one
    tokenizer = HFTokenizer(WordLevel(vocab={UNK: 0}, unk_token=UNK))
    if style == "text":
        # NFKC folds look-alike characters (full-width letters, ligatures) into one spelling;
        # IMDB's "<br />" line breaks become spaces, not words; lower case: "Great" is "great"
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Replace("<br />", "  "), normalizers.Lowercase()]
        )
        # whitespace first, then words and single punctuation marks within each piece
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Split(Regex(_WORD_PATTERN), "isolated"),
            ]
        )
    elif style == "pretokenized":
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(f"style must be 'text' or 'pretokenized', got {style!r}")
    return tokenizer


def fit_word_tokenizer(
    texts: Iterable[str],
    style: str,
    *,
    max_vocab: int | None = None,
    min_frequency: int = 1,
    specials: Sequence[str] = (PAD, UNK),
    conventions: TextConventions | None = None,
) -> WordTokenizer:
    """Fit a vocabulary on `texts` (the training split only): the specials take the first ids,
    then words by falling frequency (ties alphabetical), so the same texts give the same ids."""
    pipeline = new_word_pipeline(style)
    counts: Counter[str] = Counter()
    for text in texts:
        # the very normalizer and pre-tokenizer encode() will run, so fitted words are found
        if pipeline.normalizer is not None:
            text = pipeline.normalizer.normalize_str(text)
        counts.update(word for word, _ in pipeline.pre_tokenizer.pre_tokenize_str(text))
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials))}  # dedup, keep order
    # frequency first, then the word itself: Counter's own order depends on the input order
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for word, count in ranked:
        if count < min_frequency or (max_vocab and len(vocab) >= max_vocab):
            break  # ranked by count: no word after this one would qualify either
        vocab.setdefault(word, len(vocab))
    pipeline.model = WordLevel(vocab=vocab, unk_token=UNK)
    return WordTokenizer(pipeline, conventions)


class CharTokenizer:
    """One id per character; id 0 is the unknown character."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("a character vocabulary needs distinct single characters")
        self._chars = [UNK, *chars]  # id 0: what encode gives a character not in the map
        self._ids = {c: i for i, c in enumerate(self._chars) if i > 0}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def pad_id(self) -> int | None:
        return None

    @property
    def eos_id(self) -> int | None:
        return None

    def encode(self, text: str) -> Encoding:
        ids = [self._ids.get(c, 0) for c in text]
        return Encoding(ids, [(i, i + 1) for i in range(len(text))])

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.id_to_token(i) if i else "\ufffd" for i in ids)

    def id_to_token(self, token_id: int) -> str:
        return self._chars[token_id] if 0 <= token_id < len(self._chars) else UNK

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def to_json(self) -> str:
        return json.dumps(
            {"type": "char", "version": 1, "vocab": self._chars[1:]}, ensure_ascii=False
        )

    def read(self, text: str) -> list[int]:
        return self.encode(text).ids

    def show(self, token_id: int, before: str) -> str:
        return self.decode([token_id])

    def starting_with(self, prefix: str) -> list[int]:
        """Ids of the characters that start with `prefix` (the prefix itself, or all for ""),
        ignoring case."""
        return [
            i for i, c in enumerate(self._chars) if i > 0 and c.lower().startswith(prefix.lower())
        ]


def tokenizer_from_json(text: str) -> Tokenizer:
    """Read either tokenizer kind from its JSON; raises ValueError when it is neither."""
    data = json.loads(text)
    if isinstance(data, dict) and data.get("type") == "char":
        return CharTokenizer(data["vocab"])
    if isinstance(data, dict) and data.get("type") == "word":
        name = data.get("conventions")
        if name not in CONVENTIONS:
            raise ValueError(f"unknown text conventions {name!r}; known: {sorted(CONVENTIONS)}")
        inner = HFTokenizer.from_str(json.dumps(data["tokenizer"]))
        return WordTokenizer(inner, CONVENTIONS[name])
    if isinstance(data, dict) and "model" in data:
        # the tokenizers library's JSON alone (checkpoints before conventions were saved): a
        # corpus split on white space only is WikiText-style, the one such corpus then
        pretokenized = data.get("pre_tokenizer") == {"type": "WhitespaceSplit"}
        return WordTokenizer(HFTokenizer.from_str(text), WIKITEXT if pretokenized else None)
    raise ValueError("not a word (tokenizers JSON) or character vocabulary")

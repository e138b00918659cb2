"""Text corpora for the language-model tasks: WikiText-style word files and one plain text for
characters, read locally or downloaded, split into train / valid / test, and turned into ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.tokenizers import Tokenizer, WordTokenizer
from training.config import LanguageModelTrainConfig
from training.data import CORPORA, DataError, fetch, read_text, sha256_of


@dataclass(frozen=True)
class TextSplits:
    train: str
    valid: str
    test: str
    name: str
    sha256: dict[str, str]


def _first_existing(directory: Path, names: list[str]) -> Path | None:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_word_splits(config: LanguageModelTrainConfig) -> TextSplits:
    """WikiText-style train/valid/test files; a missing valid file is cut from the end of train."""
    if config.data is None:
        name = "wikitext-2"
        paths = {s: fetch(name, s, Path(config.cache_dir)) for s in CORPORA[name].remotes}
    else:
        root = Path(config.data)
        found = {
            s: _first_existing(root, [f"{s}.txt", f"wiki.{s}.tokens"])
            for s in ("train", "valid", "test")
        }
        if found["train"] is None or found["test"] is None:
            raise DataError(f"{root}: needs train.txt and test.txt (optionally .gz)")
        paths = {s: p for s, p in found.items() if p is not None}
        name = root.name
    texts = {split: read_text(path) for split, path in paths.items()}
    if "valid" not in texts:
        lines = texts["train"].splitlines(keepends=True)
        cut = len(lines) - max(1, int(len(lines) * config.valid_fraction))
        texts["train"], texts["valid"] = "".join(lines[:cut]), "".join(lines[cut:])
    hashes = {path.name: sha256_of(path) for path in paths.values()}
    return TextSplits(texts["train"], texts["valid"], texts["test"], name, hashes)


def load_char_splits(config: LanguageModelTrainConfig) -> TextSplits:
    """One text: the last `test_fraction` is the test split (never trained on, as nanoGPT's
    shakespeare_char holds it out). Validation is every k-th block of `valid_block` characters of
    the rest (k = 1 / valid_fraction), so it samples the whole training text: a contiguous cut
    just before the test split would also remove the opening of the play the test split
    continues (in Tiny Shakespeare, The Taming of the Shrew starts at 87.7%)."""
    if config.data is None:
        path = fetch("tinyshakespeare", "text", Path(config.cache_dir))
    else:
        root = Path(config.data)
        found = _first_existing(root, ["input.txt"]) if root.is_dir() else root
        if found is None or not found.is_file():
            raise DataError(f"{root}: no input.txt (optionally .gz) found")
        path = found
    text = read_text(path)
    test_start = int(len(text) * (1 - config.test_fraction))
    every = max(2, round(1 / config.valid_fraction))
    block = max(1, min(config.valid_block, test_start // (every * 4)))  # >= 4 validation blocks
    blocks = [text[i : min(i + block, test_start)] for i in range(0, test_start, block)]
    valid = [b for i, b in enumerate(blocks) if i % every == every - 1]
    train = [b for i, b in enumerate(blocks) if i % every != every - 1]
    # the corpus's name: its folder's for the canonical file name (tinyshakespeare/input.txt)
    file_name = path.name.removesuffix(".gz")
    name = path.parent.name if file_name == "input.txt" else file_name.rsplit(".", 1)[0]
    return TextSplits(
        "".join(train), "".join(valid), text[test_start:], name, {path.name: sha256_of(path)}
    )


def word_ids(tokenizer: WordTokenizer, text: str) -> torch.Tensor:
    """Whitespace tokens with one <eos> per line, as the WikiText-2 benchmark counts them."""
    vocab, unk = tokenizer.vocabulary(), tokenizer.unk_id
    eos = tokenizer.eos_id
    assert eos is not None
    ids: list[int] = []
    for line in text.splitlines():
        ids.extend(vocab.get(word, unk) for word in line.split())
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def char_ids(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text).ids, dtype=torch.long)

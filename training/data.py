"""Corpus readers: the shipped formats, users' own JSONL/CSV/text files, and the canonical public
archives downloaded into a cache with sha256 verification (a bad download is never used)."""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
import random
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from models.format import sha256_file as sha256_of


class DataError(Exception):
    """Data that cannot be used: a failed or corrupted download, a malformed file."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass(frozen=True)
class Remote:
    """A public file and the sha256 it must have."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Corpus:
    """A data set's canonical public source and what the shipped local copy is called."""

    name: str
    remotes: dict[str, Remote]
    local_files: dict[str, str]


_WT2 = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
CORPORA: dict[str, Corpus] = {
    "imdb": Corpus(
        "imdb",
        {
            "archive": Remote(
                "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
            )
        },
        {"train": "train.jsonl.gz", "test": "test.jsonl.gz"},
    ),
    "wikitext-2": Corpus(
        "wikitext-2",
        {
            "train": Remote(
                f"{_WT2}/train.txt",
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            ),
            "valid": Remote(
                f"{_WT2}/valid.txt",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            ),
            "test": Remote(
                f"{_WT2}/test.txt",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            ),
        },
        {"train": "train.txt.gz", "valid": "valid.txt.gz", "test": "test.txt.gz"},
    ),
    "tinyshakespeare": Corpus(
        "tinyshakespeare",
        {
            "text": Remote(
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            )
        },
        {"text": "input.txt.gz"},
    ),
}


def download(remote: Remote, cache_dir: Path, *, progress: bool = True) -> Path:
    """Fetch `remote` into `cache_dir` unless a verified copy is there; return its path.

    Bytes go to a `.part` file that is renamed only after its sha256 matches, so an interrupted
    or corrupted download is never mistaken for a good one.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{remote.sha256[:16]}-{Path(remote.url).name}"
    if target.exists() and sha256_of(target) == remote.sha256:
        return target
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                partial.open("wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=Path(remote.url).name,
                    disable=not progress,
                ) as bar,
            ):
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        if total is not None and partial.stat().st_size != total:
            raise DataError(
                f"download of {remote.url} was interrupted: got {partial.stat().st_size} of "
                f"{total} bytes"
            )
    except (OSError, http.client.HTTPException) as error:
        # HTTPException: e.g. IncompleteRead when a chunked body is cut off
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {remote.url} failed: {error}") from None
    except DataError:
        partial.unlink(missing_ok=True)
        raise
    actual = sha256_of(partial)
    if actual != remote.sha256:
        partial.unlink()
        raise DataError(
            f"checksum mismatch for {remote.url}: expected sha256 {remote.sha256}, got {actual}; "
            "the file was discarded"
        )
    partial.rename(target)
    return target


def fetch(corpus_name: str, part: str, cache_dir: Path) -> Path:
    """`download` one part of a canonical corpus; a failure is one line saying what could not be
    fetched, from where, and how to train without the network (`--data` with a local copy)."""
    corpus = CORPORA[corpus_name]
    try:
        return download(corpus.remotes[part], cache_dir)
    except DataError as error:
        files = ", ".join(corpus.local_files.values())
        reason = " ".join(str(error).split())  # one line, whatever the error's text held
        raise DataError(
            f"could not get the {corpus.name} corpus: {reason}. Without network access, pass "
            f"--data with a local copy ({files}, or the same names without .gz)"
        ) from None


def open_text(path: Path) -> IO[str]:
    """Open a UTF-8 text file, gzip-compressed or not."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_text(path: Path) -> str:
    with open_text(path) as handle:
        return handle.read()


def _label(value: object, path: Path, line: int) -> int:
    names = {"0": 0, "1": 1, "neg": 0, "negative": 0, "pos": 1, "positive": 1}
    label = names.get(str(value).strip().lower())
    if label is None:
        raise DataError(f"{path.name}, record {line}: label {value!r} is not 0/1/negative/positive")
    return label


def find_labeled(directory: Path, split: str) -> Path | None:
    """The `split` file (train, test) of labeled texts in `directory`: .jsonl or .csv, optionally
    .gz; None if there is none."""
    for suffix in (".jsonl.gz", ".jsonl", ".csv.gz", ".csv"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def read_labeled(path: Path) -> list[Example]:
    """Read a JSONL or CSV file (optionally .gz) with `text` and `label` fields."""
    name = path.name.removesuffix(".gz")
    with open_text(path) as handle:
        if name.endswith(".jsonl"):
            rows: Iterator[dict[str, object]] = (
                json.loads(line) for line in handle if line.strip()
            )
        elif name.endswith(".csv"):
            rows = csv.DictReader(handle)
        else:
            raise DataError(f"{path.name}: expected a .jsonl or .csv file (optionally .gz)")
        examples = []
        for number, row in enumerate(rows, start=1):
            if "text" not in row or "label" not in row:
                raise DataError(f"{path.name}, record {number}: needs 'text' and 'label' fields")
            examples.append(Example(str(row["text"]), _label(row["label"], path, number)))
    return examples


def read_imdb_archive(archive: Path, split: str) -> list[Example]:
    """Read aclImdb/<split>/{pos,neg}/*.txt from the official tar.gz, in a fixed order."""
    found: list[tuple[str, Example]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if (
                len(parts) == 4
                and parts[1] == split
                and parts[2] in ("pos", "neg")
                and member.isfile()
            ):
                data = tar.extractfile(member)
                assert data is not None
                text = io.TextIOWrapper(data, encoding="utf-8").read()
                found.append((member.name, Example(text, 1 if parts[2] == "pos" else 0)))
    if not found:
        raise DataError(f"{archive.name}: no aclImdb/{split}/pos|neg reviews inside")
    found.sort(key=lambda item: item[0])
    examples = [example for _, example in found]
    random.Random(0).shuffle(examples)
    return examples


def split_validation(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Carve a stratified validation split from the training data."""
    rng = random.Random(seed)
    train: list[Example] = []
    valid: list[Example] = []
    for label in sorted({e.label for e in examples}):
        group = [e for e in examples if e.label == label]
        rng.shuffle(group)
        cut = round(len(group) * fraction)
        valid.extend(group[:cut])
        train.extend(group[cut:])
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid

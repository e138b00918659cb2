"""Downloads from a real local HTTP server: verified and cached, and a corrupted or interrupted
download raises DataError and leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from training import data as data_module
from training import language, sentiment
from training.config import LanguageModelTrainConfig, SentimentConfig
from training.data import (
    Corpus,
    DataError,
    Example,
    Remote,
    download,
    read_imdb_archive,
    sha256_of,
)

from .conftest import FileServer, free_port, imdb_archive, sha256_bytes, wikitext

BODY = bytes(random.Random(0).randrange(256) for _ in range(200_000))  # several 64 KiB blocks


def serve(server: FileServer, path: str, body: bytes = BODY) -> Remote:
    server.files[path] = body
    return Remote(server.url(path), sha256_bytes(body))


def test_good_download_is_verified_and_cached(file_server: FileServer, tmp_path: Path) -> None:
    remote = serve(file_server, "/files/corpus.bin")
    cache = tmp_path / "cache"
    path = download(remote, cache, progress=False)
    assert path == cache / f"{remote.sha256[:16]}-corpus.bin"
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in cache.iterdir()) == [path.name]
    assert file_server.requests == {"/files/corpus.bin": 1}
    # the second call finds the verified copy and does not ask the server
    assert download(remote, cache, progress=False) == path
    assert file_server.requests == {"/files/corpus.bin": 1}


def test_a_corrupted_cached_copy_is_fetched_again(file_server: FileServer, tmp_path: Path) -> None:
    remote = serve(file_server, "/corpus.bin")
    path = download(remote, tmp_path, progress=False)
    path.write_bytes(BODY[:-1] + b"!")
    assert download(remote, tmp_path, progress=False) == path
    assert path.read_bytes() == BODY
    assert file_server.requests == {"/corpus.bin": 2}


def test_checksum_mismatch_raises_and_leaves_no_file(
    file_server: FileServer, tmp_path: Path
) -> None:
    good = serve(file_server, "/corpus.bin")
    wrong = Remote(good.url, sha256_bytes(b"something else"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"checksum mismatch.*got {good.sha256}"):
        download(wrong, cache, progress=False)
    assert list(cache.iterdir()) == []  # neither the target nor the .part file
    assert file_server.requests == {"/corpus.bin": 1}
    # and the next attempt downloads again rather than trusting anything left over
    with pytest.raises(DataError, match="checksum mismatch"):
        download(wrong, cache, progress=False)
    assert file_server.requests == {"/corpus.bin": 2}


def test_fewer_bytes_than_content_length_raises_and_leaves_nothing(
    file_server: FileServer, tmp_path: Path
) -> None:
    remote = serve(file_server, "/cut.bin")
    file_server.truncate["/cut.bin"] = 70_000
    with pytest.raises(DataError, match="interrupted: got 70000 of 200000 bytes"):
        download(remote, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_chunked_body_cut_off_raises_and_leaves_nothing(
    file_server: FileServer, tmp_path: Path
) -> None:
    remote = serve(file_server, "/chunked.bin")
    file_server.chunked.add("/chunked.bin")
    file_server.truncate["/chunked.bin"] = 70_000
    with pytest.raises(DataError, match="failed"):
        download(remote, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    # served whole, the same chunked response downloads fine
    del file_server.truncate["/chunked.bin"]
    assert download(remote, tmp_path / "cache", progress=False).read_bytes() == BODY


def test_http_errors_raise_data_error(file_server: FileServer, tmp_path: Path) -> None:
    missing = Remote(file_server.url("/missing.bin"), sha256_bytes(b""))
    with pytest.raises(DataError, match="failed: HTTP Error 404"):
        download(missing, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unreachable_server_raises_data_error(tmp_path: Path) -> None:
    remote = Remote(f"http://127.0.0.1:{free_port()}/x.bin", sha256_bytes(b""))
    with pytest.raises(DataError, match="failed"):
        download(remote, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


TRAIN = {"pos": ["A fine film.", "Loved it <br />truly."], "neg": ["Dull.", "Awful plot.", "Meh."]}
TEST = {"pos": ["Great cast."], "neg": ["Boring ending.", "Ugh."]}
EXTRA = {"aclImdb/train/unsup/0_0.txt": "unlabelled", "aclImdb/README": "readme"}


def _expected(split: dict[str, list[str]], name: str) -> list[Example]:
    """The reader's documented order: sorted by member name, then shuffled with seed 0."""
    members = sorted(
        (
            f"aclImdb/{name}/{kind}/{i}_{8 if kind == 'pos' else 2}.txt",
            Example(t, int(kind == "pos")),
        )
        for kind, texts in split.items()
        for i, t in enumerate(texts)
    )
    examples = [example for _, example in members]
    random.Random(0).shuffle(examples)
    return examples


def test_imdb_archive_over_http(file_server: FileServer, tmp_path: Path) -> None:
    remote = serve(file_server, "/aclImdb_v1.tar.gz", imdb_archive(TRAIN, TEST, EXTRA))
    archive = download(remote, tmp_path, progress=False)
    train = read_imdb_archive(archive, "train")
    test = read_imdb_archive(archive, "test")
    assert sorted((e.text, e.label) for e in train) == sorted(
        [(t, 1) for t in TRAIN["pos"]] + [(t, 0) for t in TRAIN["neg"]]
    )
    assert sorted((e.text, e.label) for e in test) == [
        ("Boring ending.", 0),
        ("Great cast.", 1),
        ("Ugh.", 0),
    ]
    assert train == _expected(TRAIN, "train")
    assert test == _expected(TEST, "test")
    with pytest.raises(DataError, match="no aclImdb/unsup/pos"):
        read_imdb_archive(archive, "unsup")


def test_sentiment_load_data_downloads_the_archive(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = {"pos": [f"good film number {i}" for i in range(10)]}
    train["neg"] = [f"bad film number {i}" for i in range(10)]
    remote = serve(file_server, "/aclImdb_v1.tar.gz", imdb_archive(train, TEST))
    corpus = Corpus("imdb", {"archive": remote}, {})
    monkeypatch.setitem(data_module.CORPORA, "imdb", corpus)
    config = SentimentConfig(data=None, cache_dir=str(tmp_path / "cache"), valid_fraction=0.2)
    loaded = sentiment.load_data(config)
    archive = tmp_path / "cache" / f"{remote.sha256[:16]}-aclImdb_v1.tar.gz"
    assert loaded.sha256 == {archive.name: remote.sha256}
    assert loaded.name == "imdb (aclImdb_v1.tar.gz)"
    assert loaded.test == _expected(TEST, "test")
    assert (len(loaded.train), len(loaded.valid)) == (16, 4)
    assert sorted(e.label for e in loaded.valid) == [0, 0, 1, 1]
    assert {e.text for e in loaded.train + loaded.valid} == {*train["pos"], *train["neg"]}
    # a second load reads the cache
    sentiment.load_data(config)
    assert file_server.requests == {"/aclImdb_v1.tar.gz": 1}


def test_a_bad_archive_download_is_never_used(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = imdb_archive(TRAIN, TEST)
    file_server.files["/aclImdb_v1.tar.gz"] = body[:-10] + b"0123456789"
    remote = Remote(file_server.url("/aclImdb_v1.tar.gz"), sha256_bytes(body))
    monkeypatch.setitem(data_module.CORPORA, "imdb", Corpus("imdb", {"archive": remote}, {}))
    with pytest.raises(DataError, match="checksum mismatch"):
        sentiment.load_data(SentimentConfig(cache_dir=str(tmp_path / "cache")))
    assert list((tmp_path / "cache").iterdir()) == []


def test_word_splits_download_the_three_files(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(0)
    texts = {split: wikitext(rng, sections=2, words=20) for split in ("train", "valid", "test")}
    remotes = {s: serve(file_server, f"/wt2/{s}.txt", t.encode()) for s, t in texts.items()}
    corpus = Corpus("wikitext-2", remotes, {})
    monkeypatch.setitem(data_module.CORPORA, "wikitext-2", corpus)
    config = LanguageModelTrainConfig(data=None, cache_dir=str(tmp_path))
    splits = language.load_word_splits(config)
    assert (splits.train, splits.valid, splits.test) == (
        texts["train"],
        texts["valid"],
        texts["test"],
    )
    assert splits.name == "wikitext-2"
    assert sorted(splits.sha256.values()) == sorted(r.sha256 for r in remotes.values())


def test_char_splits_download_the_text(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "ROMEO:\nBut soft!\n\n" * 20
    remote = serve(file_server, "/input.txt", text.encode())
    monkeypatch.setitem(
        data_module.CORPORA, "tinyshakespeare", Corpus("tinyshakespeare", {"text": remote}, {})
    )
    config = LanguageModelTrainConfig(data=None, cache_dir=str(tmp_path / "cache"))
    splits = language.load_char_splits(config)
    assert sorted(splits.train + splits.valid + splits.test) == sorted(text)
    assert text.endswith(splits.test)
    cached = tmp_path / "cache" / f"{remote.sha256[:16]}-input.txt"
    assert splits.sha256 == {cached.name: sha256_of(cached)}

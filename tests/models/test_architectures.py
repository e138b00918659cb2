"""Architectures: padding never changes a result; stepping with carried state equals one pass."""

from __future__ import annotations

import pytest
import torch

from models.architectures import LanguageModel, SequenceClassifier
from models.config import ClassifierConfig, LanguageModelConfig
from models.recurrent import reverse_within_lengths

CELLS = ["lstm", "gru", "rnn"]


def _batch(vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length] = torch.randint(1, vocab, (length,), generator=generator)
    return tokens, torch.tensor(lengths)


def test_reverse_within_lengths_keeps_padding_in_place() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    out = reverse_within_lengths(x, torch.tensor([3, 2]))
    assert out.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_classifier_batch_equals_each_sequence_alone(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(
        vocab_size=50,
        embed_dim=8,
        hidden_dim=6,
        num_layers=2,
        cell=cell,
        bidirectional=bidirectional,
        pooling=("last", "mean", "max"),
        pool_embeddings=True,
        ngram_buckets=97,
        ngram_dim=3,
    )
    model = SequenceClassifier(config).eval()
    tokens, lengths = _batch(50, [7, 3, 5, 1])
    batched, _ = model(tokens, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone, _ = model(tokens[row : row + 1, :length], lengths[row : row + 1])
        torch.testing.assert_close(batched[row], alone[0], rtol=0, atol=1e-6)


def test_word_pairs_change_the_answer_and_need_the_tokens() -> None:
    torch.manual_seed(3)
    config = ClassifierConfig(vocab_size=30, embed_dim=4, hidden_dim=4, ngram_buckets=53)
    model = SequenceClassifier(config).eval()
    tokens, lengths = _batch(30, [6], seed=3)
    with torch.no_grad():
        before, _ = model(tokens, lengths)
        model.ngrams.weight.mul_(100)  # type: ignore[union-attr]
        after, _ = model(tokens, lengths)
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="needs the tokens"):
        model.classify(model.embedding(tokens), lengths)


@pytest.mark.parametrize("cell", CELLS)
def test_classifier_padded_training_path_equals_packed(cell: str) -> None:
    torch.manual_seed(1)
    config = ClassifierConfig(vocab_size=40, embed_dim=8, hidden_dim=5, num_layers=2, cell=cell)
    model = SequenceClassifier(config).eval()
    tokens, lengths = _batch(40, [9, 4, 6, 2], seed=1)
    packed, _ = model(tokens, lengths, packed=True)
    padded, _ = model(tokens, lengths, packed=False)
    torch.testing.assert_close(packed, padded, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_stepping_equals_one_pass(cell: str) -> None:
    torch.manual_seed(2)
    model = LanguageModel(
        LanguageModelConfig(vocab_size=30, embed_dim=8, hidden_dim=12, num_layers=2, cell=cell)
    ).eval()
    tokens, _ = _batch(30, [10], seed=2)
    full, _ = model(tokens)
    state = None
    for t in range(tokens.shape[1]):
        step, state = model(tokens[:, t : t + 1], state)
        torch.testing.assert_close(step[0, 0], full[0, t], rtol=0, atol=1e-5)


def test_language_model_packed_state_is_state_at_each_rows_end() -> None:
    torch.manual_seed(3)
    model = LanguageModel(LanguageModelConfig(vocab_size=30, embed_dim=8, hidden_dim=12)).eval()
    tokens, lengths = _batch(30, [6, 2, 4], seed=3)
    logits, (h, c) = model(tokens, lengths=lengths)
    for row, length in enumerate(lengths.tolist()):
        alone, (h1, c1) = model(tokens[row : row + 1, :length])
        torch.testing.assert_close(logits[row, :length], alone[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(h[:, row], h1[:, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(c[:, row], c1[:, 0], rtol=0, atol=1e-6)


def test_adaptive_softmax_logits_are_normalised_log_probs() -> None:
    torch.manual_seed(4)
    config = LanguageModelConfig(
        vocab_size=40, embed_dim=8, hidden_dim=8, adaptive_cutoffs=(10, 20), adaptive_div_value=2.0
    )
    model = LanguageModel(config).eval()
    tokens, _ = _batch(40, [5], seed=4)
    hidden, _ = model.features(tokens)
    logits = model.logits(hidden)  # (1, 5, 40)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(1, 5), rtol=0, atol=1e-5)
    targets = tokens[0]
    picked = model.target_log_probs(hidden[0], targets)
    torch.testing.assert_close(
        picked, logits[0].gather(1, targets[:, None])[:, 0], atol=1e-5, rtol=0
    )


def test_tied_weights_share_one_tensor() -> None:
    model = LanguageModel(
        LanguageModelConfig(vocab_size=20, embed_dim=8, hidden_dim=16, tie_weights=True)
    )
    assert model.head[1].weight is model.embedding.weight


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "transformer"}, "cell must be one of"),
        ({"pooling": ("median",)}, "pooling must be"),
        ({"dropout": 1.0}, "dropout must be"),
    ],
)
def test_classifier_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(vocab_size=10, **kwargs)  # type: ignore[arg-type]


def test_language_model_config_rejects_tied_adaptive() -> None:
    with pytest.raises(ValueError, match="tie_weights cannot be combined"):
        LanguageModelConfig(vocab_size=100, tie_weights=True, adaptive_cutoffs=(10,))


def test_next_logits_equals_the_last_real_position_of_a_full_pass() -> None:
    torch.manual_seed(5)
    model = LanguageModel(
        LanguageModelConfig(
            vocab_size=40,
            embed_dim=8,
            hidden_dim=8,
            adaptive_cutoffs=(10, 20),
            adaptive_div_value=2.0,
        )
    ).eval()
    tokens, lengths = _batch(40, [6, 2, 4], seed=5)
    full, _ = model(tokens, lengths=lengths)
    last, _ = model.next_logits(tokens, lengths=lengths)
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(last[row], full[row, length - 1], rtol=0, atol=1e-6)
    unpadded, _ = model.next_logits(tokens[:1])
    torch.testing.assert_close(unpadded[0], full[0, -1], rtol=0, atol=1e-6)

"""How much a character model reads its prompt: a play's text names its speaker ("ROMEO:\\n")
before each speech, so the name should change what follows. Measured on the test split as the
mean KL divergence, per character, between the next-character distributions after two names
followed by the same speech, read character by character (teacher forcing). 0: the name is
ignored; the shipped model before this measure existed gave identical 300-character samples for
"ROMEO:\\n" and "KING HENRY:\\n" with one seed."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import torch

from models.architectures import LanguageModel
from models.cache import WindowedMemory
from models.config import CacheConfig
from models.speakers import NAME, SpeakerInputs, speaker_inputs, speakers_of
from models.tokenizers import Tokenizer

# a speaker's line: after a blank line (a new speech), a capitalised name and a colon, alone on
# its line ("And then take hands:" inside a speech is not one); the name as models.speakers reads it
_SPEAKER = re.compile(rf"(?:\A|\n\n)({NAME.pattern}):\n")


def speeches(text: str, length: int) -> list[tuple[str, str]]:
    """(name, the first `length` characters after the name's line) for every speech that long."""
    found = []
    for match in _SPEAKER.finditer(text):
        speech = text[match.end() : match.end() + length]
        if len(speech) == length:
            found.append((match.group(1), speech))
    return found


def _log_probs(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    speech: str,
    cache: CacheConfig | None = None,
    speakers: SpeakerInputs | None = None,
) -> torch.Tensor:
    """Log-probabilities (len(speech), V) of each character of the speech, after the prompt (of
    the model and its continuous cache, where it has one; a model that reads speakers needs
    `speakers`)."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt + speech).ids], device=device)  # (1, T)
    # a model that reads speakers reads the prompt's name beside the speech
    beside = speakers.of_ids(ids[:, :-1]) if speakers is not None else None
    # (1, T-1, H): each position predicts the next
    hidden, _ = model.features(ids[:, :-1], speakers=beside)
    log_probs = torch.log_softmax(model.logits(hidden).float(), -1)  # (1, T-1, V)
    if cache is not None:
        log_probs = WindowedMemory(cache).log_probs(log_probs, hidden, ids[:, 1:])
    start = len(tokenizer.encode(prompt).ids) - 1  # the position that predicts the speech's first
    return log_probs[0, start:]  # (len(speech), V)


def name_dependence(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    cache: CacheConfig | None = None,
    pairs: int = 100,
    length: int = 200,
) -> dict[str, float]:
    """Mean per-character KL(p(. | A:\\n speech) || p(. | B:\\n speech)) over `pairs` speeches of
    the text, A the speech's own speaker and B another speaker of the text (fixed choices)."""
    found = speeches(text, length)
    names = sorted({name for name, _ in found})
    if len(names) < 2:
        return {}
    rng = random.Random(0)
    chosen = rng.sample(found, min(pairs, len(found)))
    speakers = speaker_inputs(model, tokenizer)  # each name encoded once for the whole measure
    kl = own_loss = swapped_loss = 0.0
    own_better = 0.0
    with torch.inference_mode():
        for name, speech in chosen:
            other = rng.choice([n for n in names if n != name])
            own = _log_probs(model, tokenizer, f"{name}:\n", speech, cache, speakers)  # (L, V)
            swapped = _log_probs(model, tokenizer, f"{other}:\n", speech, cache, speakers)
            kl += float((own.exp() * (own - swapped)).sum(-1).mean())
            # the speech's own characters: how well each prompt, read from nothing as a
            # generation reads it, predicts what the speaker said
            said = torch.tensor(tokenizer.encode(speech).ids, device=own.device)[:, None]
            own_nats, swapped_nats = (
                -float(own.gather(1, said).mean()),
                -float(swapped.gather(1, said).mean()),
            )
            own_loss += own_nats
            swapped_loss += swapped_nats
            own_better += (
                1.0 if own_nats < swapped_nats else 0.5 if own_nats == swapped_nats else 0.0
            )
    count = len(chosen)
    return {
        "name_kl_nats_per_char": kl / count,
        "name_pairs": float(count),
        # nats per character of the speech after its own speaker's name, from a zero state
        "speech_loss_own_name": own_loss / count,
        # after another speaker's name: above the own name's when the model uses the name
        "speech_loss_other_name": swapped_loss / count,
        # the share of speeches their own speaker's name predicts better than another's (a tie
        # counts half): 0.5 for a model that ignores the name
        "speech_own_name_better": own_better / count,
    }


_WORD = re.compile(r"[A-Za-z']+")


def unigram_name_gain(
    train: str, text: str, weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
) -> float:
    """How much a speaker's name can be worth, in nats per character of `text`: the gain of a
    word unigram per speaker (fitted on `train`, mixed with the corpus's at the best of
    `weights` for `text`, so an optimistic figure) over the corpus's unigram, on the words
    spoken by a known speaker (name lines left out), divided by every character of `text`."""

    def spoken(play: str) -> list[tuple[str, str]]:
        """(speaker, word) for the words of the speeches (name lines left out)."""
        names = speakers_of(play)
        found, start = [], 0
        for line in play.splitlines(keepends=True):
            bare = line.rstrip("\n")
            if not (bare.endswith(":") and NAME.fullmatch(bare[:-1])):
                for match in _WORD.finditer(line):
                    name = names[start + match.start()]
                    if name is not None:
                        found.append((name, match.group(0).lower()))
            start += len(line)
        return found

    corpus: Counter[str] = Counter()
    by_speaker: dict[str, Counter[str]] = {}
    for name, word in spoken(train):
        corpus[word] += 1
        by_speaker.setdefault(name, Counter())[word] += 1
    size, total = len(corpus) + 1, sum(corpus.values())  # +1: a word never seen
    heard = spoken(text)

    def base(word: str) -> float:
        return (corpus[word] + 0.1) / (total + 0.1 * size)

    def gain(weight: float) -> float:
        nats = 0.0
        for name, word in heard:
            own = by_speaker.get(name)
            if own is None:
                continue
            said = sum(own.values())
            speaker = (own[word] + 0.1 * base(word) * size) / (said + 0.1 * size)
            nats += math.log((1 - weight) * base(word) + weight * speaker) - math.log(base(word))
        return nats / max(1, len(text))

    return max(gain(weight) for weight in weights)

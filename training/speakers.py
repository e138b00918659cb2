"""How much a character model reads its prompt: a play's text names its speaker ("ROMEO:\\n")
before each speech, so the name should change what follows. Measured on the test split as the
mean KL divergence, per character, between the next-character distributions after two names
followed by the same speech, read character by character (teacher forcing). 0: the name is
ignored; the shipped model before this measure existed gave identical 300-character samples for
"ROMEO:\\n" and "KING HENRY:\\n" with one seed."""

from __future__ import annotations

import random
import re
from collections import Counter

import torch

from models.architectures import LanguageModel
from models.cache import WindowedMemory
from models.config import CacheConfig
from models.tokenizers import Tokenizer

# a speaker's line: after a blank line (a new speech), a capitalised name and a colon, alone on
# its line ("And then take hands:" inside a speech is not one)
_SPEAKER = re.compile(r"(?:\A|\n\n)([A-Z][A-Za-z' ]{1,30}):\n")


def speeches(text: str, length: int) -> list[tuple[str, str]]:
    """(name, the first `length` characters after the name's line) for every speech that long."""
    found = []
    for match in _SPEAKER.finditer(text):
        speech = text[match.end() : match.end() + length]
        if len(speech) == length:
            found.append((match.group(1), speech))
    return found


# a speaker heard this often in the training text gets a class of its own in the speaker loss
MIN_SPEECHES = 5


def speaker_targets(text: str, min_speeches: int = MIN_SPEECHES) -> tuple[torch.Tensor, list[str]]:
    """Who is speaking at each character of a play's text: (len(text),) class ids into the
    returned names (those with at least `min_speeches` speeches), -1 where no such speaker is.

    A speaker is known from the newline that ends their name's line (a model that has read it
    knows the name) to the end of the speech; the blank line and the name line of the next
    speech are -1, as a reader cannot yet tell who speaks next."""
    found = list(_SPEAKER.finditer(text))
    counts = Counter(match.group(1) for match in found)
    names = sorted(name for name, count in counts.items() if count >= min_speeches)
    index = {name: number for number, name in enumerate(names)}
    targets = torch.full((len(text),), -1, dtype=torch.long)
    ends = [following.start() for following in found[1:]] + [len(text)] if found else []
    for this, end in zip(found, ends, strict=True):
        targets[this.end() - 1 : end] = index.get(this.group(1), -1)
    return targets, names


def _log_probs(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    speech: str,
    cache: CacheConfig | None = None,
) -> torch.Tensor:
    """Log-probabilities (len(speech), V) of each character of the speech, after the prompt (of
    the model and its continuous cache, where it has one)."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt + speech).ids], device=device)  # (1, T)
    hidden, _ = model.features(ids[:, :-1])  # (1, T-1, H): each position predicts the next
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
    kl = own_loss = swapped_loss = 0.0
    with torch.inference_mode():
        for name, speech in chosen:
            other = rng.choice([n for n in names if n != name])
            own = _log_probs(model, tokenizer, f"{name}:\n", speech, cache)  # (L, V)
            swapped = _log_probs(model, tokenizer, f"{other}:\n", speech, cache)  # (L, V)
            kl += float((own.exp() * (own - swapped)).sum(-1).mean())
            # the speech's own characters: how well each prompt, read from nothing as a
            # generation reads it, predicts what the speaker said
            said = torch.tensor(tokenizer.encode(speech).ids, device=own.device)[:, None]
            own_loss -= float(own.gather(1, said).mean())
            swapped_loss -= float(swapped.gather(1, said).mean())
    count = len(chosen)
    return {
        "name_kl_nats_per_char": kl / count,
        "name_pairs": float(count),
        # nats per character of the speech after its own speaker's name, from a zero state
        "speech_loss_own_name": own_loss / count,
        # after another speaker's name: above the own name's when the model uses the name
        "speech_loss_other_name": swapped_loss / count,
    }

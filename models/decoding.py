"""Pure decoding functions: seeded sampling (temperature, top-k, top-p) and incremental generation
that carries the recurrent state."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence

import torch

from models.architectures import LanguageModel
from models.cache import Memory
from models.config import CacheConfig, SamplingParams
from models.speakers import SpeakerInputs, SpeakerTracker


def apply_penalties(
    logits: torch.Tensor,
    counts: Mapping[int, int],
    params: SamplingParams,
    prompt_ids: Collection[int] = (),
) -> torch.Tensor:
    """Logits (V,) less, for each token generated so far, `frequency_penalty` times its count
    and `presence_penalty` once (OpenAI's definition): greedy decoding of a character model
    otherwise loops on "the state of the state". Then the repetition penalty of Keskar et al.
    (2019), as Hugging Face and vLLM apply it: each token of the prompt or of the text so far has
    a positive logit divided by it and a negative one multiplied. A new tensor; the input is not
    changed."""
    if not params.penalised or not (counts or (prompt_ids and params.repetition_penalty != 1)):
        return logits
    if counts and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)  # (U,)
        times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        penalty = params.frequency_penalty * times + params.presence_penalty * (times > 0)
        logits = logits.index_add(0, ids, -penalty)  # (V,)
    if params.repetition_penalty != 1.0:
        seen = sorted(set(prompt_ids).union(counts))
        ids = torch.tensor(seen, dtype=torch.long, device=logits.device)  # (S,)
        values = logits[ids]  # (S,)
        factor = params.repetition_penalty
        # dividing a positive logit and multiplying a negative one both lower it (factor > 1)
        lowered = torch.where(values > 0, values / factor, values * factor)  # (S,)
        logits = logits.index_copy(0, ids, lowered)
    return logits


# Below this temperature, sampling is greedy: logits divided by it leave float range (1e-40 made
# every probability NaN, and the draw fell through to the last token), and the distribution is
# already one token, short of ties closer than 1e-6 in logit.
MIN_TEMPERATURE = 1e-4


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Scale by temperature and mask tokens outside top-k / the top-p nucleus; logits (V,).
    In float64; NaN logits are masked (never sampled); the most likely token always stays."""
    scaled = torch.nan_to_num(logits.double(), nan=float("-inf"))
    scaled = scaled / max(params.temperature, MIN_TEMPERATURE)
    if 0 < params.top_k < scaled.shape[-1]:
        threshold = scaled.topk(params.top_k).values[-1]  # the k-th largest logit
        # ties with the k-th are kept: which of equal tokens to drop would be arbitrary
        scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = scaled.sort(descending=True)  # (V,), most likely first
        probs = torch.softmax(sorted_logits, dim=-1)  # (V,)
        # drop a token once the mass before it already reaches top_p; the first always stays
        # (a top_p below the float resolution would otherwise drop every token)
        drop_sorted = (probs.cumsum(-1) - probs) >= params.top_p
        drop_sorted[0] = False
        # scatter maps the mask from sorted positions back to token ids
        scaled = scaled.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    return scaled


def _greedy(logits: torch.Tensor) -> int:
    """The most likely token, never a NaN one (ValueError when every logit is NaN)."""
    values = torch.nan_to_num(logits.double(), nan=float("-inf"))
    if not bool((values > float("-inf")).any()):
        raise ValueError("the logits hold no usable value (all NaN or -inf)")
    return int(values.argmax())


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token id from logits (V,). One uniform draw per token, so a seed fixes the text."""
    if params.temperature < MIN_TEMPERATURE or bool(torch.isposinf(logits).any()):
        return _greedy(logits)  # (a +inf logit is a certain token)
    filtered = filter_logits(logits, params)
    if not bool((filtered > float("-inf")).any()):
        return _greedy(logits)
    probs = torch.softmax(filtered, dim=-1).cpu()  # (V,), masked tokens exactly 0
    cumulative = probs.cumsum(0)  # (V,)
    # inverse-CDF sampling: token i owns [cumulative[i-1], cumulative[i]); scaling the draw by
    # the total keeps it inside the buckets when rounding leaves the sum a little off 1
    draw = torch.rand((), generator=generator, dtype=torch.float64) * cumulative[-1]
    index = int(torch.searchsorted(cumulative, draw.reshape(1), right=True))
    # float rounding can put the draw past the last non-zero bucket; step back to one that has mass
    index = min(index, probs.shape[0] - 1)
    while probs[index] == 0:
        index -= 1
    return index


def make_generator(seed: int) -> torch.Generator:
    """A generator used by one request only. A CPU one whatever the model's device: draws are
    taken on the CPU, so a seed gives the same text on any device."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@torch.inference_mode()
def generate_ids(
    model: LanguageModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    params: SamplingParams,
    generator: torch.Generator,
    cache: CacheConfig | None = None,
    speakers: SpeakerInputs | None = None,
) -> Iterator[int]:
    """Yield sampled token ids one at a time; each step feeds one token and carries the state.
    With a `cache`, each distribution is the model's mixed with its continuous cache over the
    prompt and the text generated so far. A model that reads speakers needs `speakers`: the
    speaker named in the prompt, and any the text goes on to name, is read beside each token."""
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token")
    device = next(model.parameters()).device
    tokens = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    tracker = SpeakerTracker()
    beside = speakers.of_text(prompt_ids, tracker)[None] if speakers is not None else None
    hidden, state = model.features(tokens, speakers=beside)  # (1, T, H)
    last = hidden[0, -1]  # (H,): the output the next token's logits come from
    memory = Memory(cache, hidden.shape[-1], device) if cache is not None else None
    if memory is not None:
        memory.add(hidden[0, :-1], tokens[0, 1:])  # each prompt position and the token after it
    for _ in range(max_new_tokens):
        logits = model.logits(last)  # (V,)
        distribution = memory.log_probs(logits, last) if memory is not None else logits
        token = sample_next(distribution, params, generator)
        yield token
        # one new token and the carried state: a step costs the same at any text length
        step = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
        if memory is not None:
            memory.add(last[None], step[0])
        if speakers is not None:
            beside = speakers.of_text([token], tracker)[None]  # (1, 1, S)
        hidden, state = model.features(step, state, speakers=beside)  # (1, 1, H)
        last = hidden[0, -1]

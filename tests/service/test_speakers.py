"""A character model that reads speakers is served as it is measured: the speaker named in the
prompt, and each one the generated text goes on to name, is read beside every character, alone,
in a busy batch and from cached prefixes, and the name changes the text."""

from __future__ import annotations

from pathlib import Path

import torch

from models.architectures import LanguageModel
from models.checkpoint import save_checkpoint
from models.config import LanguageModelConfig, SamplingParams
from models.decoding import generate_ids, make_generator
from models.format import CheckpointConfig
from models.speakers import SpeakerInputs
from models.tokenizers import CharTokenizer
from service.engine.operations import Event, FinishEvent, TokenEvent
from service.generation import GenerationRequest, GenerationScheduler
from service.prefix_cache import PrefixCache
from tests.service.conftest import SettingsFactory
from tests.service.support import busy_and_cached, run_generations, serve, token_ids

PLAY = "ROMEO:\nBut soft, what light?\n\nJULIET:\nO Romeo, Romeo!\n\nFirst Citizen:\nWe are poor.\n"


def _model(tokenizer: CharTokenizer, newline_bias: float = 0.0) -> LanguageModel:
    torch.manual_seed(0)
    config = LanguageModelConfig(
        vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=16, num_layers=2, speaker_dim=4
    )
    model = LanguageModel(config).eval()
    with torch.no_grad():  # a larger say for the speaker, so a name visibly changes the text
        model.rnn.weight_ih_l0[:, 8:] *= 8
        head = model.head
        assert isinstance(head, torch.nn.Linear)
        head.bias[tokenizer.encode("\n").ids[0]] += newline_bias
    return model


def _request(prompt: list[int], seed: int, events: list[Event]) -> GenerationRequest:
    params = SamplingParams(temperature=1.0)
    return GenerationRequest(prompt, 30, params, seed, (), events.append, logprobs=0)


def _alone(
    model: LanguageModel, tokenizer: CharTokenizer, prompt: list[int], seed: int
) -> list[Event]:
    events: list[Event] = []
    run_generations(
        GenerationScheduler(model, tokenizer, 8, None), [_request(prompt, seed, events)]
    )
    return events


def test_a_seed_gives_one_text_alone_in_a_batch_and_from_cached_prefixes() -> None:
    tokenizer = CharTokenizer.fit(PLAY)
    model = _model(tokenizer)
    prompt = tokenizer.encode("ROMEO:\nBut soft\n\nJULIET:\nO").ids
    expected = token_ids(_alone(model, tokenizer, prompt, 42))
    params = SamplingParams(temperature=1.0)
    speakers = SpeakerInputs(model, tokenizer)
    decoded = list(generate_ids(model, prompt, 30, params, make_generator(42), None, speakers))
    plain = list(generate_ids(model, prompt, 30, params, make_generator(42)))
    assert plain != decoded  # the speakers change this model's text

    prefixes = PrefixCache(1 << 24)
    scheduler = GenerationScheduler(model, tokenizer, 8, prefixes)
    others = (tokenizer.encode("JULIET:\n").ids, tokenizer.encode("W").ids)
    busy, again = busy_and_cached(scheduler, _request, prompt, 10, others, 42)
    assert prefixes.hits >= 1
    assert busy == expected
    assert again == expected  # the whole prompt cached


def test_a_speaker_the_generated_text_names_is_read_from_its_newline_on() -> None:
    tokenizer = CharTokenizer.fit(PLAY)
    model = _model(tokenizer, newline_bias=2.0)  # newlines are likely: seed 3 writes one first
    # the prompt ends on a speaker's line without its newline: the first generated token ends
    # it, and from there on the model reads JULIET beside each token
    prompt = tokenizer.encode("ROMEO:\nBut soft\n\nJULIET:").ids
    events = _alone(model, tokenizer, prompt, 3)
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    assert finish.text.startswith("\n")
    reported = [
        entry.logprob for e in events if isinstance(e, TokenEvent) for entry in e.logprobs
    ] + [entry.logprob for entry in finish.logprobs]
    generated = token_ids(events)
    text = torch.tensor([prompt + generated])  # (1, T)
    speakers = SpeakerInputs(model, tokenizer)
    with torch.inference_mode():  # the whole text read at once, as evaluation reads it
        inputs = text[:, :-1]
        hidden, _ = model.features(inputs, speakers=speakers.of_ids(inputs))
        log_probs = torch.log_softmax(model.logits(hidden), -1)
        plain, _ = model.features(inputs)
    # the engine never samples the unknown token: its distribution is the rest, renormalised
    unknown = torch.tensor([tokenizer.unk_id])
    log_probs = torch.log_softmax(log_probs.index_fill(2, unknown, -torch.inf), -1)
    picked = log_probs[0, len(prompt) - 1 :].gather(1, torch.tensor(generated)[:, None])[:, 0]
    assert len(reported) == len(generated) == 30
    torch.testing.assert_close(torch.tensor(reported), picked, rtol=0, atol=1e-4)
    assert speakers.of_ids(inputs)[0, len(prompt)].any()  # JULIET, from the generated newline
    assert not torch.allclose(hidden[0, len(prompt) :], plain[0, len(prompt) :])


def test_the_service_writes_another_text_for_another_speaker(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    tokenizer = CharTokenizer.fit(PLAY)
    model = _model(tokenizer)
    config = CheckpointConfig("generate", model.config, "char", 256)
    save_checkpoint(tmp_path / "generate", model, config, tokenizer, {})
    settings = make_settings(artifacts_dir=tmp_path, models=["generate"])
    texts = {}
    with serve(settings) as client:
        (info,) = client.get("/models").json()["models"]
        assert info["reads_speakers"] is True
        for name in ("ROMEO", "JULIET", "ROMEO"):
            body = {"prompt": f"{name}:\n", "max_new_tokens": 40, "seed": 3, "temperature": 0.7}
            response = client.post("/generate", json=body)
            assert response.status_code == 200, response.text
            texts.setdefault(name, set()).add(response.json()["text"])
    assert len(texts["ROMEO"]) == 1  # one seed, one text
    assert texts["ROMEO"] != texts["JULIET"]

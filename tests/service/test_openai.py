"""The OpenAI-compatible routes through the real `openai` client against a live server: texts equal
/generate's for the same seed, streamed or not, one choice or many; refused parameters, unknown
models and a wrong key raise the client's own exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from service.app import create_app
from service.openai_schemas import UNSUPPORTED
from tests.service.conftest import SettingsFactory
from tests.service.support import (
    engine_blocked,
    running_server,
    serve,
    state_of,
    wait_ready,
    wait_until,
)

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def base_url(make_settings: SettingsFactory) -> Iterator[str]:
    with running_server(create_app(make_settings(api_key=KEY))) as url:
        wait_ready(httpx.Client(base_url=url))
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=20)


def generate(base_url: str, prompt: str, tokens: int, seed: int, **extra: Any) -> dict[str, Any]:
    """The service's own /generate, with OpenAI's defaults (temperature 1, top_p 1)."""
    body = {"prompt": prompt, "max_new_tokens": tokens, "seed": seed, "temperature": 1.0, **extra}
    response = httpx.post(
        f"{base_url}/generate", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=20
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_models_lists_the_language_models(client: openai.OpenAI) -> None:
    assert sorted(model.id for model in client.models.list()) == ["generate", "next-word"]
    assert client.models.retrieve("generate").id == "generate"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("sentiment")


@pytest.mark.parametrize(("model", "prompt"), [("generate", "to be"), ("next-word", "the city")])
def test_completion_equals_generate_for_the_same_seed(
    client: openai.OpenAI, base_url: str, model: str, prompt: str
) -> None:
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=12, seed=5)
    expected = generate(base_url, prompt, 12, 5, model=model)
    [choice] = completion.choices
    assert choice.text == expected["text"]
    assert (choice.index, choice.finish_reason) == (0, "length")
    assert completion.model == model
    assert completion.object == "text_completion"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected["prompt_tokens"]
    assert completion.usage.completion_tokens == expected["tokens"] == 12
    assert completion.usage.total_tokens == expected["prompt_tokens"] + 12


def test_stream_chunks_add_up_to_the_completion(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="generate", prompt="to be", max_tokens=20, seed=9)
    chunks = list(
        client.completions.create(
            model="generate",
            prompt="to be",
            max_tokens=20,
            seed=9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(texts) == 20  # one chunk per token
    assert "".join(texts) == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and finishes.count("length") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_n_and_a_list_of_prompts_seed_each_choice(client: openai.OpenAI, base_url: str) -> None:
    prompts = ["to be", "the mind"]
    completion = client.completions.create(
        model="generate", prompt=prompts, n=2, max_tokens=10, seed=100
    )
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    for choice in completion.choices:
        prompt = prompts[choice.index // 2]
        assert choice.text == generate(base_url, prompt, 10, 100 + choice.index)["text"]
    assert len({c.text for c in completion.choices}) == 4


def test_stream_with_n_sends_every_choice(client: openai.OpenAI) -> None:
    texts = ["", "", ""]
    stream = client.completions.create(
        model="generate", prompt="to be", n=3, max_tokens=8, seed=1, stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    whole = client.completions.create(model="generate", prompt="to be", n=3, max_tokens=8, seed=1)
    assert texts == [c.text for c in whole.choices]


def test_seed_reproduces_and_another_seed_differs(client: openai.OpenAI) -> None:
    def text(seed: int) -> str:
        completion = client.completions.create(
            model="generate", prompt="to be", max_tokens=30, seed=seed, temperature=1.5
        )
        return completion.choices[0].text

    assert text(3) == text(3)
    assert text(3) != text(4)


def test_stop_ends_the_text_before_it(client: openai.OpenAI) -> None:
    free = client.completions.create(model="generate", prompt="to be", max_tokens=30, seed=21)
    text = free.choices[0].text
    stop = text[10:12]
    cut = text[: text.index(stop)]
    for sent in (stop, [stop, "unlikely stop"]):
        stopped = client.completions.create(
            model="generate", prompt="to be", max_tokens=30, seed=21, stop=sent
        )
        assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == (cut, "stop")


@pytest.mark.parametrize(
    ("openai_options", "penalties"),
    [
        (
            {"presence_penalty": 0.5, "frequency_penalty": 1.5},
            {"presence_penalty": 0.5, "frequency_penalty": 1.5},
        ),
        # not in OpenAI's API: the client sends it in extra_body, as for vLLM
        ({"extra_body": {"repetition_penalty": 1.5}}, {"repetition_penalty": 1.5}),
    ],
)
def test_penalties_change_the_text_as_on_generate(
    client: openai.OpenAI,
    base_url: str,
    openai_options: dict[str, Any],
    penalties: dict[str, float],
) -> None:
    asked: dict[str, Any] = {"model": "generate", "prompt": "to be", "max_tokens": 40, "seed": 4}
    plain = client.completions.create(**asked)
    penalised = client.completions.create(**asked, **openai_options)
    assert penalised.choices[0].text != plain.choices[0].text
    assert penalised.choices[0].text == generate(base_url, "to be", 40, 4, **penalties)["text"]


def test_logprobs_score_each_token_with_its_alternatives(client: openai.OpenAI) -> None:
    asked = {"model": "generate", "prompt": "to be", "max_tokens": 8, "seed": 3}
    plain = client.completions.create(**asked)
    choice = client.completions.create(**asked, logprobs=3).choices[0]
    assert choice.text == plain.choices[0].text  # scoring changes no draw
    scored = choice.logprobs
    assert scored is not None
    assert "".join(scored.tokens or []) == choice.text
    assert len(scored.token_logprobs or []) == len(scored.top_logprobs or []) == 8
    offsets = [sum(len(t) for t in (scored.tokens or [])[:i]) for i in range(8)]
    assert scored.text_offset == offsets
    for logprob, top in zip(scored.token_logprobs or [], scored.top_logprobs or [], strict=True):
        assert len(top) == 3
        assert logprob <= max(top.values()) + 1e-6 <= 1e-6
    # greedy picks the most likely token: its log-probability is the best alternative's
    greedy = client.completions.create(**{**asked, "temperature": 0}, logprobs=1).choices[0]
    for token, logprob, top in zip(
        greedy.logprobs.tokens, greedy.logprobs.token_logprobs, greedy.logprobs.top_logprobs,
        strict=True,
    ):  # fmt: skip
        assert top == {token: logprob}
    # streamed, the chunks carry the same scores, with offsets into the whole text
    chunks = list(client.completions.create(**asked, logprobs=3, stream=True))
    streamed = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [t for s in streamed for t in s.tokens] == scored.tokens
    assert [o for s in streamed for o in s.text_offset] == scored.text_offset
    assert [v for s in streamed for v in s.token_logprobs] == scored.token_logprobs
    # with echo, the prompt comes back unscored and the offsets count it
    echoed = client.completions.create(**asked, logprobs=3, echo=True).choices[0]
    assert echoed.logprobs is not None and echoed.logprobs.tokens == scored.tokens
    assert echoed.logprobs.text_offset == [offset + len("to be") for offset in offsets]


def test_echo_returns_the_prompt_first(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="generate", prompt="to be", max_tokens=5, seed=2)
    echoed = client.completions.create(
        model="generate", prompt="to be", max_tokens=5, seed=2, echo=True, user="someone"
    )
    assert echoed.choices[0].text == "to be" + plain.choices[0].text


@pytest.mark.parametrize(
    ("options", "param", "says"),
    [
        ({"best_of": 2}, "best_of", "only best_of 1"),
        ({"logprobs": 6}, "logprobs", "less than or equal to 5"),
        ({"presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
        ({"frequency_penalty": -2.5}, "frequency_penalty", "greater than or equal to -2"),
        ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty", "greater than 0"),
        ({"suffix": "end"}, "suffix", "not supported"),
        ({"logit_bias": {"3": 10}}, "logit_bias", "not supported"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"n": 9}, "n", "less than or equal to 8"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
        ({"stop": "x" * 65}, "stop", "at most 64 characters"),
        ({"prompt": ""}, "prompt", "`prompt`: String should have at least 1 character"),
        ({"prompt": ["a", ""]}, "prompt", "`prompt[1]`: String should have at least 1 character"),
        ({"prompt": ["a"] * 5}, "prompt", "at most 4 items"),
        ({"prompt": ["a", "x" * 1001]}, "prompt", "`prompt[1]` has 1,001 characters; the limit"),
        ({"prompt": "a " * 100}, "prompt", "`prompt` has 100 tokens; the limit is 64"),
        ({"prompt": [1, 2, 3]}, "prompt", "valid string"),
        ({"extra_body": {"top_k": 5}}, "top_k", "Extra inputs are not permitted"),
    ],
)
def test_refused_parameters_raise_bad_request(
    client: openai.OpenAI, options: dict[str, Any], param: str, says: str
) -> None:
    request: dict[str, Any] = {"model": "next-word", "prompt": "to be", **options}
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(**request)
    error = raised.value
    assert error.status_code == 400
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert says in error.message
    assert error.code == ("unsupported" if param in UNSUPPORTED else "invalid_value")


def test_unknown_or_non_language_model_is_not_found(client: openai.OpenAI) -> None:
    for model in ("nope", "sentiment"):
        with pytest.raises(openai.NotFoundError) as raised:
            client.completions.create(model=model, prompt="to be")
        assert raised.value.code == "model_not_found"
        assert "generate, next-word" in raised.value.message


def test_wrong_or_missing_key_is_an_authentication_error(base_url: str) -> None:
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.completions.create(model="generate", prompt="to be")
    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    response = httpx.get(f"{base_url}/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_sixteen_concurrent_streams_agree_with_generate(base_url: str) -> None:
    async def stream(client: openai.AsyncOpenAI, seed: int) -> tuple[str, str | None]:
        text, finish = "", None
        chunks = await client.completions.create(
            model="generate", prompt="to be", max_tokens=24, seed=seed, stream=True
        )
        async for chunk in chunks:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    async def all_streams() -> list[tuple[str, str | None]]:
        async with openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=20
        ) as client:
            return await asyncio.gather(*(stream(client, seed) for seed in range(16)))

    answers = asyncio.run(all_streams())
    for seed, (text, finish) in enumerate(answers):
        assert (text, finish) == (generate(base_url, "to be", 24, seed)["text"], "length")


@pytest.mark.parametrize(
    ("content", "headers", "status", "says"),
    [
        (b"\xe9", {"content-type": "application/json"}, 400, "not valid UTF-8"),
        (b'{"model": "generate", "model": "x"}', {"content-type": "application/json"}, 400, ""),
        (b"{}", {"content-type": "text/plain"}, 415, "`Content-Type` must be application/json"),
    ],
)
def test_bodies_refused_before_the_route_are_in_openai_shape(
    base_url: str, content: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    response = httpx.post(
        f"{base_url}/v1/completions",
        content=content,
        headers={"Authorization": f"Bearer {KEY}", **headers},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert len(response.headers["x-request-id"]) == 32


def test_a_penalty_breaks_the_greedy_loop_on_generate(base_url: str) -> None:
    greedy = generate(base_url, "to be", 40, 0, temperature=0.0)["text"]
    penalised = generate(base_url, "to be", 40, 0, temperature=0.0, frequency_penalty=2.0)["text"]
    assert len(set(greedy)) <= 3, greedy  # the tiny model loops on a few characters
    assert len(set(penalised)) > 2 * len(set(greedy)), penalised


def test_a_full_server_refuses_a_completion_at_once_in_openai_shape(
    make_settings: SettingsFactory,
) -> None:
    """The one overload check covers /v1/completions before its body is read: 503 with
    Retry-After, in the shape the client reads (openai.InternalServerError after its retries)."""
    settings = make_settings(max_active_generations=1, max_queue=1)
    with serve(settings) as client:
        state = state_of(client)
        body = {"prompt": "to", "max_new_tokens": 3, "seed": 1}
        with ThreadPoolExecutor(2) as pool, engine_blocked(state.engine):
            running = [pool.submit(client.post, "/generate", json=body) for _ in range(2)]
            wait_until(lambda: state.engine.generating() == 2)
            refused = client.post(
                "/v1/completions", json={"model": "generate", "prompt": "to", "max_tokens": 3}
            )
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "overloaded" and "generations" in error["message"]
        assert all(future.result(timeout=10).status_code == 200 for future in running)

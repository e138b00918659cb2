"""Configuration: dataclass defaults <- JSON file (--config) <- command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from models.config import ClassifierConfig
from training.__main__ import main
from training.config import (
    CONFIG_DIR,
    DATA_DECIDED,
    TASK_CONFIGS,
    LanguageModelTrainConfig,
    SentimentConfig,
    TrainConfig,
    add_config_flags,
    config_as_dict,
    resolve_config,
    setting_types,
    smoke_overrides,
)

from .conftest import SMOKE_FLAGS


def parse_flags(task: str, argv: list[str]) -> dict[str, Any]:
    """The flags dictionary `main` hands to resolve_config."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TASK_CONFIGS[task])
    return vars(parser.parse_args(argv))


def resolve(task: str, argv: list[str], config_file: Path | None = None) -> TrainConfig:
    return resolve_config(task, str(config_file) if config_file else None, parse_flags(task, argv))


def resolve_lm(task: str, argv: list[str]) -> LanguageModelTrainConfig:
    config = resolve(task, argv)
    assert isinstance(config, LanguageModelTrainConfig)
    return config


def write_json(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(json.dumps(values))
    return path


def test_empty_file_and_no_flags_give_the_dataclass_defaults(tmp_path: Path) -> None:
    empty = write_json(tmp_path / "empty.json", {})
    for task, cls in TASK_CONFIGS.items():
        assert resolve(task, [], empty) == dataclasses.replace(cls(), run_dir=f"runs/{task}")


@pytest.mark.parametrize("task", sorted(TASK_CONFIGS))
def test_the_shipped_task_file_is_the_default(task: str) -> None:
    shipped = json.loads((CONFIG_DIR / f"{task}.json").read_text())
    config = config_as_dict(resolve(task, []))
    assert shipped, "an empty shipped config would make this test vacuous"
    for key, value in shipped.items():
        assert config[key] == (tuple(value) if isinstance(value, list) else value), key


def test_file_overrides_defaults_and_flags_override_the_file(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "mine.json",
        {"hidden_dim": 64, "epochs": 3, "pooling": ["last"], "run_dir": "out/{task}-x"},
    )
    config = resolve("sentiment", ["--hidden-dim", "32", "--lr", "0.5"], path)
    assert isinstance(config, SentimentConfig)
    assert config.model["hidden_dim"] == 32  # flag beats file
    assert config.lr == 0.5  # flag beats default
    assert config.epochs == 3  # file beats default
    assert config.model["pooling"] == ("last",)  # JSON lists become tuples
    assert config.run_dir == "out/sentiment-x"
    assert config.model["embed_dim"] == ClassifierConfig.embed_dim  # the model's own default
    assert config.smoke is False  # an absent --smoke flag does not override


def test_unknown_keys_in_the_file_raise(tmp_path: Path) -> None:
    path = write_json(tmp_path / "bad.json", {"hidden_dim": 8, "hiden_dim": 9, "bptt": 10})
    with pytest.raises(ValueError, match=r"unknown settings \['bptt', 'hiden_dim'\]"):
        resolve("sentiment", [], path)
    # bptt is a language-model setting: fine there, but hiden_dim is not
    with pytest.raises(ValueError, match=r"unknown settings \['hiden_dim'\]"):
        resolve("generate", [], path)


def test_unknown_keys_stop_main_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path / "bad.json", {"epochz": 1})
    run_dir = tmp_path / "run"
    assert main(["generate", "--config", str(path), "--run-dir", str(run_dir)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("python -m training generate: ") and "epochz" in error
    assert "Traceback" not in error and error.count("\n") == 1
    assert not run_dir.exists()


def test_a_setting_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--smoke", "--precision", "half"]) == 1
    error = capsys.readouterr().err
    assert error == "python -m training generate: precision must be auto or float32, got 'half'\n"


def test_a_missing_config_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        resolve("generate", [], tmp_path / "nope.json")


def test_tuple_flags_parse_comma_lists() -> None:
    config = resolve("sentiment", ["--pooling", "max,last"])
    assert isinstance(config, SentimentConfig)
    assert config.model["pooling"] == ("max", "last")
    argv = ["--adaptive-cutoffs", "100,500,", "--sample-prompts", "ROMEO:,The history of"]
    lm = resolve_lm("next-word", argv)
    assert lm.model["adaptive_cutoffs"] == (100, 500)
    assert lm.sample_prompts == ("ROMEO:", "The history of")
    assert resolve_lm("next-word", ["--adaptive-cutoffs", ""]).model["adaptive_cutoffs"] == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("True", True), ("1", True), ("yes", True)],
        *[("false", False), ("FALSE", False), ("0", False), ("no", False)],
    ],
)
def test_bool_flags_parse_true_and_false(text: str, expected: bool) -> None:
    config = resolve("sentiment", ["--bidirectional", text, "--pool-embeddings", text])
    assert isinstance(config, SentimentConfig)
    assert config.model["bidirectional"] is expected
    assert config.model["pool_embeddings"] is expected


def test_a_bool_flag_rejects_other_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_flags("sentiment", ["--bidirectional", "maybe"])
    assert "--bidirectional" in capsys.readouterr().err


def test_scalar_and_optional_flags_parse_to_their_types() -> None:
    argv = ["--epochs", "7", "--lr", "1e-3", "--cell", "gru", "--data", "corpus", "--seed", "5"]
    config = resolve("generate", [*argv, "--export-dir", "none"])
    assert (config.epochs, config.lr, config.model["cell"], config.data, config.seed) == (
        7,
        0.001,
        "gru",
        "corpus",
        5,
    )
    assert config.export_dir is None
    assert resolve("generate", ["--export-dir", "ckpt"]).export_dir == "ckpt"
    with pytest.raises(SystemExit):
        parse_flags("generate", ["--epochs", "seven"])


@pytest.mark.parametrize("flag", ["--smoke", "--dry-run"])
def test_smoke_flag_and_its_alias(flag: str) -> None:
    assert parse_flags("generate", [flag])["smoke"] is True
    assert parse_flags("generate", [])["smoke"] is None
    assert resolve("generate", [flag]).smoke is True


def test_smoke_overrides_shrink_the_run_and_keep_the_rest() -> None:
    config = resolve_lm("next-word", ["--seed", "3", "--smoke"])
    small = smoke_overrides(config)
    assert isinstance(small, LanguageModelTrainConfig)
    model = small.model
    assert (model["embed_dim"], model["hidden_dim"], model["num_layers"]) == (16, 16, 1)
    assert small.epochs == 1
    assert (small.max_train_batches, small.max_eval_batches, small.eval_every) == (4, 2, 0)
    assert (small.bptt, small.eval_bptt, small.eval_batch_size) == (16, 32, 4)
    assert model["adaptive_cutoffs"] == (100, 500)
    assert (small.seed, model["cell"], small.lr) == (3, config.model["cell"], config.lr)
    assert config.model["hidden_dim"] == 512  # smoke_overrides left the original alone
    assert small.sample_prompts == config.sample_prompts
    sentiment = smoke_overrides(resolve("sentiment", []))
    assert isinstance(sentiment, SentimentConfig)
    assert (sentiment.max_vocab, sentiment.max_length, sentiment.head_tokens) == (2000, 64, 16)
    # no adaptive softmax asked for: none added
    char = smoke_overrides(resolve_lm("generate", []))
    assert isinstance(char, LanguageModelTrainConfig)
    assert char.model["adaptive_cutoffs"] == ()


@pytest.mark.parametrize(
    ("task", "left_out"),
    [("generate", {"epochs"}), ("next-word", {"epochs", "adaptive_cutoffs"})],
)
def test_the_spelled_out_smoke_flags_match_smoke_overrides(task: str, left_out: set[str]) -> None:
    """SMOKE_FLAGS (used where a test must differ from --smoke) leave out only the epochs and the
    adaptive softmax cut-offs."""
    spelled = config_as_dict(resolve(task, SMOKE_FLAGS))
    smoke = config_as_dict(smoke_overrides(resolve(task, [])))
    assert {k for k in spelled if spelled[k] != smoke[k]} == left_out


def test_a_setting_of_the_wrong_type_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"epochs": "5"}))
    with pytest.raises(ValueError, match="setting 'epochs' must be <class 'int'>, got '5'"):
        resolve_config("sentiment", str(path), {})
    path.write_text(json.dumps({"pooling": ["max", 3]}))
    with pytest.raises(ValueError, match="setting 'pooling'"):
        resolve_config("sentiment", str(path), {})
    path.write_text(json.dumps({"lr": 1, "data": None, "pooling": ["max"]}))
    assert resolve_config("sentiment", str(path), {}).lr == 1


@pytest.mark.parametrize("task", sorted(TASK_CONFIGS))
def test_every_flat_name_has_exactly_one_home(task: str) -> None:
    cls = TASK_CONFIGS[task]
    own = {f.name for f in dataclasses.fields(cls)} - {"model"}
    model = {f.name for f in dataclasses.fields(cls.MODEL)} - DATA_DECIDED
    assert not own & model
    assert list(setting_types(cls)) == list(config_as_dict(cls()))
    assert set(setting_types(cls)) == own | model
    # the model section's defaults are the model config's own, not copies
    for item in dataclasses.fields(cls.MODEL):
        if item.name in model and item.default is not dataclasses.MISSING:
            assert cls().model[item.name] == item.default, item.name


def test_a_file_may_nest_the_model_section(tmp_path: Path) -> None:
    path = write_json(tmp_path / "nested.json", {"model": {"hidden_dim": 64}, "epochs": 2})
    config = resolve("generate", ["--num-layers", "3"], path)
    assert (config.model["hidden_dim"], config.model["num_layers"], config.epochs) == (64, 3, 2)
    write_json(path, {"model": {"hidden_dim": 64}, "hidden_dim": 32})
    with pytest.raises(ValueError, match=r"settings \['hidden_dim'\] given both flat and inside"):
        resolve("generate", [], path)
    write_json(path, {"model": {"hiden_dim": 64}})
    with pytest.raises(ValueError, match=r"unknown settings \['hiden_dim'\]"):
        resolve("generate", [], path)
    write_json(path, {"model": 5})
    with pytest.raises(ValueError, match="setting 'model' must be an object"):
        resolve("generate", [], path)


def test_the_model_config_is_built_from_the_section_and_the_data() -> None:
    config = resolve("sentiment", ["--hidden-dim", "24", "--pooling", "last"])
    built = config.model_config(500, padding_id=0, num_classes=2)
    assert isinstance(built, ClassifierConfig)
    assert (built.vocab_size, built.hidden_dim, built.pooling) == (500, 24, ("last",))
    with pytest.raises(ValueError, match=r"unknown ClassifierConfig settings \['bptt'\]"):
        SentimentConfig(model={"bptt": 3})

"""`python -m training <task> [--config file] [--flag value ...]` trains and exports a checkpoint;
`python -m training evaluate <checkpoint> --data PATH` measures one on its test split."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from models.architectures import LanguageModel, count_parameters
from models.checkpoint import (
    STORAGE_DTYPES,
    Checkpoint,
    CheckpointConfig,
    load_checkpoint,
    save_checkpoint,
)
from models.decoding import SamplingParams, generate_ids, make_generator
from models.tokenizers import Tokenizer
from training import language, sentiment
from training.config import (
    TASK_CONFIGS,
    LanguageModelTrainConfig,
    SentimentConfig,
    TrainConfig,
    add_config_flags,
    config_as_dict,
    resolve_config,
    smoke_overrides,
)
from training.data import Example
from training.export import command_line, model_card, plot_curves
from training.loop import Trainer, pick_device, seed_everything


def _round_to_storage(model: nn.Module, dtype: str) -> None:
    """Round weights through the storage dtype, so test metrics are those of the exported file."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(STORAGE_DTYPES[dtype]).to(parameter.dtype))


def _samples(
    model: LanguageModel, task: language.LanguageModelTask, seed: int
) -> list[dict[str, str]]:
    """A few samples for the card, each prompt with its own seed (seed, seed + 1, ...)."""
    out = []
    for number, prompt in enumerate(task.config.sample_prompts):
        ids = task.tokenizer.encode(prompt).ids
        params = SamplingParams(temperature=0.8, top_k=0, top_p=0.95)
        new = list(
            generate_ids(
                model,
                ids,
                300 if task.tokenizer.kind == "char" else 40,
                params,
                make_generator(seed + number),
            )
        )
        joiner = "" if task.tokenizer.kind == "char" else " "
        out.append(
            {
                "prompt": prompt,
                "seed": str(seed + number),
                "temperature": "0.8",
                "top_p": "0.95",
                "text": prompt + joiner + task.tokenizer.decode(new),
            }
        )
    return out


def _init_from(
    config: TrainConfig, model: nn.Module, checkpoint_config: CheckpointConfig, tokenizer: Tokenizer
) -> dict[str, Any] | None:
    """Start from a checkpoint's weights (a further schedule on a trained model). It must have the
    same architecture and vocabulary; its card's command and metrics go into the new card."""
    if config.init_from is None:
        return None
    start = load_checkpoint(config.init_from)
    if start.config.model != checkpoint_config.model:
        raise ValueError(
            f"--init-from {config.init_from}: its model config differs from this run's"
        )
    if start.tokenizer.to_json() != tokenizer.to_json():
        raise ValueError(f"--init-from {config.init_from}: its vocabulary differs from this run's")
    model.load_state_dict(start.model.state_dict())
    return {
        "path": config.init_from,
        "command": start.card.get("command"),
        "metrics": start.card.get("metrics", {}).get("test"),
    }


def train(task_name: str, config: TrainConfig, argv: list[str] | None = None) -> Path | None:
    """Train, evaluate once on the test split, export; returns the checkpoint path (rank 0).
    `argv` is the command line recorded in the card (default: this process's arguments)."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    started = time.perf_counter()
    test_ids: torch.Tensor | None = None
    task: sentiment.SentimentTask | language.LanguageModelTask
    model: nn.Module
    if isinstance(config, SentimentConfig):
        task, model, checkpoint_config = sentiment.build(config, sentiment.load_data(config))
    else:
        assert isinstance(config, LanguageModelTrainConfig)
        task, model, checkpoint_config, test_ids = language.build(task_name, config)
    init = _init_from(config, model, checkpoint_config, task.tokenizer)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_as_dict(config), indent=2) + "\n")
    print(
        f"{task_name}: {count_parameters(model):,} parameters, vocabulary "
        f"{task.tokenizer.vocab_size:,}, {task.steps_per_epoch(1)} steps per epoch"
    )
    trainer = Trainer(config, task, model, run_dir)
    history = trainer.fit()
    if not trainer.main:
        return None
    model.eval()
    _round_to_storage(model, config.storage_dtype)
    samples: list[dict[str, str]] = []
    calibration: dict[str, float] = {}
    if isinstance(task, sentiment.SentimentTask):
        calibration = sentiment.calibrate(task, model)
        checkpoint_config = dataclasses.replace(
            checkpoint_config, temperature=calibration["temperature"]
        )
        test = sentiment.test_metrics(task, model, checkpoint_config.temperature)
        dataset, hashes = task.data.name, task.data.sha256
    else:
        assert isinstance(model, LanguageModel) and test_ids is not None
        assert isinstance(config, LanguageModelTrainConfig)
        top_k = (1, 3) if task_name == "next-word" else ()
        test = language.evaluate_ids(
            model,
            test_ids.to(trainer.device),
            config.eval_batch_size,
            config.eval_bptt,
            config.max_eval_batches,
            top_k,
        )
        samples = _samples(model, task, config.seed)
        dataset, hashes = task.splits.name, task.splits.sha256
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    card = model_card(
        task=task_name,
        dataset=dataset,
        dataset_sha256=hashes,
        test_metrics=test,
        history=history,
        config=config_as_dict(config),
        parameters=count_parameters(model),
        wall_time_s=time.perf_counter() - started,
        device=trainer.device,
        processes=trainer.world,
        samples=samples,
        command=command_line(argv),
    )
    if init is not None:
        card["init_from"] = init
    if calibration:
        card["calibration"] = calibration
    export_dir = Path(config.export_dir) if config.export_dir else run_dir / "checkpoint"
    save_checkpoint(export_dir, model.cpu(), checkpoint_config, task.tokenizer, card)
    plot_curves(history, task.metric, run_dir / "curves.png")
    print(f"checkpoint written to {export_dir}")
    return export_dir


def _card_config(loaded: Checkpoint, data: str | None) -> TrainConfig:
    """The training settings recorded in a checkpoint's card, reading `data` instead."""
    card_config: dict[str, Any] = loaded.card.get("config", {})
    cls = TASK_CONFIGS[loaded.config.task]
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in card_config.items() if k in known
    }
    config = cls(**values)
    config.data = data
    return config


def _review_rows(loaded: Checkpoint, examples: list[Example]) -> list[tuple[list[int], int]]:
    config = loaded.config
    return sentiment.encode_examples(
        loaded.tokenizer, examples, config.max_length, config.head_tokens
    )


def calibrate(checkpoint: str, data: str | None, threads: int) -> dict[str, float]:
    """Fit a sentiment checkpoint's temperature on its training run's validation split, re-measure
    the test split with it, and rewrite the checkpoint (weights unchanged)."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    config = _card_config(loaded, data)
    if not isinstance(config, SentimentConfig):
        raise ValueError(f"{checkpoint}: only sentiment checkpoints are calibrated")
    splits = sentiment.load_data(config)
    pad = loaded.tokenizer.pad_id or 0
    logits, labels = sentiment.predict_rows(
        loaded.model, _review_rows(loaded, splits.valid), pad, config.max_eval_batches
    )
    calibration = sentiment.calibration(logits, labels)
    temperature = calibration["temperature"]
    test = sentiment.evaluate_rows(
        loaded.model, _review_rows(loaded, splits.test), pad, config.max_eval_batches, temperature
    )
    card = {**loaded.card, "calibration": calibration}
    card["metrics"] = {**card.get("metrics", {}), "test": test}
    new_config = dataclasses.replace(loaded.config, temperature=temperature)
    save_checkpoint(checkpoint, loaded.model, new_config, loaded.tokenizer, card)
    return {**calibration, **{f"test_{k}": v for k, v in test.items()}}


def evaluate(checkpoint: str, data: str | None, threads: int, device: str) -> dict[str, float]:
    """Measure a checkpoint on the test split of `data` (None: the downloaded corpus), split and
    capped as its training run did, so the card's test metrics are reproduced."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint, device=pick_device(device))
    task_name = loaded.config.task
    config = _card_config(loaded, data)
    if isinstance(config, SentimentConfig):
        rows = _review_rows(loaded, sentiment.load_data(config).test)
        return sentiment.evaluate_rows(
            loaded.model,
            rows,
            loaded.tokenizer.pad_id or 0,
            config.max_eval_batches,
            loaded.config.temperature,
        )
    assert isinstance(config, LanguageModelTrainConfig) and isinstance(loaded.model, LanguageModel)
    if task_name == "next-word":
        assert isinstance(loaded.tokenizer, language.WordTokenizer)
        ids = language.word_ids(loaded.tokenizer, language.load_word_splits(config).test)
    else:
        ids = language.char_ids(loaded.tokenizer, language.load_char_splits(config).test)
    top_k = (1, 3) if task_name == "next-word" else ()
    return language.evaluate_ids(
        loaded.model, ids, config.eval_batch_size, config.eval_bptt, config.max_eval_batches, top_k
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls in TASK_CONFIGS.items():
        sub = commands.add_parser(name, help=f"train the {name} model")
        sub.add_argument(
            "--config", help="JSON file of settings (default training/configs/<task>.json)"
        )
        add_config_flags(sub, cls)
    sub = commands.add_parser("calibrate", help="fit a sentiment checkpoint's temperature")
    sub.add_argument("checkpoint")
    sub.add_argument("--data", help="the data set it was trained on; default: download it")
    sub.add_argument("--threads", type=int, default=1)
    sub = commands.add_parser("evaluate", help="measure a checkpoint on a test split")
    sub.add_argument("checkpoint")
    sub.add_argument("--data", help="the data set (file or directory); default: download it")
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        metrics = calibrate(args.checkpoint, args.data, args.threads)
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2))
        return 0
    if args.command == "evaluate":
        metrics = evaluate(args.checkpoint, args.data, args.threads, args.device)
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2))
        return 0
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    config = resolve_config(args.command, args.config, flags)
    if config.smoke:
        config = smoke_overrides(config)
    train(args.command, config, argv)
    if dist.is_initialized():
        # every process waits for rank 0's export, then leaves the group cleanly. The trainer's
        # DistributedDataParallel wrapper sits in a reference cycle (the LR schedule's closure):
        # collect it now, while the group exists, or its destructor runs at exit and can abort.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

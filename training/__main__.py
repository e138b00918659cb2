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
from models.checkpoint import STORAGE_DTYPES, Checkpoint, load_checkpoint, save_checkpoint
from models.config import LanguageModelConfig
from models.devices import DeviceError, resolve_device
from models.format import CheckpointConfig
from models.speakers import speaker_inputs
from models.tokenizers import Tokenizer, WordTokenizer
from training import language, sentiment
from training.allocator import restart_with_tcmalloc
from training.cache_fit import fit_cache
from training.config import (
    TASK_CONFIGS,
    LanguageModelTrainConfig,
    SentimentConfig,
    SettingError,
    TrainConfig,
    add_config_flags,
    config_as_dict,
    config_from_dict,
    resolve_config,
    setting_types,
    smoke_overrides,
)
from training.data import DataError, read_text
from training.everyday import typed_reviews
from training.export import command_line, model_card, plot_curves
from training.loop import Trainer, seed_everything
from training.sentences import one_sentence_set
from training.tasks import TaskKind

# Each task behind the interface in `training.tasks`; `train` and `evaluate` never ask which.
TASKS: dict[str, TaskKind] = {
    kind.name: kind for kind in (sentiment.Sentiment(), language.NEXT_WORD, language.GENERATE)
}


def _round_to_storage(model: nn.Module, dtype: str) -> None:
    """Round weights through the storage dtype, so test metrics are those of the exported file."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(STORAGE_DTYPES[dtype]).to(parameter.dtype))


def _init_from(
    config: TrainConfig, model: nn.Module, checkpoint_config: CheckpointConfig, tokenizer: Tokenizer
) -> dict[str, Any] | None:
    """Start from a checkpoint's weights (a further schedule on a trained model). It must have the
    same architecture and vocabulary; its card's command and metrics go into the new card. A
    character model that reads no speakers may start one that does (`speaker_dim`): its weights
    are kept, and the new speaker input starts with no effect (zero weights), so the run
    starts from the checkpoint's predictions and learns what the speaker adds."""
    if config.init_from is None:
        return None
    start = load_checkpoint(config.init_from)
    wanted = checkpoint_config.model
    widened = (
        isinstance(wanted, LanguageModelConfig)
        and isinstance(start.config.model, LanguageModelConfig)
        and start.config.model.speaker_dim == 0
        and dataclasses.replace(start.config.model, speaker_dim=wanted.speaker_dim) == wanted
    )
    if start.config.model != wanted and not widened:
        raise ValueError(
            f"--init-from {config.init_from}: its model config differs from this run's"
        )
    if start.tokenizer.to_json() != tokenizer.to_json():
        raise ValueError(f"--init-from {config.init_from}: its vocabulary differs from this run's")
    weights = start.model.state_dict()
    if widened:
        weights = _with_speaker_input(weights, model.state_dict())
    model.load_state_dict(weights)
    return {
        "path": config.init_from,
        "command": start.card.get("command"),
        "metrics": start.card.get("metrics", {}).get("test"),
    }


def _with_speaker_input(
    weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A language model's weights for the same model reading speakers: the first layer's input
    weights gain zero columns for the speaker vector; the speaker encoder keeps its own
    (freshly initialised) weights."""
    widened = {**own, **weights}
    first = "rnn.weight_ih_l0"  # (gates * H, E) -> (gates * H, E + S)
    columns = weights[first].shape[1]
    widened[first] = torch.zeros_like(own[first])
    widened[first][:, :columns] = weights[first]
    return widened


def train(task_name: str, config: TrainConfig, argv: list[str] | None = None) -> Path | None:
    """Train, evaluate once on the test split, export; returns the checkpoint path (rank 0).
    `argv` is the command line recorded in the card (default: this process's arguments)."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    started = time.perf_counter()
    run, model = TASKS[task_name].build(config)
    init = _init_from(config, model, run.checkpoint_config, run.tokenizer)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_as_dict(config), indent=2) + "\n")
    print(
        f"{task_name}: {count_parameters(model):,} parameters, vocabulary "
        f"{run.tokenizer.vocab_size:,}, {run.steps_per_epoch(1)} steps per epoch"
    )
    trainer = Trainer(config, run, model, run_dir)
    history = trainer.fit()
    if not trainer.main:
        return None
    model.eval()
    _round_to_storage(model, config.storage_dtype)
    finished = run.finish(model)
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in finished.test.items()))
    card = model_card(
        task=task_name,
        dataset=finished.dataset,
        dataset_sha256=finished.dataset_sha256,
        test_metrics=finished.test,
        history=history,
        config=config_as_dict(config),
        parameters=count_parameters(model),
        # this process's time, and that of the processes an interrupted run resumed from
        wall_time_s=trainer.earlier_s + time.perf_counter() - started,
        device=trainer.device,
        processes=trainer.world,
        command=command_line(argv),
    )
    card.update(finished.card)
    if init is not None:
        card["init_from"] = init
    export_dir = Path(config.export_dir) if config.export_dir else run_dir / "checkpoint"
    save_checkpoint(export_dir, model.cpu(), finished.checkpoint_config, run.tokenizer, card)
    plot_curves(history, run.metric, run_dir / "curves.png")
    print(f"checkpoint written to {export_dir}")
    return export_dir


def _card_config(loaded: Checkpoint, data: str | None) -> TrainConfig:
    """The training settings recorded in a checkpoint's card, reading `data` instead."""
    cls = TASK_CONFIGS[loaded.config.task]
    known = setting_types(cls)
    recorded = {k: v for k, v in loaded.card.get("config", {}).items() if k in known}
    return dataclasses.replace(config_from_dict(cls, recorded), data=data)


def calibrate(checkpoint: str, data: str | None, threads: int) -> dict[str, float]:
    """Fit a sentiment checkpoint's temperature on its training run's validation split, re-measure
    the test split with it, and rewrite the checkpoint (weights unchanged)."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    if loaded.config.task != "sentiment":
        raise ValueError(f"{checkpoint}: only sentiment checkpoints are calibrated")
    config = _card_config(loaded, data)
    assert isinstance(config, SentimentConfig)
    splits = sentiment.load_data(config)
    valid = sentiment.checkpoint_rows(loaded, splits.valid)
    sentences = sentiment.checkpoint_rows(loaded, one_sentence_set(splits.valid, config.seed))
    pad = loaded.tokenizer.pad_id or 0
    calibration = sentiment.fit_calibration(loaded.model, valid, sentences, pad, config)
    temperature = calibration["temperature"]
    test = sentiment.measure(loaded.model, loaded.tokenizer, splits.test, config, temperature)
    card = {**loaded.card, "calibration": calibration}
    card["metrics"] = {**card.get("metrics", {}), "test": test}
    new_config = dataclasses.replace(loaded.config, temperature=temperature)
    save_checkpoint(checkpoint, loaded.model, new_config, loaded.tokenizer, card)
    return {**calibration, **{f"test_{k}": v for k, v in test.items()}}


def _evaluation_config(loaded: Checkpoint, data: str | None, everyday: str | None) -> TrainConfig:
    """The card's settings reading `data`; a next-word checkpoint's everyday reviews from
    `everyday` (None: those its run measured, where they are found here)."""
    config = _card_config(loaded, data)
    if everyday is not None:
        if not isinstance(config, LanguageModelTrainConfig) or loaded.config.task != "next-word":
            raise SettingError(f"--everyday-data measures next-word checkpoints, not {loaded.path}")
        config = dataclasses.replace(config, everyday_data=everyday)
    elif (
        isinstance(config, LanguageModelTrainConfig)
        and config.everyday_data is not None
        and not Path(config.everyday_data).is_dir()  # the card's path, from another machine
    ):
        print(
            f"{loaded.path}: its run measured the reviews in {config.everyday_data}, not found "
            "here; not measured (--everyday-data DIR measures them)",
            file=sys.stderr,
        )
        config = dataclasses.replace(config, everyday_data=None, everyday_tokens=0)
    return config


def evaluate(
    checkpoint: str, data: str | None, threads: int, device: str, everyday: str | None = None
) -> dict[str, float]:
    """Measure a checkpoint on the test split of `data` (None: the downloaded corpus), split and
    capped as its training run did, so the card's test metrics are reproduced; a next-word one
    also on the everyday reviews of `everyday` (None: those its run measured, if any)."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint, device=resolve_device(device))
    config = _evaluation_config(loaded, data, everyday)
    return TASKS[loaded.config.task].evaluate(loaded, config)


def fit_checkpoint_cache(
    checkpoint: str, data: str | None, threads: int, everyday: str | None = None
) -> dict[str, float]:
    """Fit a language model's continuous cache on its training run's validation split,
    re-measure the test split with it (and the everyday reviews, for next-word), and rewrite
    the checkpoint's config and card (weights unchanged)."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    kind = TASKS[loaded.config.task]
    if not isinstance(kind, language.TextTask) or not isinstance(loaded.model, LanguageModel):
        raise SettingError(f"{checkpoint}: a continuous cache is fitted to language models")
    config = _evaluation_config(loaded, data, everyday)
    assert isinstance(config, LanguageModelTrainConfig)
    splits = kind.load(config)
    valid = language.streams(kind.encode(loaded.tokenizer, splits.valid), config.eval_batch_size)
    speakers = speaker_inputs(loaded.model, loaded.tokenizer)
    cache, report = fit_cache(
        loaded.model, valid, config.eval_bptt, config.max_eval_batches, speakers
    )
    fitted = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, cache=cache))
    measured = kind.evaluate(fitted, config)
    held = "everyday_validation_"  # what a run's card records as everyday_validation
    card = {**loaded.card, "cache": report}
    card["metrics"] = {
        **card.get("metrics", {}),
        "test": {k: v for k, v in measured.items() if not k.startswith(held)},
    }
    if any(k.startswith(held) for k in measured):
        card["everyday_validation"] = {
            k[len(held) :]: v for k, v in measured.items() if k.startswith(held)
        }
    samples = language.card_samples(
        loaded.model, loaded.tokenizer, cache, config.sample_prompts, kind.sample_length,
        config.seed,
    )  # fmt: skip
    if samples:
        card["samples"] = samples
    card["config"] = {**card.get("config", {}), "fit_cache": True}
    save_checkpoint(checkpoint, loaded.model, fitted.config, loaded.tokenizer, card)
    chosen = cache.to_dict() if cache is not None else {}
    return {
        **{f"cache_{k}": float(v) for k, v in chosen.items()},
        "validation_loss_without_cache": float(report["validation_loss_without_cache"]),  # type: ignore[arg-type]
        "validation_loss": float(report["validation_loss"]),  # type: ignore[arg-type]
        **{f"test_{k}": v for k, v in measured.items()},
    }


def read_text_file(checkpoint: str, path: str, start: float, threads: int) -> dict[str, float]:
    """A next-word checkpoint on a text file (from `start` of it on), read as the service
    reads typed text (a blank line ends a paragraph: <eos>): the word measures with its
    continuous cache and, as `without_cache_*`, without it."""
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    if loaded.config.task != "next-word" or not isinstance(loaded.tokenizer, WordTokenizer):
        raise SettingError(f"{checkpoint}: read-text measures next-word checkpoints")
    if not 0.0 <= start < 1.0:
        raise SettingError(f"--start must be within 0..1 (below 1), got {start}")
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    text = read_text(Path(path))
    text = text[int(len(text) * start) :]
    if not text.strip():
        raise DataError(f"{path}: no text to read")
    typed = typed_reviews(loaded.tokenizer, [text])  # one text, its paragraphs as the service's
    config = _card_config(loaded, None)
    assert isinstance(config, LanguageModelTrainConfig)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert isinstance(model, LanguageModel)
    metrics: dict[str, float] = {}
    for prefix, cache in (("", loaded.config.cache), ("without_cache_", None)):
        measured = language.measure_words(model, tokenizer, typed.ids, config, cache, typed)
        metrics.update({f"{prefix}{k}": v for k, v in measured.items()})
    return metrics


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls in TASK_CONFIGS.items():
        sub = commands.add_parser(
            name,
            help=f"train the {name} model",
            description=f"Train and export a {name} checkpoint. Settings: defaults <- "
            f"training/configs/{name}.json (or --config) <- these flags.",
        )
        sub.add_argument(
            "--config",
            metavar="FILE",
            help=f"JSON file of settings (default: training/configs/{name}.json)",
        )
        add_config_flags(sub, cls, name)
    sub = commands.add_parser("calibrate", help="fit a sentiment checkpoint's temperature")
    sub.add_argument("checkpoint", help="the checkpoint directory (rewritten in place)")
    sub.add_argument("--data", help="the data set it was trained on (default: download it)")
    sub.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    sub = commands.add_parser(
        "fit-cache",
        help="fit a language model's continuous cache on validation",
        description="Fit the continuous cache (models/cache.py) of a next-word or generate "
        "checkpoint on its run's validation split, measure the test split with it, and rewrite "
        "the checkpoint's config and card (weights unchanged).",
    )
    sub.add_argument("checkpoint", help="the checkpoint directory (rewritten in place)")
    sub.add_argument("--data", help="the data set it was trained on (default: download it)")
    sub.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    sub.add_argument(
        "--everyday-data", metavar="DIR", help="next-word: as for evaluate (default: the card's)"
    )
    sub = commands.add_parser(
        "read-text",
        help="measure a next-word checkpoint on a text file, as typed",
        description="Measure a next-word checkpoint on a plain-text file of your own (a novel, "
        "say), read as the service reads typed text, with and without its "
        "continuous cache: perplexity, top-3 on words, and top-3 on every typed word with the "
        "cache's copies of words outside the vocabulary (typed_*).",
    )
    sub.add_argument("checkpoint", help="the next-word checkpoint directory")
    sub.add_argument("file", help="a UTF-8 text file (optionally .gz)")
    sub.add_argument(
        "--start",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="read from this fraction of the file on (0.9: its last 10%%; default: 0)",
    )
    sub.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    sub = commands.add_parser("evaluate", help="measure a checkpoint on a test split")
    sub.add_argument("checkpoint", help="the checkpoint directory")
    sub.add_argument("--data", help="the data set, file or directory (default: download it)")
    sub.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    sub.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    sub.add_argument(
        "--everyday-data",
        metavar="DIR",
        help="next-word: also measure the held-out reviews of this folder (train and test "
        "files, as sentiment reads them): everyday English (default: as the card's run did)",
    )
    return parser


def _run(args: argparse.Namespace, argv: list[str] | None) -> None:
    if args.command in ("calibrate", "fit-cache", "evaluate", "read-text"):
        if args.command == "calibrate":
            metrics = calibrate(args.checkpoint, args.data, args.threads)
        elif args.command == "read-text":
            metrics = read_text_file(args.checkpoint, args.file, args.start, args.threads)
        elif args.command == "fit-cache":
            metrics = fit_checkpoint_cache(
                args.checkpoint, args.data, args.threads, args.everyday_data
            )
        else:
            metrics = evaluate(
                args.checkpoint, args.data, args.threads, args.device, args.everyday_data
            )
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2))
        return
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        config = resolve_config(args.command, args.config, flags)
    except ValueError as error:  # a setting out of its range: one line, as argparse says it
        raise SettingError(str(error)) from error
    if config.smoke:
        config = smoke_overrides(config)
        if config.data is None:  # a smoke run never needs the network
            sample = TASKS[args.command].sample
            print(f"--smoke without --data: training on the sample shipped in {sample}")
            config = dataclasses.replace(config, data=str(sample))
    train(args.command, config, argv)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args, argv)
    except (DataError, DeviceError, SettingError) as error:
        # a download that failed, data that cannot be read, a device this machine lacks: one
        # line saying what to do, not a traceback
        print(f"python -m training {args.command}: {error}", file=sys.stderr)
        return 1
    if dist.is_initialized():
        # every process waits for rank 0's export, then leaves the group cleanly. The trainer's
        # DistributedDataParallel wrapper sits in a reference cycle (the LR schedule's closure):
        # collect it now, while the group exists, or its destructor runs at exit and can abort.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    restart_with_tcmalloc(sys.argv[1:])
    sys.exit(main())

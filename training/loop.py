"""The training loop every task shares: AdamW, warmup + cosine schedule, gradient clipping, mixed
precision on CUDA, periodic validation with early stopping on the best weights, a progress bar,
resumption from the run directory, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from models.devices import resolve_device
from training.config import TrainConfig, config_as_dict

RESUME_FILE = "resume.pt"


class Task(Protocol):
    """What the loop needs from a task."""

    metric: str  # validation metric to maximise or minimise
    higher_is_better: bool

    def objective(self, model: nn.Module) -> nn.Module:
        """The module whose forward the loss goes through (what DDP wraps)."""
        ...

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[Any]: ...

    def steps_per_epoch(self, world: int) -> int: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """Mean loss over the batch and how many tokens it covered."""
        ...

    def start_epoch(self) -> None: ...

    def validate(self, model: nn.Module) -> dict[str, float]: ...


@dataclass
class History:
    """What the model card and the curve plot are made of."""

    evaluations: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_step: int = 0
    stopped_early: bool = False
    out_of_time: bool = False  # the wall-clock budget (max_minutes) ended training


def pick_device(name: str) -> torch.device:
    """The device a run trains on (`models.devices.resolve_device`, kept under this name)."""
    return resolve_device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def lr_factor(
    step: int, total: int, warmup: int, min_ratio: float, time_spent: float = 0.0
) -> float:
    """Linear warmup, then cosine decay to min_ratio at `total` steps, or sooner: `time_spent` is
    the share of a wall-clock budget used so far, and the decay is as far along as the further
    of the two (so a budgeted run still ends its schedule at the low learning rate)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_spent))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Runs one task's training to completion (or early stop) and leaves the best weights loaded."""

    def __init__(self, config: TrainConfig, task: Task, model: nn.Module, run_dir: Path) -> None:
        self.config, self.task, self.run_dir = config, task, run_dir
        self.rank, self.world = distributed()
        self.device = pick_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.model = model.to(self.device)
        self.wrapped: nn.Module = task.objective(self.model)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.wrapped, device_ids=ids, find_unused_parameters=True
            )
            torch.manual_seed(config.seed + self.rank)  # own dropout masks per process
        # seconds the run spent in earlier processes (a resumed run's card counts them too)
        self.earlier_s = 0.0
        self._this_process_started = time.perf_counter()
        # share of the wall-clock budget spent, read once per step (one broadcast under DDP)
        self.spent = 0.0
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=self.device.type == "cpu" or self.device.type == "cuda",
        )
        self.total_steps = config.epochs * task.steps_per_epoch(self.world)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(
                s, self.total_steps, config.warmup_steps, config.min_lr_ratio, self.spent
            ),
        )
        self.history = History()
        self.step = 0
        self.epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.bad_evaluations = 0
        self.last_evaluated = -1  # step of the last validation, known to every process

    @property
    def main(self) -> bool:
        return self.rank == 0

    def time_spent(self) -> float:
        """Share of the wall-clock budget used so far (0 without one). Every process of a
        distributed run decides from rank 0's clock, so they stop at the same step."""
        budget = self.config.max_minutes * 60
        if budget <= 0:
            return 0.0
        share = torch.tensor([self.elapsed_s() / budget], dtype=torch.float64)
        if self.world > 1 and dist.is_initialized():
            dist.broadcast(share, 0)
        return float(share[0])

    def _autocast(self) -> Any:
        if self.device.type != "cuda" or self.config.precision == "float32":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def fit(self) -> History:
        per_epoch = self.task.steps_per_epoch(self.world)
        if per_epoch < 1:
            raise ValueError(
                "the training split is too small for one batch; lower --batch-size "
                "(or --bptt) or give more data"
            )
        self._resume()
        eval_every = self.config.eval_every or per_epoch
        started = time.perf_counter()
        while (
            self.step < self.config.epochs * per_epoch
            and not self.history.stopped_early
            and not self.history.out_of_time
        ):
            self.epoch, done_in_epoch = divmod(self.step, per_epoch)
            self.task.start_epoch()
            batches = self.task.batches(self.epoch, self.rank, self.world)
            bar = tqdm(
                total=self.task.steps_per_epoch(self.world),
                initial=done_in_epoch,
                desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                disable=not self.main,
                dynamic_ncols=True,
                mininterval=2.0,
            )
            tokens, tick = 0, time.perf_counter()
            for index, batch in enumerate(batches):
                if index < done_in_epoch:
                    continue  # resumed mid-epoch: these batches were already trained on
                loss, count = self._train_step(batch)
                tokens += count
                bar.update(1)
                if self.step % 10 == 0:
                    rate = tokens / max(1e-9, time.perf_counter() - tick)
                    best = self.history.best.get(self.task.metric, float("nan"))
                    bar.set_postfix(
                        loss=f"{loss:.3f}",
                        **{f"best_{self.task.metric}": f"{best:.4f}"},
                        tok_s=f"{rate:,.0f}",
                        lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                    )
                    self.history.train_loss.append((self.step, loss))
                if self.step % eval_every == 0 and self._evaluate() and self.history.stopped_early:
                    break
                if self.spent >= 1.0:
                    self.history.out_of_time = True
                    break
            bar.close()
            self._save_resume()
        if not self.history.stopped_early and self.last_evaluated != self.step:
            self._evaluate()  # the steps after the last periodic validation count too
        if self.best_state:
            self.model.load_state_dict(self.best_state)
        if self.main:
            print(
                f"trained {self.step} steps in {time.perf_counter() - started:.0f}s"
                + (" (the time budget ran out)" if self.history.out_of_time else "")
                + "; "
                f"best {self.task.metric} "
                f"{self.history.best.get(self.task.metric, float('nan')):.4f}"
                f" at step {self.history.best_step}"
            )
        return self.history

    def _train_step(self, batch: Any) -> tuple[float, int]:
        self.wrapped.train()
        with self._autocast():
            loss, count = self.task.loss(self.wrapped, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        self.spent = self.time_spent()  # the schedule's next learning rate follows it
        self.scheduler.step()
        return float(loss.detach()), count

    def _evaluate(self) -> bool:
        """Validate on rank 0, track the best weights, decide early stopping; True if it ran."""
        stop = torch.zeros(1)
        self.last_evaluated = self.step
        if self.main:
            self.model.eval()
            with torch.inference_mode(), self._autocast():
                metrics = self.task.validate(self.model)
            metrics = {
                **metrics,
                "step": float(self.step),
                "epoch": self.step / max(1, self.task.steps_per_epoch(self.world)),
            }
            self.history.evaluations.append(metrics)
            value = metrics[self.task.metric]
            best = self.history.best.get(self.task.metric)
            improved = best is None or (
                value > best if self.task.higher_is_better else value < best
            )
            if improved:
                self.history.best, self.history.best_step = metrics, self.step
                self.best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                )
                self.bad_evaluations = 0
            else:
                self.bad_evaluations += 1
            tqdm.write(
                f"step {self.step}: "
                + ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("step", "epoch")
                )
                + (
                    " (best)"
                    if improved
                    else f" (no gain {self.bad_evaluations}/{self.config.patience})"
                )
            )
            stop[0] = float(self.bad_evaluations >= self.config.patience)
        if self.world > 1:
            dist.broadcast(stop, 0)
        self.history.stopped_early = bool(stop[0])
        self._save_resume()
        return True

    def _settings(self) -> dict[str, Any]:
        """The settings a resumed run must share (those that change what is trained)."""
        free = {"threads", "device", "run_dir", "export_dir", "cache_dir", "data"}
        values = config_as_dict(self.config)  # flat, as runs before the nested config saved it
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k not in free
        }

    def _save_resume(self) -> None:
        """Everything needed to continue: never part of the exported checkpoint."""
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "last_evaluated": self.last_evaluated,
            "bad_evaluations": self.bad_evaluations,
            "history": json.dumps(self.history.__dict__),
            "settings": json.dumps(self._settings()),
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": self.elapsed_s(),
        }
        partial = self.run_dir / (RESUME_FILE + ".part")
        torch.save(state, partial)
        partial.replace(self.run_dir / RESUME_FILE)

    def elapsed_s(self) -> float:
        """Seconds this run has trained so far, in this process and the ones it resumed from."""
        return self.earlier_s + time.perf_counter() - self._this_process_started

    def _resume(self) -> None:
        path = self.run_dir / RESUME_FILE
        if not path.is_file():
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state.get("settings", "{}"))
        changed = {k: (saved.get(k), v) for k, v in self._settings().items() if saved.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{path} belongs to a run with other settings ({detail}); "
                "resume with the same settings or use another --run-dir"
            )
        self.model.load_state_dict(state["model"])
        self.best_state = state["best_state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.last_evaluated = int(state["last_evaluated"])
        self.epoch = self.step // self.task.steps_per_epoch(self.world)
        self.bad_evaluations = int(state["bad_evaluations"])
        self.history = History(**json.loads(state["history"]))
        torch.set_rng_state(state["torch_rng"])
        self.earlier_s = float(state.get("elapsed_s", 0.0))  # absent in older resume files
        if self.main:
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch + 1})")


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started

"""The training loop: steps, the time budget, periodic evaluation, checkpoints and the export.

:func:`restore.train.setup` builds a :class:`Trainer` (data, tokenizer, model, optimizer, the
state of a resumed run); :meth:`Trainer.run` trains until ``max_steps`` (or a stop, a time
limit), evaluating (:mod:`restore.train_eval`), saving checkpoints and exporting the model
directory (:func:`restore.checkpoint.export_model`) along the way. Every step takes the same
batches on every rank (:func:`restore.mix.epoch_batches`, fixed by the seed and the
epoch), so a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import contextlib
import math
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from restore import __version__
from restore.attention import PAD_MULTIPLE, round_up
from restore.checkpoint import CHECKPOINT, export_model, save_checkpoint
from restore.config import ExperimentConfig
from restore.config_record import portable_config_dict, portable_path
from restore.progress import show_progress
from restore.device import describe
from restore.errors import RestoreError
from restore.mix import Mix, epoch_batches
from restore.model import count_parameters
from restore.lineage import run_entry
from restore.token_ids import IGNORE_INDEX, TokenizedPairs, to_device
from restore.train_eval import dev_bleu, dev_loss


@dataclass
class TrainState:
    """Where a run stands; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0  # optimizer steps done in the current epoch (the data position)
    tokens_seen: int = 0  # source + target tokens, all ranks
    train_seconds: float = 0.0  # time in training steps, all sessions
    wall_seconds: float = 0.0  # wall time of earlier sessions
    world_size: int = 1
    history: list = field(default_factory=list)  # dev metrics per evaluation
    max_steps: int | None = None  # derived from train.time_budget_minutes once the step rate is measured
    steps_per_second: float | None = None  # the measured rate it was derived from
    start_loss: float | None = None  # model.init_from's loss on the first step's batches, before any update
    first_step_loss: float | None = None  # the first step's training loss


class LRSchedule:
    """Linear warmup, then linear or cosine decay to ``min_ratio`` at ``total`` steps (or constant).

    >>> f = LRSchedule(warmup=2, total=10, kind="linear", min_ratio=0.0)
    >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, warmup: int, total: int, kind: str, min_ratio: float) -> None:
        # Plain attributes: LambdaLR saves them with the scheduler (a derived ``total`` resumes too).
        self.warmup, self.total, self.kind, self.min_ratio = warmup, total, kind, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        shape = 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def budget_max_steps(steps_done: int, steps_per_second: float, seconds_left: float) -> int:
    """The step at which a run that has done ``steps_done`` steps uses up ``seconds_left`` at its measured rate.

    >>> budget_max_steps(50, 3.0, 400.0), budget_max_steps(50, 3.0, -20.0)
    (1250, 50)
    """
    return steps_done + max(0, int(steps_per_second * seconds_left))


# --- the loop --------------------------------------------------------------------------------
@dataclass(kw_only=True, eq=False)
class Trainer:
    """Runs steps, evaluates, checkpoints and exports; one instance per session, built by :func:`restore.train.setup`."""

    config: ExperimentConfig
    accelerator: object
    model: torch.nn.Module  # the bare model (``accelerator.prepare`` wraps it for the steps)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: LRSchedule  # the scheduler's LR rule (its ``total`` may be derived from a time budget)
    tokenizer: object
    train_set: TokenizedPairs
    dev_set: TokenizedPairs | None
    state: TrainState
    out: Path
    log: "Log"
    pairs: dict  # how the train/dev pairs were prepared (for restore.json)
    stages: "Stages"
    session_start: float  # perf_counter() when setup began: wall time includes the setup
    lineage: list = field(default_factory=list)  # the start model's lineage (restore.lineage); this run's entry is appended on export
    shards: list = field(default_factory=list)  # the training files as restore.lineage.Shard records
    mix: Mix | None = None  # the corpora of train_set and what each epoch draws from them (None: every pair once)

    def __post_init__(self) -> None:
        self.cfg = self.config.train
        self.raw_model = self.model
        self.model = self.accelerator.prepare(self.raw_model)
        # Budgets count padded tokens (lengths rounded up as collate pads them).
        self.lengths = round_up(np.maximum(np.maximum(self.train_set.src_lens, self.train_set.tgt_lens), 1), PAD_MULTIPLE)
        self.src_lens = np.asarray(self.train_set.src_lens)  # the batches' tie-break: similar sources share a batch
        self.pair_tokens = self.train_set.src_lens + self.train_set.tgt_lens
        self.parameters = count_parameters(self.raw_model)
        self.loss_fn, self.compiled = seq2seq_loss, False
        if self.cfg.compile:
            # Dynamic shapes: one graph for every batch shape (token-budget batches vary in rows and lengths).
            self.loss_fn = torch.compile(seq2seq_loss, dynamic=True, backend=self.cfg.compile_backend)
            self.compiled = True
        self.compile_note = f"torch.compile ({self.cfg.compile_backend}, dynamic shapes)" if self.compiled else "eager"
        self.pad_id = self.tokenizer.pad_token_id
        self.start_id = self.raw_model.config.decoder_start_token_id
        self.max_steps = self.cfg.max_steps
        if self.state.max_steps is not None:  # derived from the time budget in an earlier session
            self.max_steps = self.schedule.total = self.state.max_steps
        budget_open = self.cfg.time_budget_minutes is not None and self.state.max_steps is None
        if budget_open and self.state.step == 0:
            # Until the rate is measured the run has no end: the LR warms up and then holds
            # (the step-0 LR does not depend on the total, so nothing already applied changes).
            self.schedule.total = sys.maxsize
        self.end_step = min(sys.maxsize if budget_open else self.max_steps, self.cfg.stop_after_steps or sys.maxsize)
        self.session_tokens, self.session_train_seconds = 0, 0.0
        self.session_positions = 0  # padded source + target positions of this session's batches
        self.window = [0, 0.0]  # tokens and step seconds since the last progress line
        self.steady = [0, 0.0]  # tokens and step seconds after this session's first rate_warmup_steps (compilation, warm-up)
        self.loss_sum, self.loss_count = torch.zeros((), device=self.accelerator.device), 0
        self.first_step = self.state.step
        self.rate_start: tuple[int, float] | None = None  # (step, time) where the rate measurement began

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def run(self) -> Path:
        bar = tqdm(
            total=self.end_step if self.end_step < sys.maxsize else None, initial=self.state.step, unit="step",
            dynamic_ncols=True, file=sys.stderr, disable=not (self.accelerator.is_main_process and show_progress()), desc="train",
        )  # fmt: skip
        self.bar = bar
        if self.config.model.init_from and self.state.step == 0:
            self._check_start_loss()
        self.model.train()
        while self.state.step < self.end_step:
            batches = self._batches(self.state.epoch)
            per_step = self.world * self.cfg.grad_accum
            steps_in_epoch = len(batches) // per_step
            if not steps_in_epoch:
                raise RestoreError(
                    f"{len(batches)} batches per epoch cannot fill one step of {per_step} "
                    "(lower train.batch_tokens or train.grad_accum, or use more data)"
                )
            while self.state.epoch_step < steps_in_epoch and self.state.step < self.end_step:
                first = self.state.epoch_step * per_step
                with self.stages("first step") if self.state.step == self.first_step else contextlib.nullcontext():
                    self._step(batches[first : first + per_step])
                self._after_step()
                if self._out_of_time():
                    self.end_step = self.state.step
                    self.log(f"time limit: {self.cfg.time_limit_minutes} minutes reached at step {self.state.step}")
            if self.state.epoch_step >= steps_in_epoch:
                self.state.epoch, self.state.epoch_step = self.state.epoch + 1, 0
        bar.close()
        return self._finish()

    def _batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(self.lengths, self.cfg.batch_tokens, self.cfg.seed, epoch, self.mix, tiebreak=self.src_lens)

    def _step(self, step_batches: list[np.ndarray]) -> None:
        """One optimizer step; micro-batch ``m`` of rank ``r`` is ``step_batches[m * world + r]``."""
        started = time.perf_counter()
        mine = step_batches[self.accelerator.process_index :: self.world]
        try:
            losses, positions = self._forward_backward(mine)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # a failed compilation (first step, or a later recompilation): go on eagerly
            if not self.compiled:
                raise
            self.log(f"torch.compile failed ({type(e).__name__}: {_first_line(e)}); training continues eagerly")
            self.loss_fn, self.compiled = seq2seq_loss, False
            self.compile_note = f"eager (torch.compile failed: {type(e).__name__})"
            self.optimizer.zero_grad(set_to_none=True)  # drop what the failed attempt accumulated
            losses, positions = self._forward_backward(mine)
        self.session_positions += positions
        for loss in losses:
            self.loss_sum += loss
        self.loss_count += len(losses)
        if self.state.first_step_loss is None:
            self.state.first_step_loss = round(torch.stack(losses).mean().item(), 6)
            if self.state.start_loss is not None:
                self.log(f"first step: training loss {self.state.first_step_loss:.4f} (model.init_from's loss on these batches: {self.state.start_loss:.4f})")
        if self.cfg.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = int(sum(int(self.pair_tokens[b].sum()) for b in step_batches))
        self.state.step += 1
        self.state.epoch_step += 1
        self.state.tokens_seen += tokens
        self.session_tokens += tokens
        elapsed = time.perf_counter() - started
        self.state.train_seconds += elapsed
        self.session_train_seconds += elapsed
        self.window[0], self.window[1] = self.window[0] + tokens, self.window[1] + elapsed
        if self.state.step - self.first_step > self.cfg.rate_warmup_steps:
            self.steady[0], self.steady[1] = self.steady[0] + tokens, self.steady[1] + elapsed

    def _forward_backward(self, mine: list[np.ndarray]) -> tuple[list[torch.Tensor], int]:
        """Forward and backward passes of this rank's micro-batches (gradients accumulate): their losses,
        and their padded positions (source + target)."""
        losses, positions = [], 0
        for m, ids in enumerate(mine):
            batch, labels = self._device_batch(ids)
            positions += batch["input_ids"].numel() + labels.numel()
            sync = m == len(mine) - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                loss = self.loss_fn(self.model, batch, labels, self.cfg.label_smoothing)
                self.accelerator.backward(loss / len(mine))
            losses.append(loss.detach())
        return losses, positions

    def _device_batch(self, ids: np.ndarray) -> tuple[dict, torch.Tensor]:
        """The training pairs ``ids`` collated on this rank's device: the model's inputs, and the labels."""
        batch = to_device(self.train_set.collate(ids, self.pad_id, self.start_id), self.accelerator.device)
        return batch, batch.pop("labels")

    def _check_start_loss(self) -> None:
        """The start model's loss on the first step's batches, before any update (eval mode: no dropout).

        Logged beside the first step's training loss: equal (within float tolerance, for a model
        without dropout) when ``model.init_from``'s weights loaded; a fresh model scores about ln(vocab).
        """
        first = self._batches(self.state.epoch)[: self.world * self.cfg.grad_accum][self.accelerator.process_index :: self.world]
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for ids in first:
                batch, labels = self._device_batch(ids)
                total += seq2seq_loss(self.model, batch, labels, self.cfg.label_smoothing).item()
        self.model.train()
        self.state.start_loss = round(total / len(first), 6)
        vocab = self.raw_model.get_input_embeddings().num_embeddings
        self.log(
            f"init_from: loss {self.state.start_loss:.4f} on the first step's batches before training "
            f"(a fresh model's is about ln({vocab:,}) = {math.log(vocab):.2f} or more)"
        )

    def _after_step(self) -> None:
        step = self.state.step
        self.bar.update(1)
        if self.cfg.time_budget_minutes is not None and self.state.max_steps is None:
            self._measure_rate()
        if step % self.cfg.log_every == 0 or step == self.end_step:
            self._log_progress()
        if self.cfg.eval_every and step % self.cfg.eval_every == 0 and step < self.end_step:
            self._evaluate()
        if self.cfg.save_every and step % self.cfg.save_every == 0 and step < self.end_step:
            self._save_checkpoint()
        if self.cfg.export_every and step % self.cfg.export_every == 0 and step < self.end_step:
            # An interim model (e.g. for a time-limited GPU lease that may be cut off); the last
            # dev metrics are those of the latest periodic evaluation, if any.
            if self.accelerator.is_main_process:
                self._export(completed=False, metrics=None)
            self.accelerator.wait_for_everyone()

    # --- the time budget ---
    def _measure_rate(self) -> None:
        """Time ``rate_steps`` steps after ``rate_warmup_steps``, then fix ``max_steps`` from the rate."""
        step, cfg = self.state.step, self.cfg
        if self.rate_start is None:
            if step - self.first_step >= cfg.rate_warmup_steps:  # this session's first steps compile and warm up
                self._synchronize()
                self.rate_start = (step, time.perf_counter())
            return
        first, began = self.rate_start
        if step - first < cfg.rate_steps:
            return
        self._synchronize()
        now = time.perf_counter()
        rate = (step - first) / max(now - began, 1e-9)
        elapsed = self.state.wall_seconds + (now - self.session_start)
        left = 60 * (cfg.time_budget_minutes - cfg.budget_reserve_minutes) - elapsed
        max_steps = budget_max_steps(step, rate, left)
        if self.world > 1:  # every rank takes the main process's numbers
            shared = torch.tensor([float(max_steps), rate], dtype=torch.float64, device=self.accelerator.device)
            torch.distributed.broadcast(shared, src=0)
            max_steps, rate = int(shared[0].item()), float(shared[1].item())
        self._set_max_steps(max_steps)
        self.state.steps_per_second = round(rate, 4)
        self.log(
            f"time budget: {rate:.3f} steps/s measured over steps {first}-{step}; {elapsed:.0f}s used of "
            f"{60 * cfg.time_budget_minutes:.0f}s ({60 * cfg.budget_reserve_minutes:.0f}s kept for the end): max_steps {max_steps}"
        )

    def _set_max_steps(self, max_steps: int) -> None:
        """End the LR schedule (and the run) at ``max_steps``; the next step already uses the new schedule."""
        self.state.max_steps = self.max_steps = self.schedule.total = max_steps
        self.end_step = min(max_steps, self.cfg.stop_after_steps or max_steps)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.schedule(self.state.step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.bar.total = self.end_step
        self.bar.refresh()

    def _synchronize(self) -> None:
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize(self.accelerator.device)

    def _out_of_time(self) -> bool:
        """All ranks agree (the main process decides) whether the session's time is up."""
        if self.cfg.time_limit_minutes is None:
            return False
        late = time.perf_counter() - self.session_start > 60 * self.cfg.time_limit_minutes
        if self.world == 1:
            return late
        if self.state.step % 10:
            return False  # a collective every step would stall the GPU queue
        flag = torch.tensor([float(late)], device=self.accelerator.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def _log_progress(self) -> None:
        loss = self.accelerator.reduce(self.loss_sum / max(1, self.loss_count), "mean").item()
        self.loss_sum.zero_()
        self.loss_count = 0
        rate = self.window[0] / max(self.window[1], 1e-9)  # since the last line: a compilation does not linger in it
        self.window = [0, 0.0]
        lr = self.scheduler.get_last_lr()[0]
        flops = flops_text(model_flops(self.parameters, rate))
        self.bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {rate:,.0f} tok/s {flops}")
        if not self.bar.disable:
            return
        done = self.state.step - self.first_step
        end = self.end_step if self.end_step < sys.maxsize else None
        eta = f" eta {_hms((end - self.state.step) * self.session_train_seconds / max(1, done))}" if end else ""
        self.log(
            f"step {self.state.step}/{end or '?'} epoch {self.state.epoch} loss {loss:.4f} lr {lr:.2e} "
            f"{rate:,.0f} tok/s {flops}{eta}"
        )

    # --- evaluation ---
    def _evaluate(self) -> dict | None:
        """Dev loss and greedy sacreBLEU on the main process (others wait)."""
        metrics = None
        if self.dev_set is not None and self.accelerator.is_main_process:
            started = time.perf_counter()
            model = self.accelerator.unwrap_model(self.model)
            model.eval()
            with torch.no_grad(), self.accelerator.autocast():
                device, cfg = self.accelerator.device, self.cfg
                loss = dev_loss(model, self.dev_set, cfg.eval_pairs, cfg.batch_tokens, self.pad_id, self.start_id, device)
                bleu = dev_bleu(model, self.tokenizer, self.dev_set, cfg.eval_bleu_pairs, self.config.chunking, device)
                metrics = {"step": self.state.step, **loss, **bleu}
            model.train()
            metrics["seconds"] = round(time.perf_counter() - started, 2)
            self.state.history.append(metrics)
            bleu = f", BLEU {metrics['bleu']:.2f} on {metrics['bleu_pairs']} pairs" if "bleu" in metrics else ""
            self.log(f"eval step {self.state.step}: dev loss {metrics['loss']:.4f} on {metrics['loss_pairs']} pairs{bleu}")
        self.accelerator.wait_for_everyone()
        return metrics

    # --- checkpoints and export ---
    def _save_checkpoint(self) -> None:
        state = asdict(self.state)
        state["wall_seconds"] = self._wall()
        folder = save_checkpoint(self.out, self.accelerator, self.raw_model, self.optimizer, self.scheduler, state)
        self.log(f"checkpoint: step {self.state.step} saved in {folder}")

    def _wall(self) -> float:
        return self.state.wall_seconds + (time.perf_counter() - self.session_start)

    def _finish(self) -> Path:
        completed = self.state.step >= self.max_steps
        if not completed or self.cfg.keep_checkpoint:
            self._save_checkpoint()
        with self.stages("final eval"):
            metrics = self._evaluate()  # periodic evaluations never fall on the last step
        if self.accelerator.is_main_process:
            with self.stages("export"):
                self._export(completed, metrics)
            if completed and not self.cfg.keep_checkpoint:
                shutil.rmtree(self.out / CHECKPOINT, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.log(f"stages: {self.stages}")
        rate = self.session_tokens / max(self.session_train_seconds, 1e-9)
        where = f"{describe(self.accelerator.device)}" + (f" x{self.world}" if self.world > 1 else "")
        status = "done" if completed else f"stopped (resume with --resume to reach {self.max_steps})"
        steady = self._steady_rate()
        self.log(
            f"throughput: {steady:,.0f} tokens/s after the first {self.cfg.rate_warmup_steps} steps ({rate:,.0f} with them), "
            f"{flops_text(model_flops(self.parameters, steady))} ({FLOPS_FORMULA}); {self.compile_note}; "
            f"{self._real_share():.1%} of the batches' positions are tokens, not padding"
        )
        self.log(
            f"restore train: {status}: {self.state.step}/{self.max_steps} steps, {self.state.tokens_seen:,} tokens seen, "
            f"{rate:,.0f} tokens/s, wall {_hms(self._wall())}, device {where} -> {self.out}"
        )
        return self.out

    def _steady_rate(self) -> float:
        """Tokens/s of this session's steps after its first ``rate_warmup_steps`` (all steps if there are no more)."""
        tokens, seconds = self.steady if self.steady[1] else (self.session_tokens, self.session_train_seconds)
        return tokens / max(seconds, 1e-9)

    def _real_share(self) -> float:
        """Tokens over padded positions (source + target) of this session's batches."""
        return self.session_tokens / max(1, self.session_positions * self.world)

    def _export(self, completed: bool, metrics: dict | None) -> None:
        """Write the self-describing model directory (weights, tokenizer, restore.json with the lineage)."""
        training = self._training_info(completed, metrics)
        start = portable_path(self.config.model.init_from) if self.config.model.init_from else None
        entry = run_entry(
            start_model=start, shards=self.shards, training=training,
            start_loss=self.state.start_loss, first_step_loss=self.state.first_step_loss,
        )  # fmt: skip
        export_model(
            self.out, self.raw_model, self.tokenizer, self.config.chunking, training,
            portable_config_dict(self.config), save_dtype=self.cfg.save_dtype, max_shard_size=self.cfg.max_shard_size,
            lineage=[*self.lineage, entry],
        )  # fmt: skip

    def _training_info(self, completed: bool, metrics: dict | None) -> dict:
        import transformers

        rate = self.session_tokens / max(self.session_train_seconds, 1e-9)
        info = {
            "completed": completed,
            "steps": self.state.step,
            "max_steps": self.max_steps,
            "epochs": round(self.state.epoch + self.state.epoch_step / max(1, self._steps_per_epoch()), 3),
            "tokens_seen": self.state.tokens_seen,
            "tokens_per_second": round(rate, 1),
            "steady_tokens_per_second": round(self._steady_rate(), 1),  # after the first rate_warmup_steps steps
            "train_seconds": round(self.state.train_seconds, 1),
            "wall_seconds": round(self._wall(), 1),
            "stage_seconds": {name: round(seconds, 2) for name, seconds in self.stages.seconds.items()},
            "device": describe(self.accelerator.device),
            "processes": self.world,
            "precision": "bf16 autocast" if self.accelerator.mixed_precision == "bf16" else "fp32",
            "step_function": self.compile_note,
            "model_flops_per_second": round(model_flops(self.parameters, self._steady_rate())),  # FLOPS_FORMULA, steady rate
            "token_share_of_positions": round(self._real_share(), 4),  # the rest is padding
            "saved_dtype": self.cfg.save_dtype,
            "parameters": self.parameters,
            "data": {**{split: _portable_stats(stats) for split, stats in self.pairs.items()}, "corpora": self.mix.record() if self.mix else None},
            "train_pairs_encoded": len(self.train_set),
            "dev": metrics,
            "history": self.state.history,
            "versions": {
                "restore": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
        }  # fmt: skip
        if self.cfg.time_budget_minutes is not None:
            info["time_budget"] = {
                "minutes": self.cfg.time_budget_minutes,
                "reserve_minutes": self.cfg.budget_reserve_minutes,
                "steps_per_second": self.state.steps_per_second,  # measured after the warm-up steps
                "max_steps": self.state.max_steps,  # derived from that rate (None: not measured yet)
            }
        return info

    def _steps_per_epoch(self) -> int:
        return len(self._batches(self.state.epoch)) // (self.world * self.cfg.grad_accum)


# --- pieces ----------------------------------------------------------------------------------
FLOPS_FORMULA = "model FLOP/s = 6 x parameters x tokens/s, tokens = source + target ids without padding"


def model_flops(parameters: int, tokens_per_second: float) -> float:
    """Model FLOP/s by :data:`FLOPS_FORMULA` (the usual estimate: forward 2, backward 4 per parameter and token).

    >>> round(model_flops(14_628_352, 1_457_273) / 1e12)
    128
    """
    return 6.0 * parameters * tokens_per_second


def flops_text(flops: float) -> str:
    """``1.28e14`` -> ``'128.0 TFLOP/s'``; under a TFLOP/s in GFLOP/s.

    >>> flops_text(1.28e14), flops_text(3.1e10)
    ('128.0 TFLOP/s', '31.0 GFLOP/s')
    """
    return f"{flops / 1e12:,.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.1f} GFLOP/s"


def seq2seq_loss(model, batch: dict, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy per target token of a collated batch (teacher forcing): the training step's
    loss (compiled with the model's forward when ``train.compile`` is on)."""
    logits = model(**batch, use_cache=False).logits
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
    )


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""


class Stages:
    """Seconds per named stage of a run, in order (``with stages("pairs"): ...``).

    >>> stages = Stages()
    >>> with stages("pairs"):
    ...     pass
    >>> list(stages.seconds)
    ['pairs']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.seconds.items())

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


class Log:
    """Progress lines on stdout from the main process (stderr stays for errors and the bar)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()


def _hms(seconds: float) -> str:
    """``3725.4`` -> ``'1:02:05'``.

    >>> _hms(3725.4), _hms(42)
    ('1:02:05', '0:00:42')
    """
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _portable_stats(stats: dict | None) -> dict | None:
    """A split's data statistics as a model records them: its files as :func:`portable_path` names."""
    if stats is None:
        return None
    return {**stats, "files": [portable_path(f) for f in stats.get("files", [])]}

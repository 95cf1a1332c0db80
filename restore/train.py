"""Training: ``python -m restore train --config configs/X.yaml [section.key=value ...] [--resume]``.

One run, in order:

1. prepare (or load cached) train/dev pairs (:mod:`restore.data`, parallel ``datasets.map``);
2. the tokenizer: the one named by ``tokenizer.path`` (``configs/small.yaml`` uses the
   committed ``models/tokenizer-16k``), else trained on a sample of sources and targets;
   the lexicon from a sample of targets (counted in parallel, cached); both saved into
   ``train.output_dir`` (kept as they are when resuming);
3. encode the pairs to ids (in parallel, cached beside the pairs, keyed by the
   tokenizer's content); build the model (:mod:`restore.model`) or start from ``model.init_from``;
4. an ``accelerate`` loop: bf16 autocast on CUDA, fp32 on the CPU; length-grouped
   token-budget batches (lengths padded to multiples of 8, so shapes repeat), fixed per
   epoch by the seed; AdamW with warmup and linear/cosine decay; periodic dev loss and
   dev BLEU decoded exactly as ``restore infer`` decodes (greedy, no repair); checkpoints;
5. export a self-describing model directory: ``save_pretrained`` weights (safetensors,
   ``train.save_dtype``), tokenizer, ``lexicon.json.gz`` and ``restore.json``.

:func:`setup` builds all of it and returns a ready :class:`Trainer`; :meth:`Trainer.run`
trains and exports. With ``train.time_budget_minutes`` the step rate is measured after a
warm-up and ``max_steps`` derived from it, so that the LR schedule ends when the budget does.

Multi-GPU needs no code change: ``torchrun --nproc-per-node N -m restore train ...``
or ``accelerate launch -m restore train ...``; every rank takes its share of each
step's batches. ``--resume`` continues from ``output_dir/checkpoint`` exactly: model,
optimizer, scheduler, step, data position (epoch + batch) and every RNG are restored,
so an interrupted run ends with the same weights as an uninterrupted one (on CPU).
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
import yaml
from tqdm import tqdm

from restore import __version__
from restore.attention import PAD_MULTIPLE, configure_attention, round_up
from restore.batching import budget_batches
from restore.checkpoint import CHECKPOINT, RESTORE_JSON, export_model, load_checkpoint, save_checkpoint
from restore.config import ExperimentConfig, config_differences, config_to_dict, dump_config, load_config_dict
from restore.data import (
    IGNORE_INDEX,
    PairSet,
    TokenizedPairs,
    build_lexicon,
    encode_pairs,
    eval_indices,
    prepare_pairs,
    sample_indices,
    split_selections,
    token_batches,
)
from restore.device import describe, resolve_device
from restore.errors import RestoreError
from restore.lexicon import LEXICON_FILE
from restore.model import build_model, count_parameters, load_pretrained
from restore.progress import quiet_library_bars, show_progress
from restore.tokenizer import train_tokenizer

TRAIN_CONFIG = "train_config.yaml"
# Settings that may differ between a run and its --resume without changing the weights.
RESUME_MAY_CHANGE = frozenset(
    {"train.stop_after_steps", "train.time_limit_minutes", "train.budget_reserve_minutes", "train.log_every", "train.save_every", "train.export_every", "train.keep_checkpoint",
     "train.device", "train.cpu_threads", "train.eval_every", "train.eval_pairs", "train.eval_bleu_pairs",
     "data.num_proc", "data.cache_dir"}
)  # fmt: skip


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


# --- entry points ----------------------------------------------------------------------------
def train(config: ExperimentConfig, resume: bool = False) -> Path:
    """Train (or resume) the run described by ``config``; returns the exported model directory."""
    quiet_library_bars()
    threads = torch.get_num_threads()
    if config.train.cpu_threads:
        torch.set_num_threads(config.train.cpu_threads)
    try:
        return setup(config, resume).run()
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide: leave it as found


def setup(config: ExperimentConfig, resume: bool = False) -> "Trainer":
    """Everything a run needs, built in order (data, tokenizer, lexicon, ids, model, optimizer, state): a ready :class:`Trainer`.

    Each stage's seconds are kept (``Trainer.stages``, logged and written to ``restore.json``).
    """
    session_start = time.perf_counter()
    stages = _Stages()
    out = Path(config.train.output_dir)
    _check_output_dir(out, config, resume)
    device = resolve_device(config.train.device)
    selections = split_selections(config.data)  # missing files fail here, before any work

    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if device.type == "cuda" else "no")
    log = _Log(accelerator.is_main_process)
    log(f"attention: {configure_attention(accelerator.device)}")
    with stages("pairs"):
        train_pairs, dev_pairs = _prepare_data(config, selections, accelerator, log)
    with stages("tokenizer"):
        tokenizer = _prepare_tokenizer(config, out, train_pairs, resume, accelerator, log)
    with stages("lexicon"):
        if accelerator.is_main_process and not (resume and (out / LEXICON_FILE).is_file()):
            _build_lexicon(config, out, train_pairs, log)

    torch.manual_seed(config.train.seed)
    with stages("model"):
        model = _create_model(config, tokenizer).to(accelerator.device)
    max_len = int(getattr(model.config, "max_position_embeddings", 1024))
    with stages("encoding"), accelerator.main_process_first():  # the main process fills the cache
        train_set = encode_pairs(train_pairs, tokenizer, max_len, config.data.cache_dir, config.data.num_proc)
        dev_set = encode_pairs(dev_pairs, tokenizer, max_len, config.data.cache_dir, config.data.num_proc) if dev_pairs and len(dev_pairs) else None
    if not len(train_set):
        raise RestoreError(f"no training pair fits the model's {max_len} positions")
    log(
        f"model: {type(model).__name__}, {count_parameters(model) / 1e6:.2f}M parameters, vocab {len(tokenizer)}; "
        f"{len(train_set):,} train pairs encoded ({train_set.dropped} longer than {max_len} tokens dropped)"
    )
    optimizer = _make_optimizer(model, config, accelerator.device)
    schedule = LRSchedule(config.train.warmup_steps, config.train.max_steps, config.train.schedule, config.train.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = TrainState(world_size=accelerator.num_processes)
    if resume:
        state = TrainState(**load_checkpoint(out, model, optimizer, scheduler, accelerator.process_index, accelerator.device))
        if state.world_size != accelerator.num_processes:
            raise RestoreError(
                f"{out / CHECKPOINT}: written by {state.world_size} processes; resume with the same number (now {accelerator.num_processes})"
            )
        log(f"resumed from {out / CHECKPOINT} at step {state.step} (epoch {state.epoch}, batch {state.epoch_step})")
    else:
        torch.manual_seed(config.train.seed + accelerator.process_index)  # dropout stream per rank
    log(f"setup: {stages}")
    return Trainer(
        config=config, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, schedule=schedule,
        tokenizer=tokenizer, train_set=train_set, dev_set=dev_set, state=state, out=out, log=log,
        pairs={"train": train_pairs.stats, "dev": dev_pairs.stats if dev_pairs else None},
        stages=stages, session_start=session_start,
    )  # fmt: skip


def _prepare_data(config: ExperimentConfig, selections, accelerator, log) -> tuple[PairSet, PairSet | None]:
    """Train/dev pairs: the main process prepares (or finds them cached), then the other ranks load them."""
    train_sel, dev_sel = selections
    with accelerator.main_process_first():
        train_pairs = prepare_pairs(train_sel, config.chunking, config.data.cache_dir, config.data.num_proc)
        dev_pairs = prepare_pairs(dev_sel, config.chunking, config.data.cache_dir, config.data.num_proc) if dev_sel else None
    if not len(train_pairs):
        raise RestoreError(f"{', '.join(train_sel.describe())}: no training pairs (the articles have no sentences)")
    log(_describe_pairs("train", train_pairs) + (f"; {_describe_pairs('dev', dev_pairs)}" if dev_pairs else ""))
    return train_pairs, dev_pairs


def budget_max_steps(steps_done: int, steps_per_second: float, seconds_left: float) -> int:
    """The step at which a run that has done ``steps_done`` steps uses up ``seconds_left`` at its measured rate.

    >>> budget_max_steps(50, 3.0, 400.0), budget_max_steps(50, 3.0, -20.0)
    (1250, 50)
    """
    return steps_done + max(0, int(steps_per_second * seconds_left))


# --- the loop --------------------------------------------------------------------------------
@dataclass(kw_only=True, eq=False)
class Trainer:
    """Runs steps, evaluates, checkpoints and exports; one instance per session, built by :func:`setup`."""

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
    log: "_Log"
    pairs: dict  # how the train/dev pairs were prepared (for restore.json)
    stages: "_Stages"
    session_start: float  # perf_counter() when setup began: wall time includes the setup

    def __post_init__(self) -> None:
        self.cfg = self.config.train
        self.raw_model = self.model
        self.model = self.accelerator.prepare(self.raw_model)
        # Budgets count padded tokens (lengths rounded up as collate pads them).
        self.lengths = round_up(np.maximum(np.maximum(self.train_set.src_lens, self.train_set.tgt_lens), 1), PAD_MULTIPLE)
        self.pair_tokens = self.train_set.src_lens + self.train_set.tgt_lens
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
        self.model.train()
        while self.state.step < self.end_step:
            batches = token_batches(self.lengths, self.cfg.batch_tokens, self.cfg.seed, self.state.epoch)
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

    def _step(self, step_batches: list[np.ndarray]) -> None:
        """One optimizer step; micro-batch ``m`` of rank ``r`` is ``step_batches[m * world + r]``."""
        started = time.perf_counter()
        mine = step_batches[self.accelerator.process_index :: self.world]
        for m, ids in enumerate(mine):
            batch = self._to_device(self.train_set.collate(ids, self.pad_id, self.start_id))
            labels = batch.pop("labels")
            sync = m == len(mine) - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                logits = self.model(**batch, use_cache=False).logits
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1), labels.flatten(),
                    ignore_index=IGNORE_INDEX, label_smoothing=self.cfg.label_smoothing,
                )  # fmt: skip
                self.accelerator.backward(loss / len(mine))
            self.loss_sum += loss.detach()
            self.loss_count += 1
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

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        if device.type != "cuda":
            return batch
        # Pinned + non_blocking: the copy does not wait for the GPU to drain the previous step.
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}

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
        rate = self.session_tokens / max(self.session_train_seconds, 1e-9)
        lr = self.scheduler.get_last_lr()[0]
        self.bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {rate:,.0f} tok/s")
        if not self.bar.disable:
            return
        done = self.state.step - self.first_step
        end = self.end_step if self.end_step < sys.maxsize else None
        eta = f" eta {_hms((end - self.state.step) * self.session_train_seconds / max(1, done))}" if end else ""
        self.log(
            f"step {self.state.step}/{end or '?'} epoch {self.state.epoch} loss {loss:.4f} lr {lr:.2e} "
            f"{rate:,.0f} tok/s{eta}"
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
                metrics = {"step": self.state.step, **self._dev_loss(model), **self._dev_bleu(model)}
            model.train()
            metrics["seconds"] = round(time.perf_counter() - started, 2)
            self.state.history.append(metrics)
            bleu = f", BLEU {metrics['bleu']:.2f} on {metrics['bleu_pairs']} pairs" if "bleu" in metrics else ""
            self.log(f"eval step {self.state.step}: dev loss {metrics['loss']:.4f} on {metrics['loss_pairs']} pairs{bleu}")
        self.accelerator.wait_for_everyone()
        return metrics

    def _dev_loss(self, model) -> dict:
        indices = eval_indices(len(self.dev_set), self.cfg.eval_pairs)
        total, count = 0.0, 0
        for ids in self._eval_batches(indices):
            batch = self._to_device(self.dev_set.collate(ids, self.pad_id, self.start_id))
            labels = batch.pop("labels")
            logits = model(**batch, use_cache=False).logits
            total += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((labels != IGNORE_INDEX).sum())
        return {"loss": round(total / max(1, count), 5), "loss_pairs": len(indices)}

    def _dev_bleu(self, model) -> dict:
        """sacreBLEU of dev pairs decoded as ``restore infer --backend torch --no-faithful`` decodes them.

        The sources go through :class:`restore.infer.Restorer` with the torch backend: the same
        generation settings (no forced ``</s>``, ``<pad>``/``<s>`` suppressed), the same new-token
        limits and the same batching as inference, greedy, without faithfulness repair.
        """
        if not self.cfg.eval_bleu_pairs:
            return {}
        from sacrebleu.metrics import BLEU

        from restore.backends import TorchGenerator
        from restore.infer import Restorer

        indices = eval_indices(len(self.dev_set), self.cfg.eval_bleu_pairs)
        src, s_off, tgt, t_off = self.dev_set.src, self.dev_set.src_off, self.dev_set.tgt, self.dev_set.tgt_off
        decode = self.tokenizer.batch_decode
        sources = decode([src[s_off[i] : s_off[i + 1]] for i in indices], skip_special_tokens=True)
        refs = decode([tgt[t_off[i] : t_off[i + 1]] for i in indices], skip_special_tokens=True)
        kept = model.generation_config  # the generator installs restoration's own; the export keeps the model's
        try:
            device = self.accelerator.device
            generator = TorchGenerator(model, device, next(model.parameters()).dtype)
            restorer = Restorer(
                self.tokenizer, generator, self.config.chunking, device=device,
                max_positions=int(model.config.max_position_embeddings), faithful=False,
            )  # fmt: skip
            hyps = restorer.restore_chunks(sources)
        finally:
            model.generation_config = kept
        bleu = BLEU()
        score = bleu.corpus_score(hyps, [refs])
        return {"bleu": round(score.score, 3), "bleu_pairs": len(indices), "bleu_signature": str(bleu.get_signature())}

    def _eval_batches(self, indices: np.ndarray) -> list[np.ndarray]:
        lengths = round_up(np.maximum(np.maximum(self.dev_set.src_lens, self.dev_set.tgt_lens), 1), PAD_MULTIPLE)
        order = indices[np.argsort(lengths[indices], kind="stable")]
        return [order[r.start : r.stop] for r in budget_batches(lengths[order], self.cfg.batch_tokens)]

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
        self.log(
            f"restore train: {status}: {self.state.step}/{self.max_steps} steps, {self.state.tokens_seen:,} tokens seen, "
            f"{rate:,.0f} tokens/s, wall {_hms(self._wall())}, device {where} -> {self.out}"
        )
        return self.out

    def _export(self, completed: bool, metrics: dict | None) -> None:
        """Write the self-describing model directory (weights, tokenizer, restore.json)."""
        export_model(
            self.out, self.raw_model, self.tokenizer, self.config.chunking, self._training_info(completed, metrics),
            config_to_dict(self.config), save_dtype=self.cfg.save_dtype, max_shard_size=self.cfg.max_shard_size,
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
            "train_seconds": round(self.state.train_seconds, 1),
            "wall_seconds": round(self._wall(), 1),
            "stage_seconds": {name: round(seconds, 2) for name, seconds in self.stages.seconds.items()},
            "device": describe(self.accelerator.device),
            "processes": self.world,
            "precision": "bf16 autocast" if self.accelerator.mixed_precision == "bf16" else "fp32",
            "saved_dtype": self.cfg.save_dtype,
            "parameters": count_parameters(self.raw_model),
            "data": self.pairs,
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
        batches = token_batches(self.lengths, self.cfg.batch_tokens, self.cfg.seed, self.state.epoch)
        return len(batches) // (self.world * self.cfg.grad_accum)


# --- pieces ----------------------------------------------------------------------------------
class _Stages:
    """Seconds per named stage of a run, in order (``with stages("pairs"): ...``).

    >>> stages = _Stages()
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


class _Log:
    """Progress lines on stdout from the main process (stderr stays for errors and the bar)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()


def _check_output_dir(out: Path, config: ExperimentConfig, resume: bool) -> None:
    has_run = (out / CHECKPOINT).is_dir() or (out / RESTORE_JSON).is_file()
    if not resume:
        if has_run:
            raise RestoreError(f"{out} already holds a training run: pass --resume to continue it, or choose another train.output_dir")
        return
    if not (out / CHECKPOINT / "state.pt").is_file():
        raise RestoreError(
            f"{out}: no checkpoint to resume from (a completed run keeps none unless train.keep_checkpoint is true)"
        )
    try:
        saved = load_config_dict(yaml.safe_load((out / TRAIN_CONFIG).read_text(encoding="utf-8")), name=str(out / TRAIN_CONFIG))
    except (OSError, yaml.YAMLError) as e:
        raise RestoreError(f"{out / TRAIN_CONFIG}: cannot read the run's config ({e})") from None
    changed = config_differences(saved, config, ignore=RESUME_MAY_CHANGE)
    if changed:
        raise RestoreError(f"--resume: {changed[0]} differs from the run in {out} (resume with the same settings)")


def _describe_pairs(name: str, pairs: PairSet) -> str:
    s = pairs.stats
    origin = "cached" if s.get("cached") else f"prepared in {s['seconds']:.1f}s with {s['num_proc']} processes"
    return f"{name}: {s['pairs']:,} pairs from {s['articles']:,} articles ({s['dropped_units']:,} over-long units dropped; {origin})"


def _prepare_tokenizer(config: ExperimentConfig, out: Path, pairs: PairSet, resume: bool, accelerator, log: _Log):
    """The run's config and tokenizer in ``out``: trained (or copied from ``tokenizer.path``) by the
    main process, kept as they are when resuming; every rank loads the tokenizer from there."""
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            (out / TRAIN_CONFIG).write_text(dump_config(config), encoding="utf-8")
    with accelerator.main_process_first():
        if main and not resume:
            source = config.tokenizer.path or config.model.init_from
            if source:
                tokenizer = _load_tokenizer(source)
                log(f"tokenizer: {len(tokenizer):,} pieces from {source}")
            else:
                started = time.perf_counter()
                tokenizer, sampled = train_tokenizer_on_pairs(pairs, config.tokenizer, config.train.seed)
                log(f"tokenizer: {len(tokenizer):,} pieces from {sampled:,} pairs in {time.perf_counter() - started:.1f}s")
            tokenizer.save_pretrained(out)
        return _load_tokenizer(out)


def train_tokenizer_on_pairs(pairs: PairSet, config, seed: int):
    """Sentencepiece on the sources and targets of ``config.sample_pairs`` pairs drawn with ``seed``.

    Returns ``(tokenizer, pairs sampled)``; ``scripts/make_tokenizer.py`` uses it to train the
    shared tokenizer once (``tokenizer.path``), exactly as a run would.
    """
    sample = pairs.dataset.select(sample_indices(len(pairs), config.sample_pairs, seed))
    return train_tokenizer(list(sample["source"]) + list(sample["target"]), vocab_size=config.vocab_size), len(sample)


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise RestoreError(f"{path}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None


def _build_lexicon(config: ExperimentConfig, out: Path, pairs: PairSet, log: _Log) -> None:
    started = time.perf_counter()
    lex = config.lexicon
    lexicon = build_lexicon(pairs, lex.sample_pairs, config.train.seed + 1, lex.min_count, lex.max_entries, config.data.cache_dir, config.data.num_proc)
    lexicon.save(out)
    log(f"lexicon: {len(lexicon.forms):,} stems from {min(lex.sample_pairs, len(pairs)):,} targets in {time.perf_counter() - started:.1f}s")


def _create_model(config: ExperimentConfig, tokenizer):
    if config.model.init_from:
        model = load_pretrained(config.model.init_from, dtype=torch.float32)  # fp32 master weights
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise RestoreError(f"model.init_from {config.model.init_from}: its vocabulary is smaller than the tokenizer's")
        return model
    return build_model(config.model, vocab_size=len(tokenizer))


def _make_optimizer(model: torch.nn.Module, config: ExperimentConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; matrices (and embeddings) decay, biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.train.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(0.9, config.train.adam_beta2), eps=1e-8, **extra)


def _hms(seconds: float) -> str:
    """``3725.4`` -> ``'1:02:05'``.

    >>> _hms(3725.4), _hms(42)
    ('1:02:05', '0:00:42')
    """
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

"""Training: ``python -m restore train --config configs/X.yaml [section.key=value ...] [--resume]``.

One run, in order:

1. prepare (or load cached) train/dev pairs (:mod:`restore.data`, parallel ``datasets.map``);
2. the tokenizer: the one named by ``tokenizer.path`` (``configs/small.yaml`` uses the
   committed ``models/tokenizer-16k``), else trained on a sample of sources and targets;
   the lexicon from a sample of targets (counted in parallel, cached); both saved into
   ``train.output_dir`` (kept as they are when resuming);
3. encode the pairs to ids (:mod:`restore.token_ids`, in parallel, cached beside the pairs,
   keyed by the tokenizer's content); build the model (:mod:`restore.model`) or start from
   ``model.init_from``;
4. an ``accelerate`` loop (:mod:`restore.train_loop`): bf16 autocast on CUDA, fp32 on the
   CPU; length-grouped token-budget batches (lengths padded to multiples of 8, so shapes
   repeat), fixed per epoch by the seed; AdamW with warmup and linear/cosine decay; periodic
   dev loss and dev BLEU decoded exactly as ``restore infer`` decodes (greedy, no repair;
   :mod:`restore.train_eval`); checkpoints;
5. export a self-describing model directory: ``save_pretrained`` weights (safetensors,
   ``train.save_dtype``), tokenizer, ``lexicon.json.gz`` and ``restore.json``.

This module is the setup: :func:`setup` does steps 1-3 and returns a ready
:class:`~restore.train_loop.Trainer`, whose :meth:`~restore.train_loop.Trainer.run` does 4
and 5. With ``train.time_budget_minutes`` the step rate is measured after a warm-up and
``max_steps`` derived from it, so that the LR schedule ends when the budget does.

Multi-GPU needs no code change: ``torchrun --nproc-per-node N -m restore train ...``
or ``accelerate launch -m restore train ...``; every rank takes its share of each
step's batches. ``--resume`` continues from ``output_dir/checkpoint`` exactly: model,
optimizer, scheduler, step, data position (epoch + batch) and every RNG are restored,
so an interrupted run ends with the same weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from restore.attention import configure_attention
from restore.checkpoint import CHECKPOINT, RESTORE_JSON, load_checkpoint
from restore.config import ExperimentConfig, load_config_dict
from restore.config_record import config_differences, dump_config, portable_path
from restore.data import PairSet, build_lexicon, combine_pairs, corpus_selections, prepare_pairs
from restore.device import resolve_device
from restore.errors import RestoreError
from restore.lexicon import LEXICON_FILE
from restore.lineage import Shard, local_shard, read_lineage
from restore.mix import Mix, dev_shares
from restore.model import build_model, count_parameters, load_pretrained
from restore.progress import quiet_library_bars
from restore.token_ids import TokenizedPairs, encode_pairs, eval_indices
from restore.tokenizer import train_tokenizer
from restore.train_loop import LRSchedule, Log, Stages, Trainer, TrainState

TRAIN_CONFIG = "train_config.yaml"
# Settings that may differ between a run and its --resume without changing the weights.
RESUME_MAY_CHANGE = frozenset(
    {"train.stop_after_steps", "train.time_limit_minutes", "train.budget_reserve_minutes", "train.log_every", "train.save_every", "train.export_every", "train.keep_checkpoint",
     "train.device", "train.cpu_threads", "train.eval_every", "train.eval_pairs", "train.eval_bleu_pairs", "train.compile", "train.compile_backend",
     "data.num_proc", "data.cache_dir"}
)  # fmt: skip


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


def setup(config: ExperimentConfig, resume: bool = False) -> Trainer:
    """Everything a run needs, built in order (data, tokenizer, lexicon, ids, model, optimizer, state): a ready :class:`Trainer`.

    Each stage's seconds are kept (``Trainer.stages``, logged and written to ``restore.json``).
    """
    session_start = time.perf_counter()
    stages = Stages()
    out = Path(config.train.output_dir)
    _check_output_dir(out, config, resume)
    device = resolve_device(config.train.device)
    selections = corpus_selections(config.data)  # missing files fail here, before any work

    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if device.type == "cuda" else "no")
    log = Log(accelerator.is_main_process)
    log(f"attention: {configure_attention(accelerator.device)}")
    with stages("pairs"):
        corpora = _prepare_data(config, selections, accelerator, log)
        train_pairs = combine_pairs([train for train, _ in corpora], [s.weight for s in selections])
        dev_parts = [dev for _, dev in corpora if dev is not None]
        dev_pairs = combine_pairs(dev_parts, [1.0] * len(dev_parts)) if dev_parts else None
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
        train_set, dev_set, mix = _encode_corpora(config, selections, corpora, tokenizer, max_len)
    if not len(train_set):
        raise RestoreError(f"no training pair fits the model's {max_len} positions")
    log(
        f"model: {type(model).__name__}, {count_parameters(model) / 1e6:.2f}M parameters, vocab {len(tokenizer)}; "
        f"{len(train_set):,} train pairs encoded ({train_set.dropped} longer than {max_len} tokens dropped)"
    )
    optimizer = _make_optimizer(model, config, accelerator.device)
    step_kind = f"torch.compile ({config.train.compile_backend})" if config.train.compile else "eager"
    log(f"optimizer: AdamW ({'fused' if optimizer.defaults.get('fused') else 'foreach'}); training step: {step_kind}")
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
        stages=stages, session_start=session_start, mix=mix, lineage=_start_lineage(config),
        shards=[shard for selection in selections for shard in _train_shards(selection.train)],
    )  # fmt: skip


def _prepare_data(config: ExperimentConfig, selections, accelerator, log) -> list[tuple[PairSet, PairSet | None]]:
    """Train/dev pairs of each corpus: the main process prepares (or finds them cached), then the other ranks load them."""
    corpora = []
    with accelerator.main_process_first():
        for sel in selections:
            train = prepare_pairs(sel.train, config.chunking, config.data.cache_dir, config.data.num_proc)
            dev = prepare_pairs(sel.dev, config.chunking, config.data.cache_dir, config.data.num_proc) if sel.dev else None
            if not len(train):
                raise RestoreError(f"{', '.join(sel.train.describe())}: no training pairs (the articles have no sentences)")
            corpora.append((train, dev))
    for sel, (train, dev) in zip(selections, corpora):
        name = f"{sel.name} (weight {sel.weight:g}) " if len(selections) > 1 else ""
        log(name + _describe_pairs("train", train) + (f"; {_describe_pairs('dev', dev)}" if dev else ""))
    return corpora


def _encode_corpora(config: ExperimentConfig, selections, corpora, tokenizer, max_len: int):
    """The training set (every corpus's ids, concatenated), the dev set (each corpus's dev pairs in
    the proportions of the weights: :func:`restore.mix.dev_shares`) and the :class:`Mix`."""
    cache, procs = config.data.cache_dir, config.data.num_proc
    train = [encode_pairs(t, tokenizer, max_len, cache, procs) for t, _ in corpora]
    dev = [encode_pairs(d, tokenizer, max_len, cache, procs) if d is not None and len(d) else None for _, d in corpora]
    weights = [s.weight for s in selections]
    used = dev_shares([len(d) if d else 0 for d in dev], weights) if len(corpora) > 1 else [len(d) if d else 0 for d in dev]
    dev_parts = [d if n == len(d) else d.take(eval_indices(len(d), n)) for d, n in zip(dev, used) if d is not None and n]
    info = [
        {
            "train_files": [portable_path(f) for f in t.stats["files"]], "dev_files": [portable_path(f) for f in d.stats["files"]] if d else [],
            "articles": t.stats["articles"], "pairs": t.stats["pairs"], "dropped_units": t.stats["dropped_units"],
            "dev_articles": d.stats["articles"] if d else 0, "dev_pairs": len(d) if d else 0, "dev_pairs_used": n,
        }
        for (t, d), n in zip(corpora, used)
    ]  # fmt: skip
    mix = Mix(tuple(s.name for s in selections), tuple(weights), tuple(len(t) for t in train), tuple(info))
    return TokenizedPairs.concat(train), TokenizedPairs.concat(dev_parts) if dev_parts else None, mix


# --- the stages of setup ---------------------------------------------------------------------
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


def _prepare_tokenizer(config: ExperimentConfig, out: Path, pairs: PairSet, resume: bool, accelerator, log: Log):
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
    sample = pairs.dataset.select(pairs.sample(config.sample_pairs, seed))
    return train_tokenizer(list(sample["source"]) + list(sample["target"]), vocab_size=config.vocab_size), len(sample)


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise RestoreError(f"{path}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None


def _build_lexicon(config: ExperimentConfig, out: Path, pairs: PairSet, log: Log) -> None:
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


def _start_lineage(config: ExperimentConfig) -> list[dict]:
    """The lineage of ``model.init_from`` (``[]`` from scratch, or for a checkpoint that is not a restore model)."""
    return read_lineage(config.model.init_from, missing_ok=True) if config.model.init_from else []


def _train_shards(selection) -> list[Shard]:
    """The training files as lineage records (portable name, bytes, content hash); a hub dataset by its id."""
    if selection.hub:
        return [Shard("hub:" + "/".join(str(x) for x in selection.hub if x), None)]
    return [local_shard(f, portable_path(f)) for f in selection.files]


def _make_optimizer(model: torch.nn.Module, config: ExperimentConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; matrices (and embeddings) decay, biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.train.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(0.9, config.train.adam_beta2), eps=1e-8, **extra)

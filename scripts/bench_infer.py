"""Measure restoration speed: generated tokens/s of a naive loop vs the batching Restorer, side by side.

Every variant restores the same chunks (corrupted Wikipedia articles, chunked with the
model's chunk config) with the same model on the same device, and is timed after a short
warm-up on a few other chunks. Variants (``VARIANTS``, a list of named functions; add yours):

- ``naive``: ``model.generate`` one chunk at a time (what a first script would do);
- ``batched[bt=N]``: :class:`restore.infer.Restorer`: sorted by length, batched by a budget
  of N padded tokens (one row per ``--batch-tokens`` value: a sweep);
- ``static-cache[bt=N]``: the same with a static KV cache (CUDA: compiled decode step);
- ``compact[bt=N]`` (``--compact``): the same on :mod:`restore.decode`'s compact greedy decoder
  (on CUDA: explicitly on, as it is by default there; batched rows use ``generate``).

On the CPU (issue 9) the same Restorer batches also run on other engines:

- ``torch-qint8[bt=N]``: PyTorch with dynamic int8 quantization of the Linear layers;
- ``ct2-{fp32,int8}-stock[bt=N]``: CTranslate2 (converted with its own converter) as it
  comes: one translator on all cores (``intra_threads=cores``), one call per batch;
- ``ct2-{fp32,int8}[bt=N]``: :mod:`restore.backend_ct2` (one worker per core);
  ``ct2-int8[auto]`` with its own batch budget: what ``restore infer`` does on the CPU.

``--goal DIR`` (issue 15, GPU inference) runs instead, side by side in one run: the naive loop
(``--naive-chunks``), plain ``model.generate`` on batches of 256 chunks, the Restorer end to end
(documents in, texts out; greedy on the compact decoder, overlapped, batches from free GPU memory;
with faithfulness off, checked only, and on; and the same Restorer on ``generate``) on whole
articles of ``--goal-data`` holding ``--goal-chunks`` chunks, and the greedy identity of the
compact decoder (fp32 and the device's dtype) with the CPU torch path (``generate``, fp32) on
``--identity-chunks`` chunks of ``--data``. ``DIR/results.json`` and ``DIR/results.txt`` are
rewritten after every row. Each end-to-end row stops after ``--time-box`` seconds (random weights
fail every faithfulness check, so the full faithful row re-decodes every chunk with beams)::

    python scripts/bench_infer.py --goal runs/gpu-infer --random-config small --device cuda \
        --fixed-new-tokens 64 --warmup-chunks 2000 --time-box 40

``--rounds R`` runs every variant R times, interleaved, and keeps each one's best
(other jobs on the same cores make single runs noisy).

Threads are those ``restore infer`` uses: PyTorch rows run on
:func:`restore.device.default_cpu_threads` threads (one) unless ``OMP_NUM_THREADS`` (or
``MKL_NUM_THREADS``, ``TORCH_NUM_THREADS``) says otherwise, exactly as ``restore infer
--backend torch`` does; restore's CTranslate2 rows run one worker per core. Every row names
the engine it ran on (threads included); the run prints the machine, the model and its total
run time.

Usage::

    # a trained model directory
    python scripts/bench_infer.py --model models/restore-small --device cpu
    # a random-weights model of a given size (d_model 256, 6+4 layers) with a 16k tokenizer,
    # every chunk generating exactly 64 tokens so that all variants do the same work
    python scripts/bench_infer.py --random-config encoder_layers=6,decoder_layers=4 \\
        --tokenizer models/tokenizer-16k --fixed-new-tokens 64 --batch-tokens 1024 4096 16384

``--random-config`` takes ``key=value,...`` fields of :class:`restore.model.ModelConfig`
(unset ones keep their defaults) or a YAML config (``small`` = ``configs/small.yaml``; its
``model`` and ``chunking`` sections); several are measured side by side, each round running every
model in turn, and a last table gives each variant's rate per model and as a share of the first's
(``--random-config small medium --only ct2-int8[auto]``: the CPU fallback of a bigger model). ``--tokenizer DIR`` loads ``DIR/tokenizer.json`` or,
if there is none, trains a 16k tokenizer on the dev+test articles and saves it there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from restore.infer import NewTokens
from restore.textio import read_article_texts

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wiki"
DEFAULT_DATA = WIKI / "test.jsonl.xz"


@dataclass
class Bench:
    """Everything the variants share."""

    model: torch.nn.Module
    tokenizer: object
    chunking: object  # restore.chunking.ChunkConfig
    device: torch.device
    dtype: torch.dtype
    chunks: list[str]
    fixed_new_tokens: int | None
    num_beams: int
    max_positions: int


@dataclass
class Measurement:
    variant: str
    chunks: int
    generated_tokens: int
    seconds: float
    notes: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


# --- variants --------------------------------------------------------------------------------------
def run_naive(bench: Bench, chunks: list[str]) -> tuple[int, dict]:
    """``model.generate`` one chunk at a time, with the same generation settings as the Restorer."""
    from restore.backends import strip_generated
    from restore.infer import new_tokens_limit

    from restore.device import describe

    tokens = 0
    for chunk in chunks:
        inputs = bench.tokenizer([chunk], return_tensors="pt").to(bench.device)
        n = bench.fixed_new_tokens or new_tokens_limit(inputs["input_ids"].shape[1], bench.max_positions - 1)
        with torch.inference_mode():
            out = bench.model.generate(
                **inputs, max_new_tokens=n, min_new_tokens=n if bench.fixed_new_tokens else None,
                num_beams=bench.num_beams, do_sample=False,
            )  # fmt: skip
        tokens += len(strip_generated(out, bench.model.config.eos_token_id, n)[0])
    return tokens, {"engine": f"transformers generate, {describe(bench.device)}"}


def batched_variant(batch_tokens: int, static_cache: bool = False, compact: bool = False) -> Callable[[Bench, list[str]], tuple[int, dict]]:
    """The Restorer with a token budget (and optionally a static KV cache, or restore.decode's compact decoder)."""

    def run(bench: Bench, chunks: list[str]) -> tuple[int, dict]:
        from restore.backends import TorchGenerator

        generator = TorchGenerator(bench.model, bench.device, bench.dtype, static_cache=static_cache, compact=compact)
        restorer = _restorer(bench, generator, batch_tokens)
        restorer.restore_chunks(chunks)
        notes = {"batches": restorer.stats.batches, "oom_splits": restorer.stats.oom_splits, "engine": generator.describe()}
        return restorer.stats.generated_tokens, notes

    return run


# --- CPU engines (issue 9): torch int8, CTranslate2 as it comes, restore's CTranslate2 backend ------
_CPU_CACHE: dict[tuple[int, str], object] = {}  # per model: converted model dir and generators, built once per run (not timed)


def _bench_model_dir(bench: Bench) -> Path:
    """The bench model saved as a restore model directory (a temporary one), for converters."""
    import atexit
    import shutil
    import tempfile

    from restore.checkpoint import write_restore_json

    key = (id(bench.model), "model_dir")
    if key not in _CPU_CACHE:
        path = Path(tempfile.mkdtemp(prefix="bench-infer-model-"))
        atexit.register(shutil.rmtree, path, True)
        bench.model.save_pretrained(path)
        bench.tokenizer.save_pretrained(path)
        write_restore_json(path, bench.chunking, training={"note": "bench_infer.py copy"})
        _CPU_CACHE[key] = path
    return _CPU_CACHE[key]


def _cpu_generator(bench: Bench, kind: str):
    """A generator for ``kind`` (``torch-qint8``, ``ct2-int8-stock``, ``ct2-fp32``, ...), built once."""
    key = (id(bench.model), kind)
    if key not in _CPU_CACHE:
        if kind == "torch-qint8":
            import copy
            import warnings

            from restore.backends import TorchGenerator

            with warnings.catch_warnings():  # torch.ao.quantization is deprecated (still works in 2.13)
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(bench.model), {torch.nn.Linear}, dtype=torch.qint8)
            _CPU_CACHE[key] = TorchGenerator(model, bench.device, torch.float32)
        else:
            from restore.backend_ct2 import CTranslate2Generator, converted_model_dir
            from restore.device import available_cpus

            compute_type = "int8" if "int8" in kind else "float32"
            cfg = bench.model.config
            options = dict(eos_id=cfg.eos_token_id, never_ids=(cfg.pad_token_id, cfg.bos_token_id))
            if kind.endswith("-stock"):  # as CTranslate2 comes: one translator using every core, whole batches
                options.update(workers=1, threads_per_worker=available_cpus(), max_rows_per_worker=1 << 30)
            ct2_dir = converted_model_dir(_bench_model_dir(bench), compute_type)
            _CPU_CACHE[key] = CTranslate2Generator(ct2_dir, compute_type=compute_type, **options)
    return _CPU_CACHE[key]


def cpu_engine_variant(kind: str, batch_tokens: int | None) -> Callable[[Bench, list[str]], tuple[int, dict]]:
    """The Restorer on another CPU engine (``batch_tokens=None``: the generator's own budget)."""

    def run(bench: Bench, chunks: list[str]) -> tuple[int, dict]:
        generator = _cpu_generator(bench, kind)
        restorer = _restorer(bench, generator, batch_tokens)
        restorer.restore_chunks(chunks)
        engine = generator.describe() + (" + dynamic int8 Linear layers" if kind == "torch-qint8" else "")
        return restorer.stats.generated_tokens, {"batches": restorer.stats.batches, "batch_tokens": restorer.batch_tokens, "engine": engine}

    return run


def cpu_engine_variants(args) -> list[tuple[str, Callable]]:
    """torch int8 always; the CTranslate2 rows when the package is installed."""
    from restore.backend_choice import ctranslate2_available

    variants: list[tuple[str, Callable]] = [(f"torch-qint8[bt={bt}]", cpu_engine_variant("torch-qint8", bt)) for bt in args.batch_tokens]
    if not ctranslate2_available():
        print("bench_infer: ctranslate2 is not installed: no CTranslate2 rows", file=sys.stderr)
        return variants
    for kind in ("ct2-fp32-stock", "ct2-int8-stock", "ct2-fp32", "ct2-int8"):
        variants += [(f"{kind}[bt={bt}]", cpu_engine_variant(kind, bt)) for bt in args.batch_tokens]
    return variants + [("ct2-int8[auto]", cpu_engine_variant("ct2-int8", None))]


def variants_for(args) -> list[tuple[str, Callable[[Bench, list[str]], tuple[int, dict]]]]:
    """The named variants of this run, in table order (extend this list for new backends)."""
    variants: list[tuple[str, Callable]] = [("naive", run_naive)]
    variants += [(f"batched[bt={bt}]", batched_variant(bt)) for bt in args.batch_tokens]
    if args.static_cache:
        variants += [(f"static-cache[bt={bt}]", batched_variant(bt, static_cache=True)) for bt in args.batch_tokens]
    if args.compact:
        variants += [(f"compact[bt={bt}]", batched_variant(bt, compact=True)) for bt in args.batch_tokens]
    if getattr(args, "cpu_engines", False):
        variants += cpu_engine_variants(args)
    return [(name, fn) for name, fn in variants if not args.only or any(name.startswith(o) for o in args.only)]


def measure(bench: Bench, name: str, fn, warmup: list[str]) -> Measurement:
    if warmup:
        fn(bench, warmup)
    synchronize(bench.device)
    start = time.perf_counter()
    tokens, notes = fn(bench, bench.chunks)
    synchronize(bench.device)
    return Measurement(name, len(bench.chunks), tokens, time.perf_counter() - start, notes)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- setup -----------------------------------------------------------------------------------------
def _restorer(bench: Bench, generator, batch_tokens: int | None):
    """The Restorer the batched variants time, around ``generator`` (generation speed only;
    ``batch_tokens=None``: the generator's own budget)."""
    from restore.infer import Restorer

    new_tokens = None
    if bench.fixed_new_tokens:
        new_tokens = FixedNewTokens(cap=bench.max_positions - 1, tokens=min(bench.fixed_new_tokens, bench.max_positions - 1))
        generator = FixedLengthGenerator(generator, new_tokens.tokens)
    return Restorer(
        bench.tokenizer, generator, bench.chunking, device=bench.device, batch_tokens=batch_tokens,
        num_beams=bench.num_beams, max_positions=bench.max_positions, new_tokens=new_tokens,
        faithful=False,  # repair would re-decode: random models fail every check
    )  # fmt: skip


@dataclass(frozen=True)
class FixedNewTokens(NewTokens):
    """Every chunk may, and is expected to, generate exactly ``tokens`` (the same work in every variant)."""

    tokens: int = 64

    def limit(self, source_ids: int) -> int:
        return self.tokens

    def expected(self, source_ids: int) -> int:
        return self.tokens


class FixedLengthGenerator:
    """Wraps a generator so that every output has exactly ``tokens`` ids (``min_new_tokens``)."""

    def __init__(self, generator, tokens: int):
        self.generator = generator
        self.tokens = tokens
        self.batch_tokens = generator.batch_tokens

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **options):
        return self.generator.generate(batch, self.tokens, num_beams, num_return_sequences, min_new_tokens=self.tokens, **options)



def bench_chunks(path: Path, chunking, count: int, skip: int = 0) -> list[str]:
    """The first ``count`` chunks (after ``skip``) of the corrupted articles of ``path``."""
    from restore.chunking import chunk_text
    from restore.corrupt import corrupt

    chunks: list[str] = []
    for text in read_article_texts(path):
        chunks += chunk_text(corrupt(text), chunking)
        if len(chunks) >= skip + count:
            break
    return chunks[skip : skip + count]


def random_model_config(spec: str) -> tuple[object, object]:
    """(ModelConfig, ChunkConfig) from ``key=value,...`` or a YAML config name/path."""
    import yaml

    from restore.chunking import ChunkConfig
    from restore.model import ModelConfig

    candidate = Path(spec) if spec.endswith((".yaml", ".yml")) else REPO / "configs" / f"{spec}.yaml"
    if "=" not in spec and candidate.is_file():
        raw = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        model = {k: v for k, v in raw.get("model", {}).items() if k != "init_from"}
        return ModelConfig(**model), ChunkConfig(**raw.get("chunking", {}))
    fields = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        fields[key.strip()] = float(value) if key.strip() == "dropout" else int(value)
    return ModelConfig(**fields), ChunkConfig()


def bench_tokenizer(directory: Path, vocab_size: int):
    """Load ``directory``'s tokenizer, or train one on dev+test articles (original and corrupted) there."""
    from transformers import AutoTokenizer

    if (directory / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(directory)
    from restore.corrupt import corrupt
    from restore.tokenizer import train_tokenizer

    texts = read_article_texts(WIKI / "dev.jsonl.xz") + read_article_texts(WIKI / "test.jsonl.xz")
    start = time.perf_counter()
    tokenizer = train_tokenizer(texts + [corrupt(t) for t in texts], vocab_size=vocab_size)
    tokenizer.save_pretrained(directory)
    print(f"trained a {len(tokenizer)}-piece tokenizer in {time.perf_counter() - start:.0f} s -> {directory}", file=sys.stderr)
    return tokenizer


def load_bench_model(args, device: torch.device, dtype: torch.dtype, random_config: str | None = None):
    """(model, tokenizer, chunking, description) of ``random_config`` (one of ``--random-config``), else ``--model``."""
    from restore.backends import restore_generation_config
    from restore.model import build_model, count_parameters, load_pretrained

    if random_config is not None:
        model_config, chunking = random_model_config(random_config)
        if args.max_source_words:
            from restore.chunking import ChunkConfig

            chunking = ChunkConfig(args.max_source_words)
        tokenizer = bench_tokenizer(args.tokenizer, args.vocab_size)
        torch.manual_seed(0)
        model = build_model(model_config, len(tokenizer))
        name = f"random {model_config}"
    else:
        from transformers import AutoTokenizer

        from restore.checkpoint import default_model_dir, read_model_info

        info = read_model_info(args.model or default_model_dir())
        chunking, tokenizer = info.chunking, AutoTokenizer.from_pretrained(info.path)
        model = load_pretrained(info.path, dtype=dtype)
        name = str(info.path)
    model = model.to(device=device, dtype=dtype).eval()
    model.generation_config = restore_generation_config(model.config)  # the naive loop decodes like the Restorer
    return model, tokenizer, chunking, f"{name}, {count_parameters(model) / 1e6:.1f}M parameters"


# --- issue 15: the GPU goal, measured side by side in one run ----------------------------------------
GOAL = {"e2e_tokens_per_second": 300_000, "x_generate256": 5.0, "x_naive": 500.0, "identical_of": 200,
        "faithful_tokens_per_second": 150_000}  # issue 23: a trained model, natural lengths, faithfulness on


class GreedyCounter:
    """A generator wrapper that counts the greedy output tokens (beam calls of faithfulness repair are not counted)."""

    def __init__(self, inner):
        self.inner, self.greedy_tokens = inner, 0

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **options):
        out = self.inner.generate(batch, max_new_tokens, num_beams, num_return_sequences, **options)
        if num_beams == 1:
            self.greedy_tokens += sum(map(len, out))
        return out

    def __getattr__(self, name):  # batch_tokens, describe, ...
        return getattr(self.inner, name)


class GoalRun:
    """Rows of the goal table, written to ``out/results.{json,txt}`` after every step."""

    def __init__(self, out: Path, header: dict):
        self.out, self.header, self.rows, self.checks = out, header, [], {}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(f"  {row['variant']}: {row.get('tokens_per_second', 0):,.0f} tokens/s "
              f"({row.get('generated_tokens', 0)} tokens, {row.get('seconds', 0):.2f} s) {row.get('notes', '')}", file=sys.stderr)  # fmt: skip
        self.write()

    def write(self) -> None:
        from restore.textio import write_text_atomic

        payload = {**self.header, "results": self.rows, "goal": GOAL, "checks": self.checks}
        write_text_atomic(self.out / "results.json", json.dumps(payload, indent=2) + "\n")
        write_text_atomic(self.out / "results.txt", self.table())

    def table(self) -> str:
        rate = {r["variant"]: r.get("tokens_per_second") for r in self.rows}
        naive, plain = rate.get("naive"), rate.get("generate[batch=256]")
        lines = [f"{k}: {v}" for k, v in self.header.items()]
        lines.append("end-to-end rows count the greedy output tokens of the chunks restored (beam re-decoding not counted)")
        lines.append(f"{'variant':<42} {'chunks':>7} {'gen tokens':>11} {'seconds':>8} {'tokens/s':>11} {'x naive':>8} {'x gen256':>8}")
        for r in self.rows:
            if "tokens_per_second" not in r:
                continue
            t = r["tokens_per_second"]
            x_naive = f"{t / naive:.1f}" if naive else "-"
            x_plain = f"{t / plain:.2f}" if plain else "-"
            lines.append(f"{r['variant']:<42} {r['chunks']:>7} {r['generated_tokens']:>11} {r['seconds']:>8.2f} {t:>11,.0f} {x_naive:>8} {x_plain:>8}")
        lines += [f"{r['variant']}: {r['notes']}" for r in self.rows if r.get("notes")]
        lines += [f"check {k}: {v}" for k, v in self.checks.items()]
        return "\n".join(lines) + "\n"


def corpus_documents(path: Path, chunking, chunks: int, skip_chunks: int = 0) -> tuple[list[str], int]:
    """Corrupted articles of ``path`` (whole documents, as users hold them) holding >= ``chunks`` chunks."""
    from restore.corrupt import corrupt
    from restore.chunking import document_chunks

    documents, count, skipped = [], 0, 0
    for text in read_article_texts(path):
        document = corrupt(text)
        n = len(document_chunks(document, chunking)[0])
        if skipped < skip_chunks:
            skipped += n
            continue
        documents.append(document)
        count += n
        if count >= chunks:
            break
    return documents, count


def goal_restorer(bench: Bench, generator, *, faithful: bool | str, fixed: int | None, lexicon=None):
    """The product Restorer (overlap and check workers as on the device) around ``generator``;
    ``faithful="check"``: check only; ``lexicon``: the model's (repair's surface forms)."""
    from restore.faithful_check import check
    from restore.infer import Restorer

    class CheckOnly(Restorer):
        """Every chunk's output checked, nothing re-decoded or repaired: what a model that passes
        costs. Built with ``faithful=False``; the drafts (the one place every window's outputs pass,
        with overlap too) are checked and counted."""

        passed = 0

        def draft(self, chunks, num_beams=None):
            candidates = super().draft(chunks, num_beams)
            self.passed += sum(check(c[0], chunk) for c, chunk in zip(candidates, chunks))
            return candidates

    cls = CheckOnly if faithful == "check" else Restorer
    new_tokens = None
    if fixed:  # every output exactly `fixed` tokens: random weights rarely emit </s> (trained ones stop at ~2x the source)
        new_tokens = FixedNewTokens(cap=bench.max_positions - 1, tokens=min(fixed, bench.max_positions - 1))
        generator = FixedLengthGenerator(generator, new_tokens.tokens)
    return cls(
        bench.tokenizer, GreedyCounter(generator), bench.chunking, device=bench.device, num_beams=1,
        max_positions=bench.max_positions, new_tokens=new_tokens, faithful=bool(faithful) and faithful != "check", lexicon=lexicon,
    )  # fmt: skip


def time_restorer(restorer, documents: list[str], time_box: float, device) -> dict:
    """Documents in, texts out, until all are done or ``time_box`` seconds have passed (the check
    workers, if any, are started first: a command starts them while its model loads)."""
    pool_start = time.perf_counter()
    pool = restorer.check_pool() if restorer.faithful else None
    for future in pool.started if pool else ():
        future.result()
    pool_start = time.perf_counter() - pool_start
    synchronize(device)
    start = time.perf_counter()
    done = 0
    for _ in restorer.restore_many(documents):
        done += 1
        if time.perf_counter() - start > time_box:
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    s = restorer.stats
    greedy = restorer.generator.greedy_tokens
    notes = f"{done}/{len(documents)} documents, {s.batches} batches, batch_tokens {restorer.batch_tokens}"
    if hasattr(restorer, "passed"):
        notes += f"; faithful check only: {restorer.passed}/{s.chunks} passed"
    elif restorer.faithful:
        notes += f"; {s.faithful.summary()}; all generated tokens (beams too) {s.generated_tokens / seconds:,.0f}/s"
        if pool:
            notes += f"; {pool.workers} check workers (started in {pool_start:.1f} s, before the clock)"
        restorer.close()
    describe = getattr(restorer.generator, "describe", None)
    chunks = s.faithful.chunks if restorer.faithful else s.chunks
    return {"chunks": chunks, "generated_tokens": greedy, "seconds": seconds, "tokens_per_second": greedy / seconds,
            "documents": done, "engine": describe() if describe else "", "notes": notes}  # fmt: skip


def run_goal(args, bench: Bench, description: str) -> int:
    """The issue-15 run: naive, plain generate at batch 256, the Restorer end to end, greedy identity."""
    import copy

    from restore.backends import TorchGenerator, pad_batch, strip_generated
    from restore.checkpoint import default_model_dir, load_lexicon
    from restore.device import describe
    from restore.chunking import document_chunks

    fixed = bench.fixed_new_tokens
    device = bench.device
    run = GoalRun(args.goal, {
        "device": describe(device), "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "model": description, "dtype": str(bench.dtype), "data": str(args.goal_data), "new tokens": fixed or "up to 4x source + 16",
        "command": " ".join(sys.argv),
    })  # fmt: skip
    started = time.perf_counter()
    documents, total = corpus_documents(args.goal_data, bench.chunking, args.goal_chunks)
    warm_docs, _ = corpus_documents(args.goal_data, bench.chunking, args.warmup_chunks, skip_chunks=total + 1)
    chunks = [c for d in documents for c in document_chunks(d, bench.chunking)[0]]
    print(f"corpus: {len(documents)} documents, {total} chunks of {args.goal_data.name} "
          f"({time.perf_counter() - started:.1f} s to read and corrupt)", file=sys.stderr)  # fmt: skip

    # 1. naive: model.generate one chunk at a time
    naive = chunks[: args.naive_chunks]
    run_naive(bench, naive[:2])
    synchronize(device)
    t = time.perf_counter()
    tokens, _ = run_naive(bench, naive)
    synchronize(device)
    seconds = time.perf_counter() - t
    run.add({"variant": "naive", "chunks": len(naive), "generated_tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds})

    # 2. plain model.generate on batches of 256 chunks in corpus order (first batch untimed: warm-up)
    size = args.generate_batch
    plain = chunks[: size * (1 + args.generate_batches)]
    eos, n_plain = bench.model.config.eos_token_id, fixed or 64
    tokens, seconds = 0, 0.0
    for k in range(0, len(plain), size):
        ids, mask = pad_batch(bench.tokenizer(plain[k : k + size])["input_ids"], bench.model.config.pad_token_id)
        synchronize(device)
        t = time.perf_counter()
        with torch.inference_mode():
            out = bench.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=n_plain,
                                       min_new_tokens=n_plain, do_sample=False)  # fmt: skip
        n = sum(map(len, strip_generated(out, eos, n_plain)))
        synchronize(device)
        if k or len(plain) <= size:  # the first batch is the warm-up, unless it is the only one (tiny dry runs)
            tokens, seconds = tokens + n, seconds + time.perf_counter() - t
    run.add({"variant": "generate[batch=256]" if size == 256 else f"generate[batch={size}]", "chunks": max(len(plain) - size, len(plain) if len(plain) <= size else 0), "generated_tokens": tokens, "seconds": seconds,
             "tokens_per_second": tokens / seconds, "notes": f"{n_plain} new tokens each, batches in corpus order"})  # fmt: skip

    # 3. the Restorer end to end (documents in, texts out), warm-up documents first (graph captures)
    variants = [
        ("restorer[compact, no-faithful]", True, False),
        ("restorer[compact, faithful-check]", True, "check"),
        ("restorer[compact, faithful]", True, True),
        ("restorer[generate, no-faithful]", False, False),
    ]
    for name, compact, faithful in variants:
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        generator = TorchGenerator(bench.model, device, bench.dtype, compact=compact)
        if warm_docs:
            list(goal_restorer(bench, generator, faithful=False, fixed=fixed).restore_many(warm_docs))
        lexicon = None if args.random_config is not None else load_lexicon(args.model or default_model_dir())
        row = time_restorer(goal_restorer(bench, generator, faithful=faithful, fixed=fixed, lexicon=lexicon), documents, args.time_box, device)
        run.add({"variant": name, **row})

    # 4. greedy identity with the CPU torch path (generate, fp32) on the first test chunks, natural lengths
    test_chunks = bench_chunks(args.data, bench.chunking, args.identity_chunks)
    cpu_model = copy.deepcopy(bench.model).to(device="cpu", dtype=torch.float32)
    reference = goal_restorer(bench, TorchGenerator(cpu_model, torch.device("cpu"), torch.float32, compact=False),
                              faithful=False, fixed=None)  # fmt: skip
    reference.device = torch.device("cpu")
    t = time.perf_counter()
    expected = reference.restore_chunks(test_chunks)
    run.checks["cpu reference"] = f"{len(test_chunks)} test chunks, {reference.stats.generated_tokens} tokens in {time.perf_counter() - t:.1f} s"
    for dtype in dict.fromkeys([torch.float32, bench.dtype]):
        model = bench.model if dtype == bench.dtype else copy.deepcopy(bench.model).to(dtype=dtype)
        generator = TorchGenerator(model, device, dtype, compact=True, buckets=device.type == "cuda")
        outputs = goal_restorer(bench, generator, faithful=False, fixed=None).restore_chunks(test_chunks)
        same = sum(a == b for a, b in zip(outputs, expected))
        run.checks[f"identical greedy outputs, compact {str(dtype).removeprefix('torch.')} on {device.type} vs CPU generate fp32"] = f"{same}/{len(test_chunks)}"
        run.write()
    rate = {r["variant"].split("[batch=")[0]: r.get("tokens_per_second") for r in run.rows}
    if rate.get("restorer[compact, faithful]") and args.random_config is None and not fixed:
        e2e = rate["restorer[compact, faithful]"]
        goal = GOAL["faithful_tokens_per_second"]
        run.checks[f"restorer[compact, faithful], trained model, natural lengths: tokens/s >= {goal:,}"] = f"{e2e:,.0f}: {'yes' if e2e >= goal else 'no'}"
    for row in ("restorer[compact, faithful]", "restorer[compact, faithful-check]", "restorer[compact, no-faithful]"):
        if rate.get(row):
            e2e = rate[row]
            run.checks[f"{row}: tokens/s >= 300,000"] = f"{e2e:,.0f}: {'yes' if e2e >= GOAL['e2e_tokens_per_second'] else 'no'}"
            run.checks[f"{row}: x generate[batch=256] >= 5"] = f"{e2e / rate['generate']:.2f}"
            run.checks[f"{row}: x naive >= 500"] = f"{e2e / rate['naive']:.1f}"
    run.checks["total wall seconds"] = f"{time.perf_counter() - started:.0f}"
    run.write()
    print(run.table())
    return 0


# --- main --------------------------------------------------------------------------------------------
def print_table(results: list[Measurement], out=sys.stdout) -> None:
    base = next((r.tokens_per_second for r in results if r.variant == "naive"), None)
    # The reference engine of issue 9: CTranslate2 int8 as it comes (at the first budget measured).
    ct2 = next((r.tokens_per_second for r in results if r.variant.startswith("ct2-int8-stock")), None)
    print(f"{'variant':<24} {'chunks':>7} {'gen tokens':>11} {'seconds':>9} {'tokens/s':>10} {'x naive':>8}"
          + (f" {'x ct2-int8':>10}" if ct2 else "") + "  engine", file=out)  # fmt: skip
    for r in results:
        ratio = f"{r.tokens_per_second / base:.2f}" if base else "-"
        vs_ct2 = f" {r.tokens_per_second / ct2:>10.2f}" if ct2 else ""
        print(f"{r.variant:<24} {r.chunks:>7} {r.generated_tokens:>11} {r.seconds:>9.2f} {r.tokens_per_second:>10.1f} {ratio:>8}{vs_ct2}"
              f"  {r.notes.get('engine', '')}", file=out)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="trained model directory (default: the shipped model)")
    p.add_argument("--random-config", nargs="+", default=None,
                   help="random weights: 'key=value,...' ModelConfig fields or a YAML config; several: measured side by side, "
                        "rounds interleaved")  # fmt: skip
    p.add_argument("--tokenizer", type=Path, default=REPO / "models" / "tokenizer-16k", help="tokenizer dir (random models; default: the committed 16k one)")
    p.add_argument("--vocab-size", type=int, default=16000, help="vocabulary when training the bench tokenizer")
    p.add_argument("--max-source-words", type=int, default=None, help="chunk size for random models (default: config's or 48)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="articles .jsonl(.xz) with a 'text' field")
    p.add_argument("--chunks", type=int, default=200, help="chunks every variant restores")
    p.add_argument("--warmup-chunks", type=int, default=8, help="chunks (others) each variant runs first, untimed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-tokens", type=int, nargs="+", default=[4096], help="token budgets to sweep")
    p.add_argument("--static-cache", action="store_true", help="add static-cache variants")
    p.add_argument("--compact", action="store_true", help="add variants on restore.decode's compact decoder")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--fixed-new-tokens", type=int, default=None, help="every chunk generates exactly N tokens")
    p.add_argument("--only", nargs="*", default=None, help="run only variants whose names start with these")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--rounds", type=int, default=1, help="run every variant this many times (interleaved), keep the best")
    p.add_argument("--goal", type=Path, default=None,
                   help="the issue-15 run instead of the sweep: naive, generate at batch 256, the Restorer end to end, "
                        "greedy identity; results.json/.txt written to this folder as it goes")  # fmt: skip
    p.add_argument("--goal-data", type=Path, default=WIKI / "train-10.jsonl.xz", help="--goal: articles to restore")
    p.add_argument("--goal-chunks", type=int, default=10_000, help="--goal: chunks (whole documents) restored end to end")
    p.add_argument("--naive-chunks", type=int, default=64, help="--goal: chunks of the naive loop")
    p.add_argument("--generate-batches", type=int, default=4, help="--goal: timed batches of plain generate")
    p.add_argument("--generate-batch", type=int, default=256, help="--goal: rows of plain generate's batches")
    p.add_argument("--identity-chunks", type=int, default=200, help="--goal: test chunks compared with the CPU torch path")
    p.add_argument("--time-box", type=float, default=60.0, help="--goal: most seconds of each end-to-end row")
    p.add_argument("--no-cpu-engines", dest="cpu_engines", action="store_false",
                   help="on the CPU, skip the torch-qint8 and CTranslate2 rows")  # fmt: skip
    args = p.parse_args(argv)
    args.cpu_engines = args.cpu_engines and args.device != "cuda" and not (args.device == "auto" and torch.cuda.is_available())
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    from restore.cpu import machine_line
    from restore.device import default_cpu_threads, describe, dtype_for, resolve_device, threads_chosen_by_user
    from restore.errors import RestoreError

    started = time.perf_counter()
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        device = resolve_device(args.device)
        if device.type == "cpu" and not threads_chosen_by_user():
            torch.set_num_threads(default_cpu_threads())  # as restore infer --backend torch runs (OMP_NUM_THREADS to choose)
        dtype = dtype_for(device)
        loaded = [load_bench_model(args, device, dtype, spec) for spec in args.random_config or [None]]
    except RestoreError as e:
        print(f"bench_infer: error: {e}", file=sys.stderr)
        return 1
    print(machine_line())
    if args.goal:
        model, tokenizer, chunking, description = loaded[0]
        bench = Bench(model, tokenizer, chunking, device, dtype, [], args.fixed_new_tokens, 1, model.config.max_position_embeddings)
        print(f"model: {description}, {dtype}; device: {describe(device)}", file=sys.stderr)
        code = run_goal(args, bench, description)
        print(f"bench_infer: total run time {time.perf_counter() - started:.0f} s")
        return code
    benches = []  # (description, bench, warm-up chunks), one per model: measured side by side
    for model, tokenizer, chunking, description in loaded:
        chunks = bench_chunks(args.data, chunking, args.chunks + args.warmup_chunks)
        warmup, chunks = chunks[: args.warmup_chunks], chunks[args.warmup_chunks :]
        bench = Bench(model, tokenizer, chunking, device, dtype, chunks, args.fixed_new_tokens, args.num_beams,
                      model.config.max_position_embeddings)  # fmt: skip
        source_ids = sum(len(ids) for ids in tokenizer(chunks)["input_ids"])
        print(f"model: {description}, {dtype}")
        print(f"device: {describe(device)}; {len(chunks)} chunks (max_source_words={chunking.max_source_words}, "
              f"{source_ids / len(chunks):.1f} source ids/chunk of the {tokenizer_name(tokenizer)} tokenizer) of {args.data.name}; "
              f"new tokens: {args.fixed_new_tokens or 'up to 4x source + 16'}; beams: {args.num_beams}")
        benches.append((description, bench, warmup))
    best: dict[tuple[int, str], Measurement] = {}
    for round_ in range(args.rounds):
        for m, (description, bench, warmup) in enumerate(benches):  # interleaved: the machine's load hits every model alike
            for name, fn in variants_for(args):
                result = measure(bench, name, fn, warmup)
                if (m, name) not in best or result.tokens_per_second > best[m, name].tokens_per_second:
                    best[m, name] = result
                label = f"model {m + 1} " if len(benches) > 1 else ""
                print(f"  {label}{name}: {result.tokens_per_second:.1f} tokens/s (round {round_ + 1})", file=sys.stderr)
    tables = [[r for (m, _), r in best.items() if m == i] for i in range(len(benches))]
    for i, results in enumerate(tables):
        if len(benches) > 1:
            print(f"model {i + 1}: {benches[i][0]}")
        print_table(results)
    if len(benches) > 1:
        print_side_by_side([b[0] for b in benches], tables)
    if args.json:
        payload = {"device": describe(device), "model": benches[0][0], "args": {k: str(v) for k, v in vars(args).items()},
                   "results": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in tables[0]]}  # fmt: skip
        if len(benches) > 1:
            payload["models"] = [{"model": b[0], "results": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in t]}
                                 for b, t in zip(benches, tables)]  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"bench_infer: total run time {time.perf_counter() - started:.0f} s")
    return 0


def print_side_by_side(models: list[str], tables: list[list[Measurement]], out=sys.stdout) -> None:
    """Each variant's tokens/s for every model, and as a share of the first model's (measured in the same rounds)."""
    print("side by side (tokens/s; x the first model):", file=out)
    for i, model in enumerate(models):
        print(f"  model {i + 1}: {model}", file=out)
    for first in tables[0]:
        rates = [next((r.tokens_per_second for r in t if r.variant == first.variant), 0.0) for t in tables]
        cells = "  ".join(f"model {i + 1} {rate:,.1f} (x{rate / first.tokens_per_second:.2f})" for i, rate in enumerate(rates))
        print(f"  {first.variant:<24} {cells}", file=out)


def tokenizer_name(tokenizer) -> str:
    """Where the tokenizer came from (the source ids per chunk depend on it), e.g. ``models/tokenizer-16k``."""
    path = Path(getattr(tokenizer, "name_or_path", "") or "")
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path) or f"{len(tokenizer)}-piece"


if __name__ == "__main__":
    raise SystemExit(main())

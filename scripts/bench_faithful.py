"""What faithfulness costs, and where its time goes (issue 23): the Restorer with and without it.

Every workload is restored as the command line does it, with the same model, engine and options,
side by side in one process (the model loaded once): faithfulness off, then on with each
``--check-workers`` setting (``auto``: the rule of :func:`restore.faithful_window.check_workers`;
``0``: checks in this process), ``--rounds`` times interleaved (the best run of each kept; the
first round also warms up the device). Workloads:

- ``--data test``: the eval pairs, each pair a document, as ``restore eval --data test`` runs them;
- ``--input FILE``: a text file, one document, as ``restore infer FILE`` runs it.

Each ``--quality`` preset (default: ``best`` and ``fast``) is measured off and on. Each faithful
run's wall time is split into stages, measured where they happen: the first decode (greedy or the
beam search of the preset; with overlap, on CUDA, in a worker thread beside the rest), the checks of every chunk
and of the lines that passed, the beam re-decode of the failing chunks, settling them (the first
passing hypothesis or repair, and their lines' checks), the beam re-decode of failing junctions,
finishing those lines, and the rest (chunking, tokenizing, windows, assembly). ``--profile FILE``
also runs the first workload's faithful row under cProfile (this thread only) and prints its top
functions. Results go to ``OUT/results.json`` and ``OUT/results.txt`` after every row::

    python scripts/bench_faithful.py --out runs/bench-faithful --data test --input examples/seed.txt
    python scripts/bench_faithful.py --out runs/bench-faithful --device cuda --backend torch --check-workers auto 0

The ratio faithful / not faithful of one row pair is the figure to compare between machines.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("first decode", "checks", "beam re-decode (chunks)", "settle (choose, repair)",
          "beam re-decode (junctions)", "finish lines", "other")  # fmt: skip


class TimedGenerator:
    """A generator wrapper that adds up the seconds of its calls (first decodes and re-decodes alike:
    :class:`StageClock` times the re-decodes, the rest is the first decode)."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **options):
        start = time.perf_counter()
        try:
            return self.inner.generate(batch, max_new_tokens, num_beams, num_return_sequences, **options)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name):  # batch_tokens, describe, workers, ...
        return getattr(self.inner, name)


class StageClock:
    """Seconds of each step of restore.faithful_window and of each of its two beam calls."""

    def __init__(self):
        import restore.faithful_window as window

        self.window, self.seconds = window, defaultdict(float)
        self.run, self.faithful_documents = window._run, window.faithful_documents
        self.settled = False

    def __enter__(self):
        clock = self

        def timed_run(step, *args, **kwargs):
            start = time.perf_counter()
            try:
                return clock.run(step, *args, **kwargs)
            finally:
                clock.seconds[step.__name__] += time.perf_counter() - start
                clock.settled = clock.settled or step.__name__ == "_settle_step"

        def timed_documents(plans, outputs, redecode=None, *args, **kwargs):
            clock.settled = False  # re-decodes before the failing chunks are settled are theirs, after it the junctions'

            def timed_redecode(sources):
                start = time.perf_counter()
                try:
                    return redecode(sources)
                finally:
                    name = "beam re-decode (junctions)" if clock.settled else "beam re-decode (chunks)"
                    clock.seconds[name] += time.perf_counter() - start

            return clock.faithful_documents(plans, outputs, timed_redecode if redecode else None, *args, **kwargs)

        self.window._run = timed_run
        self.window.faithful_documents = timed_documents
        import restore.infer

        restore.infer.faithful_documents = timed_documents
        return self

    def __exit__(self, *exc):
        import restore.infer

        self.window._run, self.window.faithful_documents = self.run, self.faithful_documents
        restore.infer.faithful_documents = self.faithful_documents

    def stages(self, total: float, generating: float) -> dict[str, float]:
        """``generating``: all seconds on the generator; less the re-decodes, the first decode."""
        s = self.seconds
        named = {
            "first decode": generating - s["beam re-decode (chunks)"] - s["beam re-decode (junctions)"],
            "checks": s["_check_step"],
            "beam re-decode (chunks)": s["beam re-decode (chunks)"],
            "settle (choose, repair)": s["_settle_step"],
            "beam re-decode (junctions)": s["beam re-decode (junctions)"],
            "finish lines": s["_finish_step"],
        }
        named["other"] = total - sum(named.values())
        return named


def workloads(args, chunking) -> list[tuple[str, list[str]]]:
    from restore.evaluate import load_eval_data
    from restore.textio import read_text

    loads = []
    if args.data:
        data = load_eval_data(args.data, args.limit, chunking)
        loads.append((f"eval {args.data} ({len(data.sources)} pairs)", list(data.sources)))
    for path in args.input:
        text = read_text(str(path))
        loads.append((f"infer {path.name} ({len(text.split())} words)", [text]))
    return loads


def variant(base, generator, *, quality: str, faithful: bool, check_workers: int | None):
    """A Restorer like ``base`` (same tokenizer, model, options) around ``generator``, decoding
    with the ``--quality`` preset ``quality``."""
    from restore.infer import Restorer
    from restore.settings import decoding_for

    decoding = decoding_for(quality)
    return Restorer(
        base.tokenizer, generator, base.chunking, device=base.device, batch_tokens=base.batch_tokens,
        num_beams=decoding.num_beams, length_penalty=decoding.length_penalty, max_positions=base.max_source_ids,
        lexicon=base.surface_forms.lexicon, faithful=faithful, check_workers=check_workers,
    )  # fmt: skip


def cold_start(restorer) -> float:
    """Every run as in a fresh process: empty caches (corruption, surface forms) and, if the run
    has check workers, a new pool (cold caches too); returns the seconds the pool took to start."""
    from restore.corrupt import corrupt_sentence_cached, normalize_token, tokenize_words_cached
    from restore.faithful_check import roundtrip
    from restore.surface_forms import SurfaceForms

    for cached in (roundtrip, corrupt_sentence_cached, tokenize_words_cached, normalize_token):
        cached.cache_clear()
    restorer.surface_forms = SurfaceForms(restorer.surface_forms.lexicon)
    restorer.close()
    start = time.perf_counter()
    pool = restorer.check_pool()
    for future in pool.started if pool else ():
        future.result()
    return time.perf_counter() - start


def time_run(restorer, documents: list[str], profile: Path | None = None) -> tuple[float, dict, str]:
    """Restore ``documents``; seconds, stage seconds and the faithful summary."""
    generator = restorer.generator
    generator.seconds = 0.0
    restorer.stats = type(restorer.stats)()
    pool_start = cold_start(restorer)
    clock = StageClock()
    profiler = cProfile.Profile() if profile else None
    with clock:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        outputs = list(restorer.restore_many(documents))
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - start
    if profiler:
        profiler.dump_stats(profile)
    assert len(outputs) == len(documents)
    stages = clock.stages(seconds, generator.seconds) if restorer.faithful else {}
    s = restorer.stats
    summary = s.faithful.summary() if restorer.faithful else "faithful: off"
    pool = f" (pool of {restorer._pool.workers} started in {pool_start:.2f} s before)" if restorer._pool else ""
    return seconds, stages, f"{s.chunks} chunks, {s.redecoded} re-decoded, {s.generated_tokens} tokens; {summary}{pool}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and results.txt")
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "ctranslate2"))
    p.add_argument("--compute-type", default="auto")
    p.add_argument("--data", default="test", help="eval pairs (a split name or file); '' for none")
    p.add_argument("--limit", type=int, default=None, help="the first N pairs only")
    p.add_argument("--input", type=Path, nargs="*", default=[], help="text files restored as restore infer does")
    p.add_argument("--check-workers", nargs="+", default=["auto"], help="'auto' and/or worker counts (0: inline)")
    p.add_argument("--quality", nargs="+", default=["best", "fast"], choices=("best", "fast"),
                   help="decoding presets, each measured off and on (default: both)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best of each row is kept")
    p.add_argument("--profile", type=Path, default=None, help="cProfile the first workload's first faithful row to FILE")
    args = p.parse_args(argv)

    from restore.checkpoint import default_model_dir, read_model_info
    from restore.cpu import machine_line
    from restore.device import available_cpus, prepare_model_run
    from restore.faithful_window import check_workers, generator_cores
    from restore.infer import Restorer
    from restore.textio import write_text_atomic

    started = time.perf_counter()
    model = args.model or str(default_model_dir())
    prepare_model_run()
    base = Restorer.from_pretrained(model, device=args.device, backend=args.backend, compute_type=args.compute_type, faithful=False)
    generator = TimedGenerator(base.generator)
    describe = getattr(base.generator, "describe", lambda: type(base.generator).__name__)()
    auto = check_workers(available_cpus(), generator_cores(base.generator, base.device.type))
    settings = [None if w == "auto" else int(w) for w in args.check_workers]
    loads = workloads(args, read_model_info(model).chunking)
    header = {"machine": machine_line().removeprefix("machine: "), "model": model, "engine": describe, "cpus": available_cpus(),
              "check workers (auto)": auto, "command": " ".join(sys.argv)}  # fmt: skip
    print("\n".join(f"{k}: {v}" for k, v in header.items()), file=sys.stderr)
    rows: dict[tuple[str, str, str], dict] = {}
    restorers = {}
    for quality in args.quality:
        restorers[quality, "off"] = variant(base, generator, quality=quality, faithful=False, check_workers=0)
        for w in settings:
            name = f"on, {'auto = ' + str(auto) if w is None else w} check workers"
            restorers[quality, name] = variant(base, generator, quality=quality, faithful=True, check_workers=w)

    def write() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {**header, "rows": list(rows.values())}
        write_text_atomic(args.out / "results.json", json.dumps(payload, indent=2) + "\n")
        write_text_atomic(args.out / "results.txt", table(header, list(rows.values())))

    if args.profile and loads:  # an extra run, before the timed ones
        load, documents = loads[0]
        (quality, name), restorer = next((n, r) for n, r in restorers.items() if r.faithful)
        seconds, _, summary = time_run(restorer, documents, args.profile)
        header["profile"] = f"{load}, --quality {quality}, faithful {name}: {seconds:.2f} s under cProfile (this thread), {args.profile}"
        print_profile(args.profile)
    for round_ in range(args.rounds):
        for load, documents in loads:
            for (quality, name), restorer in restorers.items():
                seconds, stages, summary = time_run(restorer, documents)
                print(f"  round {round_ + 1}, {load}, --quality {quality}, faithful {name}: {seconds:.2f} s; {summary}", file=sys.stderr)
                key = (load, quality, name)
                if key not in rows or seconds < rows[key]["seconds"]:
                    rows[key] = {"workload": load, "quality": quality, "faithful": name, "seconds": seconds, "stages": stages, "summary": summary}
                write()
    for restorer in restorers.values():
        restorer.close()
    header["total wall seconds"] = f"{time.perf_counter() - started:.0f}"
    write()
    print(table(header, list(rows.values())))
    return 0


def table(header: dict, rows: list[dict]) -> str:
    lines = [f"{k}: {v}" for k, v in header.items()]
    off = {(r["workload"], r["quality"]): r["seconds"] for r in rows if r["faithful"] == "off"}
    lines.append(f"{'workload':<36} {'quality':<8} {'faithful':<28} {'seconds':>8} {'x off':>6}")
    for r in rows:
        base = off.get((r["workload"], r["quality"]))
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        lines.append(f"{r['workload']:<36} {r['quality']:<8} {r['faithful']:<28} {r['seconds']:>8.2f} {ratio:>6}")
    lines.append("stages of the faithful rows, seconds (the first decode overlaps the rest where overlap is on):")
    lines.append(f"{'workload, quality, faithful':<56} " + " ".join(f"{s[:12]:>12}" for s in STAGES))
    for r in rows:
        if r["stages"]:
            label = f"{r['workload']}, {r['quality']}, {r['faithful']}"
            lines.append(f"{label[:56]:<56} " + " ".join(f"{r['stages'][s]:>12.2f}" for s in STAGES))
    lines += [f"{r['workload']}, --quality {r['quality']}, faithful {r['faithful']}: {r['summary']}" for r in rows]
    return "\n".join(lines) + "\n"


def print_profile(path: Path, top: int = 30) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue(), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())

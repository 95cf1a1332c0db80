"""How close is CTranslate2 int8 to fp32, per CPU instruction set? (issue 13: choosing ``--backend auto``)

For every instruction-set setting (:data:`SETTINGS`: the CPU as it is, and limits set with
``ONEDNN_MAX_CPU_ISA`` / ``MKL_ENABLE_INSTRUCTIONS`` / ``CT2_FORCE_CPU_ISA``, each in a fresh
process, since the libraries read them once) and every model, this compares each CTranslate2
compute type with PyTorch fp32 greedy decoding on the same chunks:

- ``dlogp``: mean |log p(torch) - log p(ct2)| per token, teacher-forced on torch's outputs;
- ``same``: share of chunk outputs identical to torch fp32's;
- ``BLEU`` (``--bleu-pairs N``, for a trained model given with ``--models``): document BLEU on
  the first N fixed ``test`` pairs, no repair, next to torch fp32's;
- ``tok/s``: generated tokens per second of that engine on those chunks.

Models: ``varied``/``calmer`` (tiny random BARTs with large weights, as in
``tests/test_backend_ct2.py``: their decisions hang on small logit gaps), ``random-small``
(random weights shaped like ``configs/small.yaml``) and ``trained-tiny`` (``configs/tiny.yaml``
trained for ``--train-steps`` on 400 articles: peaked, trained-like distributions, though far too
small to restore text). Every model generates greedily up to ``--new-tokens`` per chunk.

    python scripts/bench_int8.py --workdir /tmp/bench-int8 --out /tmp/bench-int8/results.json
    # the shipped model, with BLEU on the fixed test pairs (the 0.3 BLEU criterion):
    python scripts/bench_int8.py --models models/restore-small --bleu-pairs 2264 --settings native,all\<=AVX2

It also prints what :func:`restore.cpu.int8_support` concludes in each setting, so the rule
can be checked against the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPUTE_TYPES = ("float32", "int8_float32", "int8")
# name -> environment limits (each run in its own process: the libraries read these once).
SETTINGS = {
    "native": {},
    "oneDNN<=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN<=AVX512_CORE (no VNNI)": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "CT2<=AVX2": {"CT2_FORCE_CPU_ISA": "AVX2"},
    "all<=AVX2": {"CT2_FORCE_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL": {"CT2_USE_MKL": "1"},
    "MKL<=AVX2": {"CT2_USE_MKL": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
MODELS = ("varied", "calmer", "random-small", "trained-tiny")


# --- building the models (parent process) ------------------------------------------------------------
def build_models(workdir: Path, train_steps: int) -> None:
    import torch

    from restore.checkpoint import write_restore_json
    from restore.chunking import ChunkConfig
    from restore.corrupt import corrupt
    from restore.model import ModelConfig, build_model, load_pretrained
    from restore.textio import read_article_texts
    from restore.tokenizer import train_tokenizer

    texts = read_article_texts(REPO.parent / "shared" / "data" / "wiki" / "dev.jsonl.xz", limit=60)
    tokenizer = None
    shapes = {
        "varied": (ModelConfig(d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64, dropout=0.0), 0.3, 5.0),
        "calmer": (ModelConfig(d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64, dropout=0.0), 0.15, 3.0),
        "random-small": (ModelConfig(d_model=256, encoder_layers=9, decoder_layers=3, attention_heads=4, ffn_dim=1024, dropout=0.0), None, 0.0),
    }
    for name, (config, std, eos_bias) in shapes.items():
        out = workdir / name
        if (out / "restore.json").is_file():
            continue
        if tokenizer is None:
            tokenizer = train_tokenizer(texts + [corrupt(t) for t in texts], vocab_size=4000)
        torch.manual_seed(0)
        model = build_model(config, vocab_size=len(tokenizer))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if std is not None:
                for parameter in model.parameters():
                    if parameter.dim() >= 2:
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
            model.final_logits_bias[0, model.config.eos_token_id] = eos_bias
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_restore_json(out, ChunkConfig(), training={"note": f"random weights (std {std or 'default init'})"})
        load_pretrained(out)  # check it loads
    trained = workdir / "trained-tiny"
    if not (trained / "restore.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "restore", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
             f"train.output_dir={trained}", f"train.max_steps={train_steps}", f"data.cache_dir={workdir / 'cache'}",
             f"data.train_files=[{REPO.parent / 'shared' / 'data' / 'wiki' / 'train-00.jsonl.xz'}]", "data.max_train_articles=400", "data.dev_holdout=8", "train.log_every=100"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip


def describe_model(workdir: Path, name: str) -> str:
    """What a model of the table is (its restore.json note or training record) and a hash of its
    weights: two runs compare only where the models are the same."""
    import hashlib

    from restore.checkpoint import read_model_info

    path = Path(name) if "/" in name else workdir / name
    info = read_model_info(path)
    weights = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.glob("model*.safetensors")))).hexdigest()[:12]
    training = info.training
    about = training.get("note") or f"trained {training.get('steps')} steps on {training.get('data', {}).get('train', {}).get('files')}"
    return f"{path}: {about}; weights sha256 {weights}"


# --- measuring (one worker process per setting) ------------------------------------------------------
def measure_setting(workdir: Path, models: list[str], chunks: int, new_tokens: int, bleu_pairs: int) -> dict:
    import torch

    from restore.backend_ct2 import load_ctranslate2_generator
    from restore.backends import load_torch_generator
    from restore.cpu import int8_support
    from restore.evaluate import load_eval_data, score_outputs
    from restore.infer import Restorer
    from restore.model import load_pretrained

    torch.set_num_threads(1)
    support = int8_support()
    data = load_eval_data("test-300")
    results = []
    for name in models:
        path = Path(name) if "/" in name else workdir / name
        reference = load_torch_generator(path, torch.device("cpu"), torch.float32)
        inputs = Restorer.from_pretrained(path, device="cpu", backend="torch", faithful=False).encode(data.sources[:chunks])
        expected = reference.generate(inputs, new_tokens)
        model = load_pretrained(path).eval()
        eos = model.config.eos_token_id
        torch_logp = []
        with torch.no_grad():
            for source, target in zip(inputs, expected):
                labels = target + [eos]
                logits = model(input_ids=torch.tensor([source]), labels=torch.tensor([labels])).logits
                torch_logp.append(logits.log_softmax(-1)[0, torch.arange(len(labels)), labels])
        bleu_data = load_eval_data("test", limit=bleu_pairs) if bleu_pairs else None
        bleu_reference = None
        if bleu_data is not None:
            restorer = Restorer.from_pretrained(path, device="cpu", backend="torch", faithful=False)
            bleu_reference = score_outputs(bleu_data, list(restorer.restore_many(bleu_data.sources)))["bleu"]["score"]
        for compute_type in COMPUTE_TYPES:
            generator = load_ctranslate2_generator(path, torch.device("cpu"), compute_type=compute_type)
            vocab = generator.vocabulary
            scored = generator.translator.score_batch(
                [[vocab[i] for i in ids] for ids in inputs], [[vocab[i] for i in ids] for ids in expected]
            )
            dlogp = torch.cat([(ref - torch.tensor(s.log_probs)).abs() for ref, s in zip(torch_logp, scored)])
            started = time.perf_counter()
            got = generator.generate(inputs, new_tokens)
            seconds = time.perf_counter() - started
            row = {
                "model": Path(name).name, "compute_type": compute_type,
                "dlogp_mean": round(float(dlogp.mean()), 4), "dlogp_max": round(float(dlogp.max()), 4),
                "same": round(sum(a == b for a, b in zip(got, expected)) / len(expected), 4),
                "tokens_per_s": round(sum(map(len, got)) / seconds, 1), "chunks": len(inputs),
            }  # fmt: skip
            if bleu_data is not None:
                restorer = Restorer.from_pretrained(
                    path, device="cpu", backend=load_ctranslate2_generator, compute_type=compute_type, faithful=False
                )
                row["bleu"] = round(score_outputs(bleu_data, list(restorer.restore_many(bleu_data.sources)))["bleu"]["score"], 2)
                row["bleu_torch_fp32"] = round(bleu_reference, 2)
            results.append(row)
    return {"int8_support": support.as_dict(), "rows": results}


def print_table(report: dict, out=sys.stdout) -> None:
    print(report["machine"], file=out)
    print(f"CPU: {report['cpu']}; ctranslate2 {report['ctranslate2']}, torch {report['torch']}", file=out)
    for name, about in report["models"].items():
        print(f"model {name}: {about}", file=out)
    header = f"{'setting':<30} {'model':<13} {'compute':<13} {'dlogp':>7} {'max':>7} {'same':>7} {'BLEU':>6} {'fp32':>6} {'tok/s':>8}"
    for setting, result in report["settings"].items():
        s = result["int8_support"]
        print(f"\n{setting}: int8_support -> {'int8' if s['accurate'] else 'float32'} ({s['reason']})", file=out)
        print(header, file=out)
        for r in result["rows"]:
            bleu = f"{r['bleu']:>6.2f} {r['bleu_torch_fp32']:>6.2f}" if "bleu" in r else f"{'':>6} {'':>6}"
            print(
                f"{setting:<30} {r['model']:<13} {r['compute_type']:<13} {r['dlogp_mean']:>7.4f} {r['dlogp_max']:>7.3f} "
                f"{r['same']:>7.1%} {bleu} {r['tokens_per_s']:>8.0f}",
                file=out,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/restore-bench-int8", help="models and caches (reused by later runs)")
    p.add_argument("--chunks", type=int, default=64, help="test-300 chunks compared per model")
    p.add_argument("--new-tokens", type=int, default=48, help="greedy tokens generated per chunk (at most)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: built-in names or model directories")
    p.add_argument("--bleu-pairs", type=int, default=0,
                   help="also score document BLEU of every compute type on the first N fixed test pairs (a trained model)")
    p.add_argument("--train-steps", type=int, default=400, help="steps of the trained-tiny model")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from SETTINGS")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    if args.worker:
        print(json.dumps(measure_setting(workdir, args.models.split(","), args.chunks, args.new_tokens, args.bleu_pairs)))
        return 0
    import ctranslate2
    import torch

    from restore.cpu import cpu_description, machine_line

    started_all = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    build_models(workdir, args.train_steps)
    report = {"machine": machine_line(), "cpu": cpu_description(), "ctranslate2": ctranslate2.__version__, "torch": torch.__version__,
              "models": {name: describe_model(workdir, name) for name in args.models.split(",")}, "settings": {}}  # fmt: skip
    for setting in args.settings.split(","):
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "CT2_FORCE_CPU_ISA", "CT2_USE_MKL")}
        env.update(SETTINGS[setting])
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--worker", setting, "--workdir", str(workdir), "--chunks", str(args.chunks),
             "--new-tokens", str(args.new_tokens), "--models", args.models, "--bleu-pairs", str(args.bleu_pairs)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        report["settings"][setting] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{setting}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - started_all)
    print_table(report)
    print(f"bench_int8: total run time {report['seconds']} s")
    if args.out:
        from restore.textio import write_text_atomic

        write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training end to end on the CPU: a loadable export, exact resume, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restore.cli import main
from restore.config import load_config
from restore.config_record import portable_path
from restore.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory, wiki_texts) -> dict[str, Path]:
    """Train/dev .jsonl files from the fixture articles and a shared prepared-pairs cache."""
    folder = tmp_path_factory.mktemp("train_data")
    files = {"train": folder / "train.jsonl", "dev": folder / "dev.jsonl", "empty": folder / "empty.jsonl"}
    for name, texts in (("train", wiki_texts[:-4]), ("dev", wiki_texts[-4:]), ("empty", [])):
        files[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    files["cache"] = folder / "cache"
    return files


def overrides(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        f"data.train_files={data['train']}",
        f"data.dev_files={data['dev']}",
        "data.max_train_articles=null",
        "data.dev_holdout=0",
        "data.num_proc=1",
        f"data.cache_dir={data['cache']}",
        f"train.output_dir={out}",
        "train.cpu_threads=1",
        "train.eval_bleu_pairs=4",
        "train.eval_pairs=16",
        *extra,
    ]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


@pytest.fixture
def library_bars_on():
    """transformers' progress bars on, as in a fresh process (other tests' runs switch them off)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_tiny_config_trains_and_exports_a_plain_transformers_model(tmp_path, data, capsys, library_bars_on):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from restore.checkpoint import read_model_info
    from restore.lexicon import Lexicon

    out = tmp_path / "tiny"
    extra = ("train.max_steps=12", "train.save_dtype=bf16", "train.max_shard_size=200KB")
    args = ["train", "--config", str(TINY), *overrides(data, out, *extra)]
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert "\r" not in stderr and "Writing model shards" not in stderr  # no progress bars in a log (issue 27.6)
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("restore train: done: 12/12 steps, ") and "tokens/s" in summary and "device cpu" in summary
    assert "eval step 12: dev loss" in stdout

    model = AutoModelForSeq2SeqLM.from_pretrained(out)  # no restore code involved
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and len(list(out.glob("model-*.safetensors"))) > 1  # sharded bf16
    assert not list(out.glob("*.bin")) and not (out / "checkpoint").exists()
    batch = tokenizer(["born 1879 . father farmer ."], return_tensors="pt")
    assert model.generate(**batch, max_new_tokens=5).shape[0] == 1

    info = read_model_info(out)
    assert info.chunking.max_source_words == load_config(TINY).chunking.max_source_words
    training = info.training
    assert training["completed"] and training["steps"] == 12 and training["tokens_seen"] > 0
    assert training["data"]["train"]["files"] == [portable_path(str(data["train"]))] and training["dev"]["loss"] > 0
    assert "bleu" in training["dev"] and training["device"].startswith("cpu")
    assert info.extra["config"]["model"]["d_model"] == load_config(TINY).model.d_model
    assert Lexicon.load(out).forms
    # No path of the machine that trained it: data files relative to the repository (or by name),
    # no output or cache folder (the GPU run's model recorded /tmp/restore-run and its checkout).
    for name in ("restore.json", "train_config.yaml"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(REPO) not in text and str(tmp_path.parents[1]) not in text, name
        assert "output_dir" not in text and "cache_dir" not in text, name

    # The directory now holds a run: training into it again needs --resume, which needs a checkpoint.
    assert main(args) == 1
    assert "already holds a training run" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 1
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_stop_and_resume_ends_with_the_same_weights_as_one_run(tmp_path, data, capsys):
    # 2 micro-batches per step, ~3 steps per epoch: the stop falls inside the second epoch.
    common = ("train.max_steps=7", "train.batch_tokens=2048", "train.grad_accum=2", "train.save_dtype=fp32", "train.save_every=3")
    straight = train(load_config(TINY, overrides(data, tmp_path / "a", *common)))
    stopped = train(load_config(TINY, overrides(data, tmp_path / "b", *common, "train.stop_after_steps=4")))
    assert (stopped / "checkpoint" / "state.pt").is_file()
    assert json.loads((stopped / "restore.json").read_text())["training"]["completed"] is False
    resumed = train(load_config(TINY, overrides(data, tmp_path / "b", *common)), resume=True)
    assert "resumed from" in capsys.readouterr().out

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a)
    info_a = json.loads((straight / "restore.json").read_text())["training"]
    info_b = json.loads((resumed / "restore.json").read_text())["training"]
    assert info_a["epochs"] > 1 and info_b["steps"] == 7
    assert info_a["tokens_seen"] == info_b["tokens_seen"] and info_a["dev"]["loss"] == info_b["dev"]["loss"]


def test_resume_refuses_changed_settings(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), *overrides(data, out, "train.max_steps=4", "train.stop_after_steps=1")]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(TINY), *overrides(data, out, "train.max_steps=4", "train.lr=0.1"), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr differs" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["train.lr=-1"], "train.lr must be > 0, got -1.0"),
        (["model.d_model=31"], "model.d_model (31) must be divisible by model.attention_heads (2)"),
        (["train.nope=1"], "unknown key 'train.nope'"),
        (["data.train_files=/no/such/articles.jsonl"], "data.train_files: no such file: /no/such/articles.jsonl"),
        (["data.dev_files=/no/such/dev.jsonl"], "data.dev_files: no such file: /no/such/dev.jsonl"),
        (["data.train_files={empty}"], "empty.jsonl: no articles (the data is empty)"),
    ],
)
def test_user_errors_are_one_stderr_line(tmp_path, data, capsys, extra, message):
    extra = [e.format(empty=data["empty"]) for e in extra]
    assert main(["train", "--config", str(TINY), *overrides(data, tmp_path / "out", *extra)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("restore train: error: ") and err.count("\n") == 1
    assert message in err


def test_cli_process_reports_a_missing_data_path_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "restore", "train", "--config", str(TINY), f"train.output_dir={tmp_path / 'out'}",
         f"data.train_files={tmp_path / 'missing.jsonl.xz'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == f"restore train: error: data.train_files: no such file: {tmp_path / 'missing.jsonl.xz'}\n"


def test_padding_to_multiples_of_8_changes_neither_the_loss_nor_the_outputs(data, tmp_path):
    import torch.nn.functional as F

    from restore.data import ArticleSelection, prepare_pairs
    from restore.token_ids import IGNORE_INDEX, TokenizedPairs
    from restore.model import build_model
    from restore.tokenizer import train_tokenizer
    from restore.chunking import ChunkConfig

    pairs = prepare_pairs(ArticleSelection((str(data["train"]),)), ChunkConfig(48), str(data["cache"]), num_proc=1)
    tokenizer = train_tokenizer(list(pairs.dataset["source"]) + list(pairs.dataset["target"]), vocab_size=500)
    encoded = TokenizedPairs.encode(pairs.dataset, tokenizer, max_length=512, num_proc=1)
    torch.manual_seed(0)
    cfg = load_config(TINY).model
    model = build_model(cfg, vocab_size=len(tokenizer)).eval()
    rows = [0, 3, 5, 11]

    def run(multiple):
        batch = encoded.collate(rows, tokenizer.pad_token_id, model.config.decoder_start_token_id, pad_multiple=multiple)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits, labels

    loss, logits, labels = run(1)
    loss8, logits8, labels8 = run(8)
    assert logits8.shape[1] % 8 == 0 and logits8.shape[1] > logits.shape[1] or logits.shape[1] % 8 == 0
    assert torch.allclose(loss, loss8, rtol=0, atol=1e-5)
    real = labels != IGNORE_INDEX
    assert torch.allclose(logits[real], logits8[:, : logits.shape[1]][real], rtol=0, atol=1e-4)


def test_time_budget_derives_max_steps_and_dev_bleu_is_what_inference_gives(tmp_path, data, capsys):
    from sacrebleu.metrics import BLEU

    from restore.data import ArticleSelection, prepare_pairs
    from restore.token_ids import eval_indices
    from restore.chunking import ChunkConfig
    from restore.infer import Restorer
    from restore.train import setup

    out = tmp_path / "budget"
    extra = (
        "train.max_steps=100000", "train.time_budget_minutes=0.05", "train.budget_reserve_minutes=0",
        "train.rate_warmup_steps=2", "train.rate_steps=3", "train.min_lr_ratio=0", "train.warmup_steps=2",
        "train.save_dtype=fp32", "train.eval_bleu_pairs=8",
    )  # fmt: skip
    trainer = setup(load_config(TINY, overrides(data, out, *extra)))
    assert trainer.schedule.total == sys.maxsize  # no end (no decay) until the rate is measured
    trainer.run()
    training = json.loads((out / "restore.json").read_text())["training"]
    budget = training["time_budget"]
    assert budget["steps_per_second"] > 0 and budget["max_steps"] >= 5  # measured over steps 2-5
    assert training["completed"] and training["steps"] == training["max_steps"] == budget["max_steps"]
    assert trainer.schedule.total == budget["max_steps"] and set(trainer.scheduler.get_last_lr()) == {0.0}  # the end of the schedule
    assert "time budget: " in capsys.readouterr().out

    # Dev BLEU is the BLEU of restoring the same dev sources with the exported model (greedy, no repair).
    dev = prepare_pairs(ArticleSelection((str(data["dev"]),)), ChunkConfig(48), str(data["cache"]), num_proc=1).dataset
    indices = eval_indices(len(dev), 8)
    restorer = Restorer.from_pretrained(out, device="cpu", backend="torch", faithful=False)
    hyps = restorer.restore_chunks([dev["source"][int(i)] for i in indices])
    score = BLEU().corpus_score(hyps, [[dev["target"][int(i)] for i in indices]])
    assert training["dev"]["bleu"] == round(score.score, 3) and training["dev"]["bleu_pairs"] == 8


def test_ctrl_c_while_preparing_data_prints_one_line_and_leaves_no_partial_cache(tmp_path, wiki_texts):
    import os
    import signal
    import time

    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki_texts * 60), encoding="utf-8")
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "restore", "train", "--config", str(TINY), f"train.output_dir={tmp_path / 'out'}",
         f"data.train_files={big}", "data.max_train_articles=null", "data.num_proc=2", f"data.cache_dir={cache}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(cache.glob("pairs-*.work-*/*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are running
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "restore train: interrupted\n"
    assert [p.name for p in cache.iterdir()] == ["hf"]  # no pairs entry, complete or partial


def test_a_derived_max_steps_is_kept_by_resume(tmp_path, data, capsys):
    from restore.train import setup

    out = tmp_path / "budget"
    extra = (
        "train.max_steps=100000", "train.time_budget_minutes=30", "train.budget_reserve_minutes=0",
        "train.rate_warmup_steps=1", "train.rate_steps=2", "train.warmup_steps=2", "train.eval_pairs=4", "train.eval_bleu_pairs=0",
    )  # fmt: skip
    first = setup(load_config(TINY, overrides(data, out, *extra, "train.stop_after_steps=4")))
    first.run()
    derived = first.state.max_steps
    assert derived > 4 and first.schedule.total == derived and "time budget: " in capsys.readouterr().out
    training = json.loads((out / "restore.json").read_text())["training"]
    assert not training["completed"] and training["max_steps"] == training["time_budget"]["max_steps"] == derived

    second = setup(load_config(TINY, overrides(data, out, *extra, "train.stop_after_steps=5")), resume=True)
    assert second.max_steps == second.schedule.total == derived  # restored, not measured again
    second.run()
    assert second.state.step == 5 and second.state.max_steps == derived
    assert "time budget: " not in capsys.readouterr().out


def test_dev_bleu_under_bf16_autocast_with_the_compact_decoder(tmp_path, data, monkeypatch):
    """The GPU run's step-500 crash, on the CPU: dev BLEU runs under bf16 autocast (as on CUDA) with
    float32 weights, and the compact decoder's KV cache must take the projections' bf16 keys."""
    from restore import backends
    from restore.decode import StaticGreedyDecoder
    from restore.train import setup
    from restore.train_eval import dev_bleu

    init, decodes = backends.TorchGenerator.__init__, []
    monkeypatch.setattr(backends.TorchGenerator, "__init__", lambda self, *a, **kw: init(self, *a, **{**kw, "compact": True}))
    decode = StaticGreedyDecoder.decode
    monkeypatch.setattr(StaticGreedyDecoder, "decode", lambda self, *a, **kw: decodes.append(1) or decode(self, *a, **kw))
    trainer = setup(load_config(TINY, overrides(data, tmp_path / "autocast", "train.eval_bleu_pairs=8")))
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = dev_bleu(model, trainer.tokenizer, trainer.dev_set, 8, trainer.config.chunking, trainer.accelerator.device)
    assert decodes and metrics["bleu_pairs"] == 8 and metrics["bleu"] >= 0.0


# --- issue 22: continued training, the compiled step, fewer padded positions ---------------------
def test_continued_training_starts_from_the_model_and_extends_its_lineage(tmp_path, data, capsys):
    from transformers import AutoModelForSeq2SeqLM

    from restore.lineage import has_seen, local_shard
    from restore.train import setup
    from restore.train_loop import seq2seq_loss

    start = train(load_config(TINY, overrides(data, tmp_path / "start", "train.max_steps=30", "model.dropout=0", "train.save_dtype=fp32")))
    # Continue on other data (the dev articles), with its own warm-up and decay; dev loss on the train file.
    extra = ("train.max_steps=3", "train.log_every=1", "train.warmup_steps=2", f"model.init_from={start}")
    cont = overrides(data, tmp_path / "cont", *extra) + [f"data.train_files={data['dev']}", f"data.dev_files={data['train']}"]
    trainer = setup(load_config(TINY, cont))
    first = trainer._batches(0)[0]
    batch = trainer.train_set.collate(first, trainer.pad_id, trainer.start_id)
    labels = batch.pop("labels")
    with torch.no_grad():  # the start model's loss on the first step's batch, computed here from its files
        expected = seq2seq_loss(AutoModelForSeq2SeqLM.from_pretrained(start).eval(), batch, labels, trainer.cfg.label_smoothing).item()
    out = trainer.run()
    log = capsys.readouterr().out
    assert "init_from: loss " in log and "first step: training loss " in log

    payload = json.loads((out / "restore.json").read_text())
    parent, entry = payload["lineage"]
    assert parent == json.loads((start / "restore.json").read_text())["lineage"][0]
    assert parent["start_model"] is None and entry["start_model"] == portable_path(str(start))
    assert entry["first_step_loss"] == pytest.approx(expected, rel=1e-5)  # the weights did load...
    assert entry["start_loss"] == pytest.approx(expected, rel=1e-5)
    assert entry["first_step_loss"] < parent["first_step_loss"] - 0.5  # ...a fresh model starts far higher
    assert entry["steps"] == 3 and entry["tokens"] == payload["training"]["tokens_seen"] and entry["dev_loss"] > 0
    assert [s["name"] for s in entry["shards"]] == [portable_path(str(data["dev"]))]
    lineage = payload["lineage"]
    assert has_seen(local_shard(data["train"]), lineage) and has_seen(local_shard(data["dev"]), lineage)


def test_compiled_steps_match_eager_steps_and_a_failed_compilation_falls_back(tmp_path, data, capsys, monkeypatch):
    import restore.train_loop as train_loop

    common = ("train.max_steps=3", "train.log_every=1", "model.dropout=0", "train.save_dtype=fp32", "train.eval_bleu_pairs=0")
    eager = train(load_config(TINY, overrides(data, tmp_path / "eager", *common)))
    eager_log = capsys.readouterr().out
    # aot_eager: dynamo + AOTAutograd trace the step (the GPU's inductor adds code generation, minutes on this CPU).
    compiled = train(load_config(TINY, overrides(data, tmp_path / "compiled", *common, "train.compile=true", "train.compile_backend=aot_eager")))
    compiled_log = capsys.readouterr().out

    def losses(log: str) -> list[float]:
        return [float(line.split(" loss ")[1].split()[0]) for line in log.splitlines() if line.startswith("step ")]

    assert len(losses(eager_log)) == 3 and losses(compiled_log) == pytest.approx(losses(eager_log), abs=2e-4)
    a, b = weights(eager), weights(compiled)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    training = json.loads((compiled / "restore.json").read_text())["training"]
    assert training["step_function"] == "torch.compile (aot_eager, dynamic shapes)"
    assert training["model_flops_per_second"] > 0 and 0 < training["token_share_of_positions"] <= 1
    assert "TFLOP/s" in compiled_log or "GFLOP/s" in compiled_log

    def broken_compile(fn, **options):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nsecond line")

        return run

    monkeypatch.setattr(train_loop.torch, "compile", broken_compile)
    fallback = train(load_config(TINY, overrides(data, tmp_path / "fallback", *common, "train.compile=true")))
    log = capsys.readouterr().out
    assert [line for line in log.splitlines() if line.startswith("torch.compile")] == [
        "torch.compile failed (RuntimeError: no C++ compiler); training continues eagerly"
    ]
    c = weights(fallback)
    assert all(torch.equal(a[k], c[k]) for k in a)  # exactly the eager run
    assert json.loads((fallback / "restore.json").read_text())["training"]["step_function"] == "eager (torch.compile failed: RuntimeError)"


def test_batches_grouped_by_source_length_pad_less_and_change_no_pair_loss(data):
    import numpy as np
    import torch.nn.functional as F

    from restore.attention import round_up
    from restore.chunking import ChunkConfig
    from restore.data import ArticleSelection, prepare_pairs
    from restore.model import build_model
    from restore.token_ids import IGNORE_INDEX, TokenizedPairs, token_batches
    from restore.tokenizer import train_tokenizer

    pairs = prepare_pairs(ArticleSelection((str(data["train"]),)), ChunkConfig(48), str(data["cache"]), num_proc=1)
    tokenizer = train_tokenizer(list(pairs.dataset["source"]) + list(pairs.dataset["target"]), vocab_size=500)
    encoded = TokenizedPairs.encode(pairs.dataset, tokenizer, max_length=512, num_proc=1)
    src, tgt = np.asarray(encoded.src_lens), np.asarray(encoded.tgt_lens)
    lengths = round_up(np.maximum(src, tgt), 8)
    before = token_batches(lengths, 1024, seed=0, epoch=0)
    after = token_batches(lengths, 1024, seed=0, epoch=0, tiebreak=src)
    for batches in (before, after):  # every pair once, every batch within the budget
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
        assert all(len(b) == 1 or len(b) * lengths[b].max() <= 1024 for b in batches)

    def positions(batches):
        return sum(len(b) * (round_up(int(src[b].max()), 8) + round_up(int(tgt[b].max()), 8)) for b in batches)

    assert positions(after) < positions(before)

    torch.manual_seed(0)
    model = build_model(load_config(TINY).model, vocab_size=len(tokenizer)).eval()

    def pair_losses(batches) -> dict[int, float]:
        losses = {}
        for b in batches:
            batch = encoded.collate(b, tokenizer.pad_token_id, model.config.decoder_start_token_id)
            labels = batch.pop("labels")
            with torch.no_grad():
                logits = model(**batch, use_cache=False).logits
            per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
            losses.update(zip(b.tolist(), per_token.sum(1).tolist()))
        return losses

    a, b = pair_losses(before), pair_losses(after)
    assert a.keys() == b.keys() and all(abs(a[i] - b[i]) <= 1e-4 * max(1.0, abs(a[i])) for i in a)


def test_collate_puts_every_id_where_a_row_by_row_copy_does():
    import numpy as np

    from restore.token_ids import IGNORE_INDEX, TokenizedPairs, _offsets

    rng = np.random.default_rng(3)
    src_lens, tgt_lens = rng.integers(1, 30, 50), rng.integers(1, 40, 50)
    pairs = TokenizedPairs(rng.integers(5, 99, src_lens.sum()).astype(np.int32), _offsets(src_lens),
                           rng.integers(5, 99, tgt_lens.sum()).astype(np.int32), _offsets(tgt_lens))  # fmt: skip
    rows = [7, 3, 41, 0, 19]
    got = {k: v.numpy() for k, v in pairs.collate(rows, pad_id=1, decoder_start_id=2).items()}
    assert got["input_ids"].shape[1] % 8 == 0 and got["labels"].shape[1] % 8 == 0
    for r, i in enumerate(rows):
        s = pairs.src[pairs.src_off[i] : pairs.src_off[i + 1]]
        t = pairs.tgt[pairs.tgt_off[i] : pairs.tgt_off[i + 1]]
        assert got["input_ids"][r].tolist() == s.tolist() + [1] * (got["input_ids"].shape[1] - len(s))
        assert got["attention_mask"][r].tolist() == [1] * len(s) + [0] * (got["input_ids"].shape[1] - len(s))
        assert got["labels"][r].tolist() == t.tolist() + [IGNORE_INDEX] * (got["labels"].shape[1] - len(t))
        assert got["decoder_input_ids"][r].tolist() == [2] + t[:-1].tolist() + [1] * (got["labels"].shape[1] - len(t))

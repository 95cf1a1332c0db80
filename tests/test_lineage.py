"""A model's lineage, the unseen-shard picker of a continued GPU run, and the verdict between two models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from restore.lineage import Shard, has_seen, local_shard, model_lineage, pick_unseen_shards, verdict

REPO = Path(__file__).resolve().parents[1]
GPU_SCRIPTS = REPO / "scripts" / "gpu"


def write_shards(folder: Path, contents: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in contents]


def test_the_shipped_models_lineage_names_the_shards_it_was_trained_on():
    payload = json.loads((REPO / "models" / "restore-small" / "restore.json").read_text(encoding="utf-8"))
    (entry,) = model_lineage(payload)
    assert [s["name"] for s in entry["shards"]] == payload["training"]["data"]["train"]["files"]
    assert all(len(s["sha256"]) == 16 and s["bytes"] > 0 for s in entry["shards"])
    assert entry["steps"] == payload["training"]["steps"] and entry["start_model"] is None


def test_shards_are_told_apart_by_content_not_by_name(tmp_path):
    wiki = write_shards(tmp_path / "wiki", {"train-00.jsonl.xz": b"wiki 0", "train-01.jsonl.xz": b"wiki 1"})
    prose = write_shards(tmp_path / "prose", {"train-00.jsonl.xz": b"prose 0"})
    lineage = [{"start_model": None, "shards": [local_shard(wiki[0], ".data/train-00.jsonl.xz").record()]}]
    assert has_seen(local_shard(wiki[0]), lineage)  # the same file under another path
    assert not has_seen(local_shard(prose[0]), lineage)  # same name, other corpus
    assert not has_seen(local_shard(wiki[1]), lineage)
    # A model exported before lineages recorded its shards by name: those count as seen by name.
    legacy = model_lineage({"training": {"steps": 3, "data": {"train": {"files": [".data/train-01.jsonl.xz"]}}}})
    assert has_seen(local_shard(wiki[1]), legacy) and not has_seen(local_shard(wiki[0]), legacy)


def test_the_picker_takes_unseen_shards_in_name_order_within_the_budget():
    shards = [Shard(f"train-0{i}.jsonl.xz", size, str(i)) for i, size in enumerate([10, 10, 10, 10, 6])]
    lineage = [{"shards": [shards[0].record(), shards[2].record()]}]
    pick = pick_unseen_shards(list(reversed(shards)), lineage, budget_bytes=17)
    assert [s.name for s in pick.picked] == ["train-01.jsonl.xz", "train-04.jsonl.xz"]  # 03 does not fit after 01; 04 does
    assert [s.name for s in pick.seen] == ["train-00.jsonl.xz", "train-02.jsonl.xz"]
    assert [s.name for s in pick.left] == ["train-03.jsonl.xz"] and pick.picked_bytes == 16
    assert pick.describe()[0].startswith("picked 2 unseen shard(s), ") and "train-01.jsonl.xz, train-04.jsonl.xz" in pick.describe()[0]
    assert pick_unseen_shards(shards, lineage, budget_bytes=5).picked == []


def test_verdict_replaces_only_on_higher_bleu_with_repair_when_both_have_it():
    def scores(**bleu):
        return {setting.replace("_", "-"): {"bleu": {"score": value}} for setting, value in bleu.items()}

    assert verdict(scores(no_faithful=37.0), scores(no_faithful=37.5))["decision"] == "REPLACE"
    assert verdict(scores(no_faithful=37.0), scores(no_faithful=37.0))["decision"] == "KEEP"  # a tie keeps the old one
    both = verdict(scores(faithful=38.2, no_faithful=37.3), scores(faithful=38.0, no_faithful=39.0))
    assert both["decision"] == "KEEP" and both["setting"] == "faithful" and "38.00 (new) vs 38.20 (old)" in both["reason"]
    # Repair was scored for one model only (time ran out): the common setting decides.
    assert verdict(scores(faithful=38.2, no_faithful=37.3), scores(no_faithful=39.0))["setting"] == "no-faithful"
    assert verdict({}, scores(no_faithful=1.0))["decision"] == "KEEP"


def test_prepare_continue_measures_the_tree_and_copies_what_fits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.bin").write_bytes(b"x" * 3000)
    (repo / "untracked.txt").write_bytes(b"y" * 1000)  # untracked and not ignored: it travels too
    (repo / ".gitignore").write_text(".data/\n.whl/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.bin", ".gitignore"], check=True)
    shards = write_shards(tmp_path / "corpus", {f"train-0{i}.jsonl.xz": bytes([i]) * 2000 for i in range(4)})
    model = tmp_path / "model"
    model.mkdir()
    lineage = [{"start_model": None, "shards": [local_shard(shards[0]).record()]}]
    (model / "restore.json").write_text(json.dumps({"lineage": lineage}), encoding="utf-8")
    data = repo / ".data"
    data.mkdir()
    (data / "train-09.jsonl.xz").write_bytes(b"stale")  # an earlier pick: removed
    dev = tmp_path / "dev.jsonl.xz"
    dev.write_bytes(b"d" * 500)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"w" * 700)
    # 10,000 bytes in all: tree 3,000 + 1,000 + 13 (.gitignore), wheels 700, dev 500 -> 4,787 for shards: 2 of 2,000.
    limit = 10_000 / (1 << 20)
    args = [sys.executable, str(GPU_SCRIPTS / "prepare_continue.py"), "--model", str(model), "--shards", str(tmp_path / "corpus" / "train-*"),
            "--dev", str(dev), "--wheels", str(wheels), "--data-dir", str(data), "--wheel-dir", str(repo / ".whl"),
            "--repo", str(repo), "--limit-mib", str(limit), "--margin-mib", "0"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tree 0.0 MiB" in done.stdout and "= 0.0 MiB for shards" in done.stdout
    assert "picked 2 unseen shard(s)" in done.stdout and "train-01.jsonl.xz, train-02.jsonl.xz" in done.stdout
    assert "seen by the model (skipped): train-00.jsonl.xz" in done.stdout and "(for a later run): train-03.jsonl.xz" in done.stdout
    assert sorted(p.name for p in data.iterdir()) == ["dev.jsonl.xz", "train-01.jsonl.xz", "train-02.jsonl.xz"]
    assert (data / "train-01.jsonl.xz").read_bytes() == shards[1].read_bytes()
    assert [p.name for p in (repo / ".whl").iterdir()] == ["a-1.0-py3-none-any.whl"]

    done = subprocess.run(args[:-4] + ["--limit-mib", str(limit / 2), "--margin-mib", "0", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == "prepare_continue: error: no unseen shard fits the carry budget\n"


def test_compare_models_writes_both_models_scores_and_a_verdict(tmp_path, tiny_model_dir, wiki_texts, one_thread):
    from restore.corrupt import corrupt

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": corrupt(t), "target": t}) + "\n" for t in wiki_texts[:2]), encoding="utf-8")
    out = tmp_path / "compare"
    args = [sys.executable, str(GPU_SCRIPTS / "compare_models.py"), "--old", str(tiny_model_dir), "--new", str(tiny_model_dir),
            "--out", str(out), "--data", str(pairs), "--device", "cpu", "--limit", "2"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("== restore eval ") == 4 and done.stdout.count("BLEU|nrefs:1|case:mixed") == 4
    assert done.stdout.rstrip().splitlines()[-1].startswith("verdict: KEEP (BLEU ")  # the same model: a tie
    result = json.loads((out / "verdict.json").read_text())
    assert result["decision"] == "KEEP" and result["setting"] == "faithful"
    assert result["scores"]["faithful"]["old"] == result["scores"]["faithful"]["new"]
    assert sorted(p.name for p in out.glob("*.json")) == ["new-faithful.json", "new-no-faithful.json", "old-faithful.json",
                                                          "old-no-faithful.json", "verdict.json"]  # fmt: skip


@pytest.mark.parametrize("script", ["continue_small.sh", "train_small.sh"])
def test_gpu_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(GPU_SCRIPTS / script)], capture_output=True).returncode == 0

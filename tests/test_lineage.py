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


def shards_of(corpus: str, sizes: list[int]) -> list[Shard]:
    return [Shard(f"{corpus}/train-{i:02d}.jsonl.xz", size, f"{corpus}{i}") for i, size in enumerate(sizes)]


def picked(pick) -> dict[str, list[str]]:
    return {name: [Path(s.name).name for s in c.picked] for name, c in pick.corpora.items()}


def test_the_picker_takes_unseen_shards_in_name_order_within_the_budget():
    shards = shards_of("wiki", [10, 10, 10, 10, 6])
    lineage = [{"shards": [shards[0].record(), shards[2].record()]}]
    pick = pick_unseen_shards({"wiki": list(reversed(shards))}, {"wiki": 1.0}, lineage, budget_bytes=17)
    wiki = pick.corpora["wiki"]
    assert picked(pick) == {"wiki": ["train-01.jsonl.xz", "train-04.jsonl.xz"]}  # 03 does not fit after 01; 04 does
    assert [Path(s.name).name for s in wiki.seen] == ["train-00.jsonl.xz", "train-02.jsonl.xz"]
    assert [Path(s.name).name for s in wiki.left] == ["train-03.jsonl.xz"] and pick.picked_bytes == 16
    assert "picked 2 unseen shard(s)" in wiki.describe() and "train-01.jsonl.xz, train-04.jsonl.xz" in wiki.describe()
    assert picked(pick_unseen_shards({"wiki": shards}, {"wiki": 1.0}, lineage, budget_bytes=5)) == {"wiki": []}


def test_a_shard_the_model_saw_is_never_picked():
    wiki, prose = shards_of("wiki", [10, 10]), shards_of("prose", [1, 10])
    lineage = [{"shards": [wiki[0].record(), wiki[1].record()]}, {"shards": [prose[0].record()]}]
    pick = pick_unseen_shards({"wiki": wiki, "prose": prose}, {"wiki": 0.9, "prose": 0.1}, lineage, budget_bytes=1000)
    # wiki weighs 9x more and the budget holds everything, yet it gets nothing: both of its shards were seen;
    # prose's small seen shard stays out too, though it fits.
    assert picked(pick) == {"wiki": [], "prose": ["train-01.jsonl.xz"]}
    assert [s.name for s in pick.corpora["prose"].seen] == ["prose/train-00.jsonl.xz"] and pick.picked_bytes == 10
    # Seen means the same content: a shard recorded under another name (another machine's .data/) is still seen,
    # and another corpus's shard of the same file name is not.
    moved = [{"shards": [{"name": ".data/wiki/train/train-00.jsonl.xz", "bytes": 10, "sha256": "wiki0"}]}]
    pick = pick_unseen_shards({"wiki": wiki[:1], "prose": prose[:1]}, {"wiki": 0.5, "prose": 0.5}, moved, budget_bytes=1000)
    assert picked(pick) == {"wiki": [], "prose": ["train-00.jsonl.xz"]}


def test_weights_share_the_budget():
    wiki, prose = shards_of("wiki", [10] * 6), shards_of("prose", [10] * 6)
    pick = pick_unseen_shards({"wiki": wiki, "prose": prose}, {"wiki": 0.6, "prose": 0.4}, [], budget_bytes=50)
    assert {n: len(v) for n, v in picked(pick).items()} == {"wiki": 3, "prose": 2}  # 30 and 20 of 50: the weights exactly
    pick = pick_unseen_shards({"wiki": wiki, "prose": prose}, {"wiki": 0.2, "prose": 0.8}, [], budget_bytes=50)
    assert {n: len(v) for n, v in picked(pick).items()} == {"wiki": 1, "prose": 4}
    assert pick.corpora["prose"].share_bytes == 40 and [n for n, *_ in pick.order][:2] == ["prose", "wiki"]
    # What one corpus cannot use goes to the others: wiki has one unseen shard left, prose takes the rest.
    pick = pick_unseen_shards({"wiki": wiki, "prose": prose}, {"wiki": 0.6, "prose": 0.4}, [{"shards": [s.record() for s in wiki[1:]]}], 50)
    assert {n: len(v) for n, v in picked(pick).items()} == {"wiki": 1, "prose": 4}
    assert pick.order[-1][3] is True and "no other corpus has an unseen shard that fits" in pick.describe()[-2]


def test_whole_shards_the_real_sizes_the_heavier_corpus_first():
    """The shared corpora's sizes (wiki ~11.1 MiB a shard; prose 11.5, 11.4, 2.8 MiB) and a budget of 27 MiB:
    wiki's one shard and prose's big one, then the small prose shard that still fits."""
    mib = 1 << 20
    wiki = shards_of("wiki", [int(11.1 * mib)] * 6)
    prose = shards_of("prose", [int(11.5 * mib), int(11.4 * mib), int(2.8 * mib)])
    pick = pick_unseen_shards({"wiki": wiki, "prose": prose}, {"wiki": 0.6, "prose": 0.4}, [{"shards": [wiki[0].record()]}], 27 * mib)
    assert picked(pick) == {"wiki": ["train-01.jsonl.xz"], "prose": ["train-00.jsonl.xz", "train-02.jsonl.xz"]}
    assert [Path(s.name).name for s in pick.corpora["prose"].left] == ["train-01.jsonl.xz"]
    assert pick.picked_bytes <= 27 * mib
    with pytest.raises(ValueError, match="a weight > 0 for every corpus"):
        pick_unseen_shards({"wiki": wiki}, {"prose": 1.0}, [], 10)


def test_verdict_wants_a_higher_mean_and_no_domain_down_by_more_than_one():
    def scores(setting: str = "no-faithful", **bleu):
        return {setting: {domain.replace("_", "-"): {"bleu": {"score": value}} for domain, value in bleu.items()}}

    old = scores(test=38.0, prose_test=20.0)
    assert verdict(old, scores(test=37.5, prose_test=26.0))["decision"] == "REPLACE"  # -0.5 on test, +6 on prose
    v = verdict(old, scores(test=36.9, prose_test=30.0))  # mean up by 4.45, but test down by 1.1
    assert v["decision"] == "KEEP" and "test drops 1.10 BLEU" in v["reason"]
    assert verdict(old, scores(test=38.0, prose_test=20.0))["decision"] == "KEEP"  # a tie keeps the old one
    assert verdict(old, scores(test=38.5, prose_test=19.4))["decision"] == "KEEP"  # mean lower: 28.95 < 29.0
    assert verdict(scores(test=37.0), scores(test=37.5))["decision"] == "REPLACE"  # one domain: higher BLEU
    # Repair decides when both models were scored with it; otherwise the setting both have.
    both_old = {**scores("faithful", test=38.2, prose_test=20.1), **old}
    v = verdict(both_old, {**scores("faithful", test=38.0, prose_test=20.0), **scores(test=39.0, prose_test=25.0)})
    assert v["decision"] == "KEEP" and v["setting"] == "faithful" and v["new_bleu"] == {"test": 38.0, "prose-test": 20.0}
    assert verdict(both_old, scores(test=39.0, prose_test=25.0))["setting"] == "no-faithful"
    assert verdict(old, scores(test=39.0))["decision"] == "KEEP"  # not the same domains: nothing to compare
    assert verdict({}, scores(test=1.0))["decision"] == "KEEP"


def test_prepare_continue_picks_per_corpus_and_lays_them_out_as_carry_data_does(tmp_path):
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "tracked.bin").write_bytes(b"x" * 3000)
    (repo / "untracked.txt").write_bytes(b"y" * 1000)  # untracked and not ignored: it travels too
    (repo / ".gitignore").write_text(".data/\n.whl/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.bin", ".gitignore"], check=True)
    wiki = write_shards(tmp_path / "shared" / "wiki", {f"train-0{i}.jsonl.xz": bytes([i]) * 2000 for i in range(4)})
    prose = write_shards(tmp_path / "shared" / "prose", {"train-00.jsonl.xz": b"p" * 1500, "train-01.jsonl.xz": b"q" * 500})
    (tmp_path / "shared" / "wiki" / "dev.jsonl.xz").write_bytes(b"d" * 300)
    (tmp_path / "shared" / "prose" / "dev.jsonl.xz").write_bytes(b"e" * 200)
    corpora = [  # the configured train files name the folders; the candidates are every train-* shard there
        {"name": "wiki", "train_files": [str(wiki[3])], "dev_files": [str(tmp_path / "shared" / "wiki" / "dev.jsonl.xz")], "weight": 0.6},
        {"name": "prose", "train_files": [str(prose[0])], "dev_files": [str(tmp_path / "shared" / "prose" / "dev.jsonl.xz")], "weight": 0.4},
    ]
    config = repo / "configs" / "mix.yaml"
    config.write_text(json.dumps({"data": {"corpora": corpora}}), encoding="utf-8")  # YAML reads JSON
    subprocess.run(["git", "-C", str(repo), "add", "configs/mix.yaml"], check=True)
    model = tmp_path / "model"
    model.mkdir()
    (model / "restore.json").write_text(json.dumps({"lineage": [{"start_model": None, "shards": [local_shard(wiki[0]).record()]}]}))
    data = repo / ".data"
    (data / "wiki" / "train").mkdir(parents=True)
    (data / "wiki" / "train" / "train-09.jsonl.xz").write_bytes(b"stale")  # an earlier pick: removed
    (data / "train-04.jsonl.xz").write_bytes(b"stale")  # the former flat layout: removed
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"w" * 700)
    tree = sum(f.stat().st_size for f in (repo / "tracked.bin", repo / "untracked.txt", repo / ".gitignore", config))
    # The budget for shards: 4,500 bytes after the tree, the wheel and the two dev files: wiki 2,700, prose 1,800 by weight.
    limit = (tree + 700 + 500 + 4500) / (1 << 20)
    args = [sys.executable, str(GPU_SCRIPTS / "prepare_continue.py"), "--config", str(config), "--model", str(model),
            "--wheels", str(wheels), "--data-dir", str(data), "--wheel-dir", str(repo / ".whl"), "--repo", str(repo),
            "--limit-mib", str(limit), "--margin-mib", "0"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "wiki (weight 0.6, share 0.0 MiB): picked 1 unseen shard(s)" in out and ": train-01.jsonl.xz;" in out
    assert "seen by the model (skipped): train-00.jsonl.xz;" in out and "(for a later run): train-02.jsonl.xz, train-03.jsonl.xz" in out
    assert "prose (weight 0.4, share 0.0 MiB): picked 2 unseen shard(s)" in out and "train-00.jsonl.xz, train-01.jsonl.xz;" in out
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    assert files == ["prose/dev/dev.jsonl.xz", "prose/train/train-00.jsonl.xz", "prose/train/train-01.jsonl.xz",
                     "wiki/dev/dev.jsonl.xz", "wiki/train/train-01.jsonl.xz"]  # fmt: skip
    assert (data / "wiki" / "train" / "train-01.jsonl.xz").read_bytes() == wiki[1].read_bytes()
    assert [p.name for p in (repo / ".whl").iterdir()] == ["a-1.0-py3-none-any.whl"]
    assert f"{tree + 700 + 500 + 2000 + 2000:>12,}  in all" in out  # measured after the copy, by carry_data's code

    done = subprocess.run(args[:-4] + ["--limit-mib", str(limit / 2), "--margin-mib", "0", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == "prepare_continue: error: no unseen shard of wiki, prose fits the carry budget\n"


def test_compare_models_scores_both_domains_and_writes_a_verdict(tmp_path, tiny_model_dir, wiki_texts, one_thread):
    from restore.corrupt import corrupt

    for name, texts in (("test", wiki_texts[:2]), ("prose-test", wiki_texts[2:4])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"source": corrupt(t), "target": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "compare"
    args = [sys.executable, str(GPU_SCRIPTS / "compare_models.py"), "--old", str(tiny_model_dir), "--new", str(tiny_model_dir),
            "--out", str(out), "--data", str(tmp_path / "test.jsonl"), "--data", str(tmp_path / "prose-test.jsonl"),
            "--device", "cpu", "--limit", "2"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("== restore eval ") == 4 and done.stdout.count("BLEU|nrefs:1|case:mixed") == 8  # 4 runs x 2 domains
    assert done.stdout.count("| prose-test | 2 pairs |") == 4
    lines = done.stdout.rstrip().splitlines()
    assert lines[-1].startswith("verdict: KEEP (faithful: mean BLEU ")  # the same model: a tie
    assert any(line.startswith("goals, faithful: test BLEU ") and "issue 22 (new >= 45): not met" in line for line in lines)
    assert any(line.startswith("goals, faithful: prose-test BLEU ") and "(+0.00); issue 26 (new >= old + 5): not met" in line for line in lines)
    result = json.loads((out / "verdict.json").read_text())
    assert result["decision"] == "KEEP" and result["setting"] == "faithful" and "no domain drops by more than 1" in result["rule"]
    assert set(result["scores"]["faithful"]["old"]) == {"test", "prose-test"}
    assert result["scores"]["faithful"]["old"] == result["scores"]["faithful"]["new"]
    assert {(g["domain"], g["issue"], g["met"]) for g in result["goals"] if g["setting"] == "faithful"} == {
        ("test", "issue 22", False), ("test", "issue 26", True), ("prose-test", "issue 26", False)}
    assert sorted(p.name for p in out.glob("old-faithful*.json")) == ["old-faithful.json", "old-faithful.prose-test.json", "old-faithful.test.json"]


@pytest.mark.parametrize("script", ["continue_small.sh", "train_small.sh", "common.sh"])
def test_gpu_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(GPU_SCRIPTS / script)], capture_output=True).returncode == 0

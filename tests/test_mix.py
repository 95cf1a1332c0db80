"""Training on a mix of corpora: the config, what a weight means per epoch, and a mixed run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from restore.config import load_config, load_config_dict
from restore.config_record import config_differences, dump_config
from restore.errors import RestoreError
from restore.mix import Mix, data_corpora, data_files, dev_shares, epoch_shares

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
MIX = {
    "data": {
        "corpora": [
            {"name": "wiki", "train_files": ["data/wiki/train-*.jsonl.xz"], "dev_files": "data/wiki/dev.jsonl.xz", "weight": 0.6},
            {"name": "prose", "train_files": ["data/prose/train-00.jsonl.xz"], "weight": 0.4, "max_train_articles": 5},
        ]
    }
}


# --- the config ------------------------------------------------------------------------------
def test_a_mix_resolves_its_paths_and_round_trips(tmp_path):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "mix.yaml"
    path.write_text(yaml.safe_dump(MIX), encoding="utf-8")
    cfg = load_config(path)
    assert [(c.name, c.weight, c.max_train_articles) for c in cfg.data.corpora] == [("wiki", 0.6, None), ("prose", 0.4, 5)]
    assert data_files(cfg.data) == {
        "wiki": {"train": [str(tmp_path / "data/wiki/train-*.jsonl.xz")], "dev": [str(tmp_path / "data/wiki/dev.jsonl.xz")]},
        "prose": {"train": [str(tmp_path / "data/prose/train-00.jsonl.xz")], "dev": []},
    }
    dumped = dump_config(cfg)  # as a run records it: paths relative to the repository (here: the file's name)
    assert str(tmp_path) not in dumped
    again = load_config_dict(yaml.safe_load(dumped))
    assert config_differences(again, cfg) == []


def test_single_corpus_is_named_after_its_folder():
    data = load_config_dict({"data": {"train_files": ["/d/wiki/train-00.jsonl.xz", "/d/wiki/train-01.jsonl.xz"]}}).data
    (corpus,) = data_corpora(data)
    assert (corpus.name, corpus.weight, corpus.train_files) == ("wiki", 1.0, data.train_files)


def test_overrides_set_a_corpus_key_or_name_the_data_anew(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config_dict(MIX, ["data.corpora.prose.weight=0.25", "data.corpora.wiki.train_files=[w.jsonl]"])
    assert [c.weight for c in cfg.data.corpora] == [0.6, 0.25]
    assert cfg.data.corpora[0].train_files == [str(tmp_path / "w.jsonl")]  # against the current directory
    # Naming the data one way on the command line drops what the file names the other way.
    single = load_config_dict(MIX, ["data.train_files=a.jsonl"])
    assert single.data.corpora == [] and single.data.train_files == [str(tmp_path / "a.jsonl")]
    mixed = load_config_dict({"data": {"train_files": "a.jsonl", "dev_files": "d.jsonl"}}, ["data.corpora=[{name: x, train_files: b.jsonl}]"])
    assert (mixed.data.train_files, mixed.data.dev_files) == ([], [])
    assert mixed.data.corpora[0].train_files == [str(tmp_path / "b.jsonl")]


@pytest.mark.parametrize(
    "corpora, overrides, message",
    [
        ([{"name": "a", "train_files": "x"}, {"name": "a", "train_files": "y"}], [], "data.corpora: the name 'a' is used twice"),
        ([{"name": "a", "train_files": "x", "weight": 0}], [], "data.corpora.a.weight must be a number > 0, got 0.0"),
        ([{"name": "a", "train_files": "x", "weight": "much"}], [], "data.corpora.a.weight must be a number, got 'much'"),
        ([{"name": "a", "train_files": "x", "weigth": 1}], [], "unknown key 'data.corpora.a.weigth' (did you mean 'data.corpora.a.weight'?)"),
        ([{"train_files": "x"}], [], "data.corpora[0].name is missing"),
        ([{"name": "a"}], [], "data.corpora.a.train_files is empty"),
        ([{"name": "a b", "train_files": "x"}], [], "data.corpora.a b.name must be letters, digits, '_' or '-'"),
        (["x.jsonl"], [], "data.corpora[0] must be a mapping of name, train_files, dev_files, weight, max_train_articles"),
        ([{"name": "a", "train_files": "x"}], ["data.corpora.b.weight=1"], "no corpus named 'b' in data.corpora (a)"),
        ([{"name": "a", "train_files": "x"}], ["data.corpora.a.weight=-1"], "data.corpora.a.weight must be a number > 0, got -1.0"),
    ],
)
def test_bad_mixes_name_the_key_in_one_line(corpora, overrides, message):
    with pytest.raises(RestoreError) as e:
        load_config_dict({"data": {"corpora": corpora}}, overrides, name="x.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_file_naming_the_data_both_ways_is_an_error():
    with pytest.raises(RestoreError, match="data.corpora and data.train_files are both set"):
        load_config_dict({"data": {**MIX["data"], "train_files": "a.jsonl"}}, name="x.yaml")


# --- what a weight means ---------------------------------------------------------------------
def test_every_epoch_draws_each_corpus_by_its_weight():
    mix = Mix(("wiki", "prose"), (0.6, 0.4), (300, 1000))
    assert mix.shares == [780, 520] and sum(mix.shares) == 1300  # an epoch: as many pairs as all corpora hold
    for epoch in range(3):
        idx = mix.epoch_indices(seed=5, epoch=epoch)
        assert int((idx < 300).sum()) == 780 and int((idx >= 300).sum()) == 520
        counts = np.bincount(idx[idx < 300], minlength=300)  # up-sampled 2.6x: every pair 2 or 3 times
        assert counts.min() == 2 and counts.max() == 3
    assert np.array_equal(mix.epoch_indices(5, 1), mix.epoch_indices(5, 1))  # a resumed run draws the same
    assert not np.array_equal(mix.epoch_indices(5, 1), mix.epoch_indices(6, 1))


def test_a_down_sampled_corpus_shows_every_pair_once_before_any_twice():
    mix = Mix(("wiki", "prose"), (0.6, 0.4), (300, 1000))
    prose = [mix.epoch_indices(0, e) for e in range(4)]
    per_epoch = [p[p >= 300] - 300 for p in prose]  # 520 of the 1000 prose pairs each
    assert all(len(np.unique(p)) == len(p) == 520 for p in per_epoch)  # no pair twice in an epoch
    seen = np.concatenate(per_epoch)
    assert sorted(seen[:1000].tolist()) == list(range(1000)) == sorted(seen[1000:2000].tolist())  # all once, then again


def test_weights_equal_to_the_sizes_use_every_pair_once():
    assert Mix(("a", "b"), (1.0, 3.0), (100, 300)).epoch_indices(0, 0) is None
    assert epoch_shares([7], [2.0]) == [7]
    assert dev_shares([50, 400, 0], [0.5, 0.25, 0.25]) == [50, 25, 0]


# --- a mixed run, end to end -----------------------------------------------------------------
@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory, wiki_texts) -> dict[str, Path]:
    """Two small corpora (the fixture articles, split), each with a dev file, and a shared cache."""
    folder = tmp_path_factory.mktemp("mix_data")
    half = len(wiki_texts) // 2
    parts = {"a": wiki_texts[: half - 2], "a_dev": wiki_texts[half - 2 : half], "b": wiki_texts[half:-2], "b_dev": wiki_texts[-2:]}
    files = {}
    for name, texts in parts.items():
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    files["cache"] = folder / "cache"
    return files


def mix_overrides(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    corpora = [
        {"name": "a", "train_files": [str(files["a"])], "dev_files": [str(files["a_dev"])], "weight": 0.75},
        {"name": "b", "train_files": [str(files["b"])], "dev_files": [str(files["b_dev"])], "weight": 0.25},
    ]
    return [
        f"data.corpora={json.dumps(corpora)}", "data.max_train_articles=null", "data.dev_holdout=0", "data.num_proc=1",
        f"data.cache_dir={files['cache']}", f"train.output_dir={out}", "train.cpu_threads=1", "train.eval_bleu_pairs=0",
        "train.eval_pairs=16", "train.batch_tokens=2048", "train.save_dtype=fp32", "train.max_steps=6", *extra,
    ]  # fmt: skip


def test_a_mixed_run_records_its_mix_and_resumes_exactly(tmp_path, two_corpora):
    import torch
    from safetensors.torch import load_file

    from restore.train import train

    straight = train(load_config(TINY, mix_overrides(two_corpora, tmp_path / "a")))
    train(load_config(TINY, mix_overrides(two_corpora, tmp_path / "b", "train.stop_after_steps=3")))
    resumed = train(load_config(TINY, mix_overrides(two_corpora, tmp_path / "b")), resume=True)

    def weights(folder: Path) -> dict:
        return {k: v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(p).items()}

    one, two = weights(straight), weights(resumed)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)

    data = json.loads((straight / "restore.json").read_text(encoding="utf-8"))["training"]["data"]
    a, b = data["corpora"]
    assert (a["name"], a["weight"], b["name"], b["weight"]) == ("a", 0.75, "b", 0.25)
    total = a["pairs_encoded"] + b["pairs_encoded"]
    assert a["pairs_per_epoch"] + b["pairs_per_epoch"] == total  # an epoch: as many pairs as both hold
    assert abs(a["pairs_per_epoch"] - 0.75 * total) <= 1
    # the fixture's first articles give fewer pairs: "a" is up-sampled, "b" down-sampled
    assert a["pairs_per_epoch"] > a["pairs_encoded"] and b["pairs_per_epoch"] < b["pairs_encoded"]
    assert a["train_files"] == [two_corpora["a"].name] and a["articles"] > 0 and b["dev_pairs_used"] > 0
    # the dev set holds the corpora in the proportions of the weights (as many pairs as the smaller allows)
    assert abs(a["dev_pairs_used"] - 3 * b["dev_pairs_used"]) <= 2
    assert data["train"]["pairs"] == a["pairs"] + b["pairs"]

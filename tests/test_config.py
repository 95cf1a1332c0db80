"""Experiment configs: every shipped YAML validates; bad keys, types and values give one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from restore.config import ExperimentConfig, load_config, load_config_dict
from restore.config_record import config_differences, dump_config
from restore.errors import RestoreError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
DATA = {"data": {"train_files": ["wiki.jsonl"]}}


def test_the_three_sizes_are_shipped():
    assert {"tiny.yaml", "small.yaml", "base.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    root = path.resolve().parents[1]
    # Relative paths in a config resolve against the repository root, not the current directory.
    assert Path(cfg.train.output_dir).is_absolute() and Path(cfg.train.output_dir).is_relative_to(root)
    from restore.mix import data_files

    assert all(Path(f).is_absolute() for files in data_files(cfg.data).values() for split in files.values() for f in split)
    # A dumped config (as a run and its model record it: portable paths, no output or cache folder)
    # loads back to the same config but for those folders, and no absolute path is left in it.
    import yaml

    dumped = dump_config(cfg)
    assert str(root) not in dumped and "output_dir" not in dumped and "cache_dir" not in dumped
    again = load_config_dict(yaml.safe_load(dumped), root=root)
    assert config_differences(again, cfg) == [] and data_files(again.data) == data_files(cfg.data)


def test_small_config_fits_the_shipping_budget():
    """The shipped model: at most 16M parameters (32 MB of bf16 weights) with its vocabulary."""
    from restore.model import build_model, count_parameters

    cfg = load_config(Path(__file__).parents[1] / "configs" / "small.yaml")
    assert cfg.train.save_dtype == "bf16"
    assert [c.name for c in cfg.data.corpora] == ["wiki", "prose"]  # a mix (issue 26)
    params = count_parameters(build_model(cfg.model, vocab_size=cfg.tokenizer.vocab_size))
    assert params <= 16_000_000


def test_overrides_are_typed_and_paths_resolve_against_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config_dict(DATA, ["train.lr=3e-4", "train.max_steps=20", "train.output_dir=out", "train.keep_checkpoint=true"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.keep_checkpoint) == (3e-4, 20, True)
    assert cfg.train.output_dir == str(tmp_path / "out")
    cfg = load_config_dict(DATA, ["data.train_files=[a.jsonl, b.jsonl]", "model.init_from=null"])
    assert cfg.data.train_files == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert cfg.model.init_from is None


def test_paths_in_a_file_resolve_against_the_parent_of_its_folder(tmp_path):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "x.yaml"
    path.write_text("data:\n  train_files: [data/*.jsonl, /abs/x.jsonl]\ntrain:\n  output_dir: runs/x\n")
    cfg = load_config(path)
    assert cfg.data.train_files == [str(tmp_path / "data/*.jsonl"), "/abs/x.jsonl"]
    assert cfg.train.output_dir == str(tmp_path / "runs/x")


@pytest.mark.parametrize(
    "raw, overrides, message",
    [
        ({"train": {"max_step": 3}}, [], "unknown key 'train.max_step' (did you mean 'train.max_steps'?)"),
        ({"trian": {}}, [], "unknown section 'trian' (did you mean 'train'?)"),
        ({}, ["train.lr=fast"], "override train.lr=fast: train.lr must be a number, got 'fast'"),
        ({"train": {"max_steps": 1.5}}, [], "train.max_steps must be an integer, got 1.5"),
        ({"train": {"max_steps": 0}}, [], "train.max_steps must be >= 1, got 0"),
        ({"train": {"keep_checkpoint": "yes please"}}, [], "train.keep_checkpoint must be true or false"),
        ({"train": {"schedule": "step"}}, [], "train.schedule must be one of linear, cosine, constant; got 'step'"),
        ({"train": {"save_dtype": "fp16"}}, [], "train.save_dtype must be one of bf16, fp32"),
        ({"model": {"d_model": 30, "attention_heads": 4}}, [], "model.d_model (30) must be divisible by model.attention_heads"),
        ({"chunking": {"max_source_words": 2}}, [], "chunking.max_source_words must be an integer >= 4, got 2"),
        ({"data": {"train_files": []}}, [], "data.train_files is empty and no data.hub_dataset is set"),
        ({"train": []}, [], "section 'train' must be a mapping"),
        ({}, ["train.lr"], "override 'train.lr': expected section.key=value"),
        ({}, ["lr=1"], "override 'lr=1': expected section.key=value"),
    ],
)
def test_bad_configs_name_the_key_in_one_line(raw, overrides, message):
    merged = {**DATA, **raw}
    if "data" in raw:
        merged["data"] = raw["data"]
    with pytest.raises(RestoreError) as e:
        load_config_dict(merged, overrides, name="x.yaml")
    text = str(e.value)
    assert message in text and "\n" not in text
    assert text.startswith("x.yaml: ") or text.startswith("override ")


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(RestoreError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(RestoreError, match="invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(RestoreError, match="expected a mapping of sections"):
        load_config(listy)


def test_config_differences_names_changed_keys():
    a = load_config_dict(DATA)
    b = load_config_dict(DATA, ["train.seed=1", "train.stop_after_steps=5"])
    assert config_differences(a, b) == ["train.seed", "train.stop_after_steps"]
    assert config_differences(a, b, ignore={"train.stop_after_steps"}) == ["train.seed"]


@pytest.mark.parametrize(
    "module", ["restore.config", "restore.cli", "restore.backend_choice", "restore.infer_files", "restore.corpus", "restore.evaluate", "restore.eval_run"]
)
def test_config_and_cli_import_nothing_heavy(module):
    # A bad config or a missing input must be reported in about a second, before torch and
    # transformers (several seconds to import) are loaded.
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

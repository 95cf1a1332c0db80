"""Model directories: restore.json written and read back, older files included."""

from __future__ import annotations

import json
import shutil

from restore.checkpoint import RESTORE_JSON, read_model_info
from restore.chunking import ChunkConfig


def test_restore_json_round_trip(tiny_model_dir):
    assert read_model_info(tiny_model_dir).chunking == ChunkConfig(max_source_words=16)


def test_older_restore_json_with_max_source_tokens_still_loads(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    payload = json.loads((model / RESTORE_JSON).read_text())
    payload["chunking"] = {"max_source_tokens": 20}  # the key's name before max_source_words
    (model / RESTORE_JSON).write_text(json.dumps(payload))
    assert read_model_info(model).chunking == ChunkConfig(max_source_words=20)


def test_exported_files_are_readable_by_everyone_the_umask_allows(tmp_path):
    # A model shared on a cluster must be readable by its users: safetensors writes weights 0600.
    import os
    import stat

    from restore.checkpoint import export_model
    from restore.model import ModelConfig, build_model
    from restore.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["born 1879 kherson .", "Born in 1879 in Kherson."] * 20, vocab_size=400)
    model = build_model(ModelConfig(d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32), len(tokenizer))
    out = tmp_path / "model"
    out.mkdir()
    export_model(out, model, tokenizer, ChunkConfig(), training={}, config={}, max_shard_size="20KB")
    (tmp_path / "fresh.txt").write_text("")  # the mode any new file gets here
    usual = stat.S_IMODE(os.stat(tmp_path / "fresh.txt").st_mode)
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in out.iterdir()}
    assert len([n for n in modes if n.endswith(".safetensors")]) > 1 and set(modes.values()) == {usual}, modes

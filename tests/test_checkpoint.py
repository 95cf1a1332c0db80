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

"""scripts/error_classes.py: word differences between restorations and references, by class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_benchmarks import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "error_classes.py"


def test_differences_by_class():
    ec = load_script("error_classes")
    d = ec.differences("trotsky receive news in Kherson", "Trotsky received the news in Kherson, and left.")
    assert d == {
        ("changed", "casing"): 1, ("changed", "inflection"): 1, ("missing", "article"): 1,
        ("missing", "punctuation"): 2, ("missing", "conjunction"): 1, ("missing", "content"): 1,
    }  # fmt: skip
    assert ec.differences("He was born in it.", "He was born in it.") == {}
    assert ec.differences("It was of the.", "It.") == {("extra", "auxiliary"): 1, ("extra", "preposition"): 1, ("extra", "article"): 1}


def test_the_script_reads_an_eval_outputs_file(tmp_path):
    outputs = tmp_path / "r.outputs.jsonl"
    records = [{"source": "receiv news .", "output": "He received news.", "target": "He received the news."}]
    outputs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(outputs), "--markdown"], capture_output=True, text=True, check=True)
    assert "output 4 words, targets 5 words (output/target 0.800, gap 1 words)" in done.stdout
    assert "| article | 1 | 0 | 1 | 100.0% | 0 |" in done.stdout

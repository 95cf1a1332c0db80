"""The Python API (restore.load, restore.api): one loaded model, strings, lists and streams, spans."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

import restore
from restore.corrupt import corrupt
from restore.faithful import PASSED, REDECODED, REPAIRED
from restore.faithful_check import check

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ctranslate2", "fastapi", "uvicorn")


@pytest.mark.parametrize("module", ["restore", "restore.api"])
def test_importing_the_api_loads_no_model_and_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def documents(wiki_texts) -> list[str]:
    return [corrupt(text) for text in wiki_texts[:4]] + ["", "leon trotski born 1879 .\nleft russia 1929 ."]


@pytest.fixture(scope="module")
def pipeline(quick_model_dir):
    return restore.load(quick_model_dir, device="cpu")


def test_a_string_a_list_and_a_stream_restore_as_the_restorer_does(pipeline, quick_model_dir, documents, one_thread):
    from restore.infer import Restorer

    expected = list(Restorer.from_pretrained(quick_model_dir, device="cpu", backend="auto").restore_many(documents))
    one = pipeline(documents[0])
    assert isinstance(one, restore.Restoration) and one.text == expected[0] and one.source == documents[0]
    assert [r.text for r in pipeline(documents)] == expected
    assert [r.text for r in pipeline.pipe(iter(documents))] == expected
    assert pipeline(documents[4]).text == "" and pipeline(documents[4]).spans == []


def test_results_carry_spans_chunks_and_faithfulness(pipeline, documents, one_thread):
    result = pipeline(documents[5])
    assert result.faithful is True and check(result.text.split("\n\n")[0], "leon trotski born 1879 .")
    assert result.tokens == documents[5].split()
    linked = [s.source for s in result.spans if not s.inserted]
    assert linked == list(range(len(result.tokens)))  # faithful: every input token once, in order
    assert [(c.start, c.end) for c in result.chunks] == [(0, 5), (5, 9)]  # one chunk per line here
    assert {c.outcome for c in result.chunks} <= {PASSED, REDECODED, REPAIRED}
    record = result.as_dict()
    assert set(record) == {"restored", "faithful", "tokens", "spans", "chunks"}
    assert record["spans"][0] == {"start": result.spans[0].start, "end": result.spans[0].end,
                                  "text": result.spans[0].text, "source": result.spans[0].source}  # fmt: skip


def test_a_stream_is_read_lazily(pipeline, documents, one_thread):
    endless = itertools.cycle(documents[:2])  # never ends: results must come out before it does
    first = list(itertools.islice(pipeline.pipe(endless), 3))
    assert [r.source for r in first] == [documents[0], documents[1], documents[0]]


def test_without_faithfulness_nothing_is_checked(quick_model_dir, documents, one_thread):
    unchecked = restore.load(quick_model_dir, device="cpu", faithful=False)
    result = unchecked(documents[0])
    assert result.faithful is None and {c.outcome for c in result.chunks} == {None}


def test_the_engine_is_the_one_restore_infer_runs(pipeline, quick_model_dir, tmp_path, capsys, one_thread):
    from restore.cli import main

    source = tmp_path / "doc.txt"
    source.write_text("born 1879 .\n", encoding="utf-8")
    assert main(["infer", str(source), "-o", str(tmp_path / "out.txt"), "--model", str(quick_model_dir), "--device", "cpu"]) == 0
    engine = re.search(r"; engine: (.*?); \d+ generated tokens", capsys.readouterr().err).group(1)
    assert pipeline.engine == engine
    assert pipeline.path == Path(quick_model_dir) and pipeline.stats.documents > 0


def test_errors_are_restore_errors_or_type_errors(pipeline, tmp_path):
    with pytest.raises(restore.RestoreError, match="model directory does not exist"):
        restore.load(tmp_path / "missing")
    with pytest.raises(restore.RestoreError, match="--num-beams must be a positive integer"):
        restore.load(pipeline.path, num_beams=0)
    with pytest.raises(TypeError, match="documents must be str, not bytes"):
        pipeline([b"born 1879 ."])


def test_serve_without_its_extra_is_one_line(monkeypatch, capsys, quick_model_dir):
    from restore.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` now raises ImportError
    monkeypatch.delitem(sys.modules, "restore.serve", raising=False)
    assert main(["serve", "--model", str(quick_model_dir)]) == 1
    assert capsys.readouterr().err == "restore serve: error: restore serve needs FastAPI and uvicorn: pip install 'restore[serve]'\n"

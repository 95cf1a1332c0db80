"""Spans (restore.spans): every output word linked to the input token it realizes, or inserted;
the chunk outcomes the faithfulness driver records; ``restore infer --spans``."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from restore.chunking import ChunkConfig, document_chunks
from restore.corrupt import STOPWORDS, corrupt, corrupt_tokens, normalize_token
from restore.faithful import PASSED, REDECODED, REPAIRED, FaithfulStats, join_faithful, make_faithful
from restore.faithful_check import check
from restore.spans import chunk_spans, inserted_share, inserted_words, restored_spans

EVAL_PAIRS = Path(__file__).resolve().parents[1] / "data" / "eval" / "test-300.jsonl.xz"
QUOTES = {"``", "''"}  # a quote's direction comes from its context, not from the word alone


def assert_consistent(restored: str, source: str) -> None:
    """A faithful restoration: every input token realized exactly once, in order, by a word
    that corrupts to it; every other word is a stopword the model inserted."""
    tokens = source.split()
    spans = restored_spans(restored, source)
    assert [s.source for s in spans if s.source is not None] == list(range(len(tokens)))
    for span in spans:
        assert restored[span.start : span.end] == span.text
        if span.source is None:
            assert span.text.lower() in STOPWORDS, span
        elif tokens[span.source] in QUOTES:
            assert span.text in ('"', "``", "''"), span
        else:  # the word corrupted as a token (corrupt("U.S.") alone would split its sentence-final period)
            assert span.text.lower() not in STOPWORDS and normalize_token(span.text) == tokens[span.source], span
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    with lzma.open(EVAL_PAIRS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_original_texts_realize_their_sources_word_by_word(pairs):
    """The 300 fixed test-300 pairs: each original text against its corrupted source."""
    exact = [p for p in pairs if check(p["target"], p["source"])]
    assert len(exact) >= 295  # a few quote pairs do not round-trip (see data/eval/README.md)
    for pair in exact:
        assert_consistent(pair["target"], pair["source"])


def test_a_document_of_several_lines_indexes_the_whole_input():
    lines = ["Trotsky was born in 1879.", "## Early life\n\nHe grew up on a farm. He left in 1896."]
    source = "\n".join(corrupt(line) for line in lines)
    restored = "\n\n".join(lines)
    assert_consistent(restored, source)
    spans = restored_spans(restored, source)
    farm = next(s for s in spans if s.text == "farm")
    assert source.split()[farm.source] == "farm" and farm.source > len(corrupt(lines[0]).split())


def test_a_line_whose_sentences_punkt_reads_across_is_linked_paragraph_by_paragraph():
    # "in 1346." then a line that opens with punctuation: read as one text, "1346." stays whole
    source = "plagu reach crimea 1346 .\n, probabl carri flea"
    restored = "The plague reached Crimea in 1346.\n\n, probably carried by fleas"
    assert corrupt_tokens(restored) != source.split()
    assert_consistent(restored, source)


def test_an_unfaithful_output_links_only_words_that_corrupt_to_their_token():
    source = "trotski born 1879 kherson ."
    restored = "Trotsky was born in 1897 in Odessa."
    spans = restored_spans(restored, source)
    tokens = source.split()
    linked = {s.text: tokens[s.source] for s in spans if s.source is not None}
    assert linked == {"Trotsky": "trotski", "born": "born", ".": "."}
    assert [s.text for s in spans if s.inserted] == ["was", "in", "1897", "in", "Odessa"]
    assert inserted_share(spans) == (5, 7)


def test_empty_and_untouched_texts():
    assert restored_spans("", "") == [] and restored_spans("", "born 1879 .") == []
    spans = restored_spans("born 1879 .", "born 1879 .")  # the identity "restoration" realizes every token
    assert [s.source for s in spans] == [0, 1, 2]


def test_inserted_words_compares_outputs_with_references():
    sources = ["born 1879 .", "left russia ."]
    result = inserted_words(["Born in 1879.", "He left Russia."], sources, ["He was born in 1879.", "He left Russia."])
    assert (result["output_words"], result["reference_words"]) == (6, 8)  # punctuation is not counted
    assert result["output"] == pytest.approx(100 * 2 / 6) and result["reference"] == pytest.approx(100 * 4 / 8)


def test_chunk_spans_cover_the_input_tokens_in_order():
    source = "# # earli life born 1879 . father farmer .\n\nleft russia 1929 ."
    config = ChunkConfig(max_source_words=6)
    chunks, _ = document_chunks(source, config)
    spans = chunk_spans(source, config, [PASSED] * len(chunks))
    tokens = source.split()
    assert [" ".join(tokens[c.start : c.end]) for c in spans] == chunks
    assert [c.outcome for c in chunk_spans(source, config)] == [None] * len(chunks)
    with pytest.raises(ValueError):
        chunk_spans(source, config, [PASSED])


# --- the outcomes the faithfulness driver records ----------------------------------------------------
def test_make_faithful_records_each_chunks_outcome():
    sources = ["born 1879 .", "die 1940 .", "live pari ."]
    beams = {"die 1940 .": ["He died in 1940."], "live pari .": ["He lived in Rome."]}
    outcomes: list[str] = ["earlier"]
    make_faithful(sources, ["Born in 1879.", "He died in 1941.", "He lived in Rome."],
                  lambda failing: [beams[s] for s in failing], outcomes=outcomes)  # fmt: skip
    assert outcomes == ["earlier", PASSED, REDECODED, REPAIRED]  # extended, one per chunk


def test_join_faithful_marks_the_chunks_of_a_failing_junction():
    sources = ["plagu reach crimea 1346 .", ", probabl carri flea", "rat ."]
    outputs = ["The plague reached Crimea in 1346.", ", Probably carried by fleas", "Rats."]
    stats, repaired = FaithfulStats(), [PASSED] * 3
    join_faithful(sources, outputs, ["", " ", " "], None, None, stats, repaired)
    assert stats.junctions_repaired == 1 and repaired == [REPAIRED, REPAIRED, PASSED]
    good = "The plague reached Crimea in 1346. Then, probably carried by fleas"
    redecoded = [PASSED] * 3
    join_faithful(sources, outputs, ["", " ", " "], lambda spans: [[good] for _ in spans], None, None, redecoded)
    assert redecoded == [REDECODED, REDECODED, PASSED]


def test_the_restorer_reports_every_chunks_outcome(tiny_model_dir, one_thread):
    from restore.infer import Restorer

    config = ChunkConfig(max_source_words=16)
    documents = ["leon trotski born 1879 kherson . father farmer . " * 3, "", "left russia 1929 .\nreturn never ."]
    restorer = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful_beams=2)
    results = list(restorer.restore_many_checked(documents))
    assert [len(r.chunk_outcomes) for r in results] == [len(document_chunks(d, config)[0]) for d in documents]
    outcomes = [o for r in results for o in r.chunk_outcomes]
    stats = restorer.stats.faithful
    assert outcomes.count(REDECODED) == stats.fixed_by_beam and outcomes.count(REPAIRED) == stats.repaired
    assert outcomes.count(PASSED) == stats.chunks - stats.failed_greedy
    for document, result in zip(documents, results):
        assert_consistent(result.text, document)  # repaired to faithful: spans link every token
    unchecked = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful=False)
    assert [r.chunk_outcomes for r in unchecked.restore_many_checked(documents)] == [(), (), ()]


# --- restore infer --spans ---------------------------------------------------------------------------
def test_infer_writes_spans_and_chunks_into_jsonl_records(tmp_path, capsys, quick_model_dir, wiki_texts, one_thread):
    from restore.cli import main

    records = [{"id": k, "source": corrupt(text)} for k, text in enumerate(wiki_texts[:3])]
    records[1]["source"] += "\n" + corrupt("He left Russia in 1929.")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["infer", str(inputs), "-o", str(out), "--model", str(quick_model_dir), "--spans"]) == 0, capsys.readouterr().err
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in written] == [0, 1, 2]
    for record in written:
        assert record["faithful"] is True
        assert_consistent(record["restored"], record["source"])
        assert [s["text"] for s in record["spans"]] == [s.text for s in restored_spans(record["restored"], record["source"])]
        chunks = document_chunks(record["source"], ChunkConfig(max_source_words=16))[0]
        assert [c["end"] - c["start"] for c in record["chunks"]] == [len(c.split()) for c in chunks]
        assert {c["outcome"] for c in record["chunks"]} == {REPAIRED}  # the quick model ends every output at once

    plain = tmp_path / "plain.jsonl"
    assert main(["infer", str(inputs), "-o", str(plain), "--model", str(quick_model_dir)]) == 0
    assert [json.loads(line) for line in plain.read_text(encoding="utf-8").splitlines()] == [
        {k: v for k, v in r.items() if k not in ("spans", "chunks")} for r in written
    ]


def test_infer_spans_refuses_text_inputs_and_a_part_file_written_without_them(tmp_path, capsys, quick_model_dir):
    from restore.cli import main

    text = tmp_path / "doc.txt"
    text.write_text("born 1879 .\n", encoding="utf-8")
    assert main(["infer", str(text), "--model", str(quick_model_dir), "--spans"]) == 1
    assert capsys.readouterr().err == "restore infer: error: --spans needs .jsonl inputs (the spans go into each output record)\n"

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"source": "born 1879 ."}\n{"source": "left russia ."}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.part").write_text('{"source": "born 1879 .", "restored": "Born 1879.", "faithful": true}\n',
                                             encoding="utf-8")  # fmt: skip
    assert main(["infer", str(inputs), "-o", str(out), "--model", str(quick_model_dir), "--spans"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("restore infer: error: ") and "was written without --spans" in err and len(err.splitlines()) == 1

"""restore eval: sacreBLEU scores, faithfulness, baselines, data loading, report, CLI errors."""

from __future__ import annotations

import importlib.util
import json
import lzma
from pathlib import Path

import pytest
import sacrebleu

from restore.baselines import DictionaryRestorer, IdentityRestorer, make_baseline
from restore.chunking import ChunkConfig, chunk_text
from restore.cli import main
from restore.corrupt import corrupt
from restore.errors import RestoreError
from restore.data import article_pairs
from restore.evaluate import (
    EVAL_DIR,
    EvalData,
    content_f1,
    corpus_scores,
    faithfulness,
    group_documents,
    load_eval_data,
    roundtrip_exact,
    score_outputs,
)
from restore.lexicon import Lexicon

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def articles(wiki_texts) -> list[dict]:
    return [{"id": f"a{i}", "title": f"Article {i}", "text": t} for i, t in enumerate(wiki_texts)]


@pytest.fixture(scope="module")
def pair_records(articles) -> list[dict]:
    records = []
    for a in articles:
        sources, targets, _, _ = article_pairs(a["text"], ChunkConfig(max_source_words=48))
        records += [{"doc": a["id"], "chunk": i, "source": s, "target": t} for i, (s, t) in enumerate(zip(sources, targets))]
    return records


@pytest.fixture(scope="module")
def pair_data(pair_records) -> EvalData:
    return EvalData(
        "pairs.jsonl",
        "pairs",
        [r["source"] for r in pair_records],
        [r["target"] for r in pair_records],
        [r["doc"] for r in pair_records],
        [r["chunk"] for r in pair_records],
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def pairs_file(tmp_path, pair_records) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", pair_records)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- faithfulness metrics ------------------------------------------------------------------------
def test_roundtrip_and_content_f1_on_real_sentences(corrupt_vectors):
    for v in corrupt_vectors[:50]:
        assert roundtrip_exact(v["original"], corrupt(v["original"]))
        assert content_f1(v["original"], corrupt(v["original"])) == (1.0, 1.0, 1.0)
    source = corrupt("Trotsky was born in 1879 in Kherson.")
    assert not roundtrip_exact("Trotsky was born in 1897 in Kherson.", source)
    p, r, f1 = content_f1("Trotsky was born in 1897 in Kherson.", source)
    assert (p, r) == (0.75, 0.75) and f1 == pytest.approx(0.75)
    # punctuation does not count as content, but it does count for the exact round trip
    assert content_f1("Trotsky was born in 1879 in Kherson", source) == (1.0, 1.0, 1.0)
    assert not roundtrip_exact("Trotsky was born in 1879 in Kherson", source)


# --- scores -----------------------------------------------------------------------------------------
def test_perfect_system_scores_100(pair_data):
    scores = score_outputs(pair_data, pair_data.targets)
    assert scores["bleu"]["score"] == pytest.approx(100.0)
    assert scores["chrf"]["score"] == pytest.approx(100.0)
    assert scores["bleu_lowercase"]["score"] == pytest.approx(100.0)
    assert scores["faithfulness"]["roundtrip_exact"] == 100.0
    assert scores["faithfulness"]["content_f1"] == 100.0
    assert scores["documents"] == len(set(pair_data.docs))
    assert all(b["roundtrip_exact"] == 100.0 and b["bleu"] == pytest.approx(100.0) for b in scores["buckets"])


def test_identity_matches_independent_sacrebleu(pair_data, articles):
    scores = score_outputs(pair_data, list(IdentityRestorer().restore_many(pair_data.sources)))
    # documents rebuilt independently: the corrupted article against the original article
    hyps = [corrupt(a["text"]) for a in articles]
    refs = [a["text"] for a in articles]
    assert scores["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert scores["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert scores["bleu_lowercase"]["score"] == sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score
    assert scores["chunk_level_bleu"] == sacrebleu.corpus_bleu(pair_data.sources, [pair_data.targets]).score
    assert 0 < scores["bleu"]["score"] < 30
    assert scores["bleu"]["signature"] == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" + sacrebleu.__version__
    assert scores["bleu"]["line"].startswith("BLEU|nrefs:1|case:mixed|")
    assert scores["chrf"]["line"].startswith("chrF2|nrefs:1|case:mixed|")


def test_empty_or_mismatched_inputs_raise_restore_error(pair_data):
    with pytest.raises(RestoreError, match="empty"):
        corpus_scores([], [])
    with pytest.raises(RestoreError, match="must match"):
        corpus_scores(["a"], ["a", "b"])
    with pytest.raises(RestoreError, match="empty"):
        faithfulness([], [])
    with pytest.raises(RestoreError, match="must match"):
        score_outputs(pair_data, pair_data.targets[:-1])


def test_group_documents_only_joins_consecutive_chunks():
    data = EvalData("x", "pairs", ["a .", "b .", "c .", "d ."], ["A.", "B.", "C.", "D."],
                    ["d1", "d1", "d1", None], [0, 1, 3, None])
    assert group_documents(data, ["a", "b", "c", "d"]) == (["a b", "c", "d"], ["A. B.", "C.", "D."])


# --- baselines -------------------------------------------------------------------------------------
def test_dictionary_baseline_restores_surface_forms():
    lex = Lexicon.build(["The parties met in Paris. Trotsky was born in 1879."] * 3)
    restorer = DictionaryRestorer(lex)
    out = restorer.restore("parti met pari . # # trotski born 1879 . `` pari '' .")
    assert out == 'Parties met Paris.\n\n## Trotsky born 1879.\n\n"Paris".'
    assert list(restorer.restore_many(["born 1879 .", ""])) == ["Born 1879.", ""]
    assert roundtrip_exact(out, "parti met pari . # # trotski born 1879 . `` pari '' .")


def test_dictionary_beats_identity(pair_data, tiny_model_dir):
    identity = score_outputs(pair_data, list(make_baseline("identity").restore_many(pair_data.sources)))
    dictionary = score_outputs(
        pair_data, list(make_baseline("dictionary", tiny_model_dir).restore_many(pair_data.sources))
    )
    assert dictionary["bleu"]["score"] > identity["bleu"]["score"] + 5
    assert dictionary["faithfulness"]["roundtrip_exact"] > identity["faithfulness"]["roundtrip_exact"]


# --- data loading ----------------------------------------------------------------------------------
def test_load_pairs_articles_and_sources(tmp_path, pairs_file, articles, pair_records):
    pairs = load_eval_data(pairs_file, limit=7)
    assert pairs.kind == "pairs" and len(pairs) == 7 and pairs.targets == [r["target"] for r in pair_records[:7]]

    xz = tmp_path / "articles.jsonl.xz"
    xz.write_bytes(lzma.compress("".join(json.dumps(a) + "\n" for a in articles).encode()))
    from_articles = load_eval_data(xz)
    assert from_articles.kind == "articles"
    assert from_articles.sources == [r["source"] for r in pair_records]
    assert from_articles.docs == [r["doc"] for r in pair_records]

    text = tmp_path / "seeds.txt"
    text.write_text(corrupt(articles[0]["text"]) + "\n\n" + corrupt(articles[1]["text"]), encoding="utf-8")
    sources = load_eval_data(text, config=ChunkConfig(max_source_words=16))
    assert sources.kind == "sources" and sources.targets is None
    # each line is one document, cut into chunks like inference cuts it
    expected = [c for a in articles[:2] for c in chunk_text(corrupt(a["text"]), ChunkConfig(max_source_words=16))]
    assert sources.sources == expected and sources.docs[0] == "line1" and sources.docs[-1] == "line3"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"source": "a .", "target": "A."}\n{"source": "b ."}\n', "mixed"),
        ('{"source": "a ."}\n{"text": "A."}\n', "string field 'source'"),
        ('{"text": "A b."}\n{"text": "C.", "target": "C."}\n', ":2: expected a string field 'source'"),
        ("{not json\n", "invalid JSON"),
        ("", "no data"),
    ],
)
def test_bad_data_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RestoreError, match=message):
        load_eval_data(path)


# --- the fixed pair files in data/eval --------------------------------------------------------------
def test_committed_eval_pairs_are_consistent():
    full = [json.loads(line) for line in lzma.open(EVAL_DIR / "test.jsonl.xz", "rt", encoding="utf-8")]
    subset = [json.loads(line) for line in lzma.open(EVAL_DIR / "test-300.jsonl.xz", "rt", encoding="utf-8")]
    assert len(full) == 2264 and len(subset) == 300
    keys = [(r["doc"], r["chunk"]) for r in full]
    positions = [keys.index((r["doc"], r["chunk"])) for r in subset]
    assert positions == sorted(positions) and all(full[p] == r for p, r in zip(positions, subset))
    # still made by the current corruption: targets corrupt back to their sources
    # (2 of the 2264 full-file spans do not: a quote the tokenizer reads differently out of context)
    assert sum(corrupt(r["target"]) == r["source"] for r in subset) == 300


def test_committed_prose_test_is_an_excerpt_of_every_document():
    pairs = [json.loads(line) for line in lzma.open(EVAL_DIR / "prose-test.jsonl.xz", "rt", encoding="utf-8")]
    docs: dict[str, list[int]] = {}
    for r in pairs:
        docs.setdefault(r["doc"], []).append(r["chunk"])
    assert len(pairs) == 2401 and len(docs) == 154  # data/eval/README.md: all 154 documents of the prose test split
    assert all(len(c) <= 20 and c == list(range(c[0], c[0] + len(c))) for c in docs.values())  # one run each, at most 20
    assert all(corrupt(r["target"]) == r["source"] for r in pairs)  # made by the current corruption


def test_make_eval_pairs_is_deterministic(tmp_path, articles):
    spec = importlib.util.spec_from_file_location("make_eval_pairs", ROOT / "scripts" / "make_eval_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = write_jsonl(tmp_path / "articles.jsonl", articles)
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        argv = ["--articles", str(src), "--split", "t", "--subset", "20", "--seed", "1", "--out", str(tmp_path / run)]
        assert module.main(argv) == 0
    for name in ("t.jsonl.xz", "t-20.jsonl.xz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    subset = load_eval_data(tmp_path / "a" / "t-20.jsonl.xz")
    assert len(subset) == 20 and subset.kind == "pairs"


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_identity_report(tmp_path, capsys, pairs_file):
    report = tmp_path / "out.json"
    code, out, err = run_cli(capsys, "--baseline", "identity", "--data", str(pairs_file), "--report", str(report))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert lines[1].startswith("chrF2|nrefs:1|case:mixed|")
    assert lines[2].startswith("BLEU|nrefs:1|case:lc|")
    assert lines[3].startswith("faithfulness|") and "round-trip exact" in lines[3]
    assert lines[4].startswith("inserted words: ") and "(reference " in lines[4]  # restore.spans
    payload = json.loads(report.read_text(encoding="utf-8"))
    inserted = payload["scores"]["inserted_words"]
    assert inserted["line"] == lines[4] and inserted["reference"] > inserted["output"]  # the identity inserts nothing
    assert payload["system"] == "baseline:identity" and payload["data"]["kind"] == "pairs"
    assert payload["scores"]["bleu"]["line"] == lines[0] and payload["summary"] == lines
    assert payload["timings"]["items_per_s"] > 0 and payload["buckets"]
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outputs = (tmp_path / "out.outputs.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(outputs) == payload["data"]["items"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_several_domains_score_each_and_print_a_table(tmp_path, capsys, pairs_file, pair_records):
    other = write_jsonl(tmp_path / "other.jsonl", pair_records[: len(pair_records) // 2])
    singles = [run_cli(capsys, "--baseline", "identity", "--data", str(f)) for f in (pairs_file, other)]
    report = tmp_path / "r" / "all.json"
    code, out, err = run_cli(capsys, "--baseline", "identity", "--data", str(pairs_file), "--data", str(other), "--report", str(report))
    assert code == 0, err
    blocks = out.split("== ")
    assert blocks[1].startswith(f"pairs: {len(pair_records):,} pairs of ") and blocks[2].startswith("other: ")
    for block, (_, single_out, _) in zip(blocks[1:3], singles):  # each domain's lines as a run of its own prints them
        assert block.splitlines()[1:] == single_out.splitlines()
    table = blocks[3].splitlines()
    assert table[0].startswith("baseline:identity, per domain") and table[1].startswith("| domain | items | documents | BLEU |")
    bleu = json.loads((tmp_path / "r" / "all.pairs.json").read_text(encoding="utf-8"))["scores"]["bleu"]["score"]
    assert table[3].startswith(f"| pairs | {len(pair_records):,} pairs | ") and f" | {bleu:.2f} | " in table[3]
    assert table[4].startswith("| other | ") and len(table) == 5
    combined = json.loads(report.read_text(encoding="utf-8"))
    assert [d["domain"] for d in combined["domains"]] == ["pairs", "other"] and combined["table"] == table[1:]
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "all.json", *(f"all.{d}.{ext}" for d in ("pairs", "other") for ext in ("json", "png", "outputs.jsonl"))
    }


def test_cli_sources_only_reports_faithfulness(tmp_path, capsys, wiki_texts):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(corrupt(t) for t in wiki_texts[:3]) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "--baseline", "identity", "--data", str(seeds))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("faithfulness|")
    assert lines[1].startswith("inserted words: ") and "reference" not in lines[1]  # no references to compare with
    n_chunks = sum(len(chunk_text(corrupt(t), ChunkConfig())) for t in wiki_texts[:3])
    assert f"/{n_chunks} chunks of 3 documents)" in out


def test_cli_dictionary_with_lexicon_dir(capsys, pairs_file, tiny_model_dir):
    code, out, err = run_cli(capsys, "--baseline", "dictionary", "--lexicon", str(tiny_model_dir),
                             "--data", str(pairs_file), "--limit", "5")
    assert code == 0, err
    assert "5 pairs" in err and out.startswith("BLEU|")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "identity", "--data", "no/such/file.jsonl"], "no such file"),
        (["--baseline", "identity", "--data", "no-such-split"], "no such file or eval split"),
        (["--baseline", "identity", "--data", "PAIRS", "--limit", "0"], "--limit must be at least 1"),
        (["--baseline", "dictionary", "--lexicon", "no/such/dir", "--data", "PAIRS"], "lexicon directory does not exist"),
        (["--baseline", "identity", "--data", "PAIRS", "--report", "PAIRS/r.json"], "is not a directory"),
        (["--model", "no/such/model", "--data", "PAIRS"], "model directory does not exist"),
        (["--model", "no/such/model", "--data", "PAIRS", "--num-beams", "0"], "--num-beams must be a positive integer, got 0"),
        (["--model", "no/such/model", "--data", "PAIRS", "--batch-tokens", "0"], "--batch-tokens must be a positive integer"),
    ],
)
def test_cli_errors_are_one_line(capsys, pairs_file, argv, message):
    argv = [a.replace("PAIRS", str(pairs_file)) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("restore eval: error: ") and message in err


# --- a model (restore.infer) -------------------------------------------------------------------------
def test_cli_with_tiny_model(tmp_path, capsys, pair_records, tiny_model_dir, one_thread):
    # random weights generate up to the length limit: keep the inputs short
    short = sorted(pair_records, key=lambda r: len(r["source"].split()))[:3]
    data = write_jsonl(tmp_path / "short.jsonl", short)
    report = tmp_path / "model.json"
    code, out, err = run_cli(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--device", "cpu",
                             "--backend", "torch", "--report", str(report))  # fmt: skip
    assert code == 0, err
    payload = json.loads(report.read_text(encoding="utf-8"))
    assert payload["system"] == f"model:{tiny_model_dir.name}" and payload["timings"]["device"].startswith("cpu")
    assert payload["model"]["restore_json"]["chunking"]["max_source_words"] == 16
    records = [json.loads(line) for line in report.with_suffix(".outputs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["target"]) for r in records] == [(r["source"], r["target"]) for r in short]
    outputs, targets = [r["output"] for r in records], [r["target"] for r in short]
    # Faithfulness is on: every output corrupts back to its source, whatever the random model wrote.
    assert [corrupt(o) for o in outputs] == [r["source"] for r in short]
    faith = payload["scores"]["faithfulness"]
    assert (faith["roundtrip_exact"], faith["roundtrip_exact_count"], faith["content_f1"]) == (100.0, 3, 100.0)
    # The scores are sacreBLEU's on exactly these outputs.
    assert payload["scores"]["chunk_level_bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [targets]).score)
    chunks = sum(len(chunk_text(r["source"], ChunkConfig(max_source_words=16))) for r in short)
    assert payload["timings"]["restorer_stats"]["chunks"] == chunks


def test_unknown_flag_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--data", "test", "--beams", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: restore eval ") and "unrecognized arguments: --beams 2" in err


def test_lexicon_subcommand_builds_what_the_dictionary_baseline_loads(tmp_path, capsys, wiki_texts):
    articles = write_jsonl(tmp_path / "articles.jsonl", [{"text": t} for t in wiki_texts])
    out = tmp_path / "lexicon"
    assert main(["lexicon", "--articles", str(articles), "--limit", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("lexicon: ") and "stems from 3 articles" in err.splitlines()[-1]
    assert json.loads((out / "lexicon-info.json").read_text(encoding="utf-8"))["n_articles"] == 3
    assert make_baseline("dictionary", out).lexicon.forms == Lexicon.build(wiki_texts[:3]).forms
    assert main(["lexicon", "--articles", str(articles), "--limit", "0", "--out", str(out)]) == 1
    assert capsys.readouterr().err == "restore lexicon: error: --limit must be a positive integer, got 0\n"


# --- what a new user hit (issue 27) ------------------------------------------------------------------
def test_cli_report_creates_its_directories(tmp_path, capsys, pairs_file):
    report = tmp_path / "runs" / "eval" / "r.json"  # data/eval/README.md's command on a fresh clone
    code, _, err = run_cli(capsys, "--baseline", "identity", "--data", str(pairs_file), "--limit", "3", "--report", str(report))
    assert code == 0, err
    assert sorted(p.name for p in report.parent.iterdir()) == ["r.json", "r.outputs.jsonl", "r.png"]


def test_cli_names_the_engine_in_the_summary_and_the_report(tmp_path, capsys, pair_records, tiny_model_dir, one_thread):
    short = sorted(pair_records, key=lambda r: len(r["source"].split()))[:2]
    report = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "--model", str(tiny_model_dir), "--data", str(write_jsonl(tmp_path / "p.jsonl", short)),
                           "--device", "cpu", "--backend", "torch", "--report", str(report))  # fmt: skip
    assert code == 0, err
    payload = json.loads(report.read_text(encoding="utf-8"))
    engine = payload["engine"]
    assert {k: engine[k] for k in ("backend", "compute_type", "device", "threads")} == {
        "backend": "torch", "compute_type": "float32", "device": "cpu", "threads": 1,
    }  # fmt: skip
    assert engine["description"].startswith("torch float32, cpu (1 thread)")  # as restore infer's summary names it
    assert f"; engine: {engine['description']}\n" in err and payload["timings"]["engine"] == engine["description"]
    assert (payload["settings"]["backend"], payload["settings"]["compute_type"]) == ("torch", "auto")
    records = [json.loads(line) for line in report.with_suffix(".outputs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["roundtrip_exact"] for r in records] == [True, True]  # faithfulness per item, in the outputs


def test_a_baseline_names_its_engine(tmp_path, capsys, pairs_file):
    report = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "--baseline", "identity", "--data", str(pairs_file), "--limit", "3", "--report", str(report))
    assert code == 0 and "; engine: python baseline, cpu, 1 thread\n" in err, err
    assert json.loads(report.read_text(encoding="utf-8"))["engine"]["backend"] == "python"


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, capsys, pairs_file, wiki_texts):
    # Under capsys stderr is a file, as in a log: each command writes its summary lines only.
    articles = write_jsonl(tmp_path / "articles.jsonl", [{"text": t} for t in wiki_texts])
    assert main(["lexicon", "--articles", str(articles), "--limit", "3", "--out", str(tmp_path / "lex")]) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lexicon: ") and "\r" not in err, err
    code, _, err = run_cli(capsys, "--baseline", "identity", "--data", str(pairs_file))
    assert code == 0 and len(err.splitlines()) == 1 and err.startswith("eval: ") and "\r" not in err, err


def test_progress_bars_are_drawn_on_a_terminal(monkeypatch):
    import io

    from restore.progress import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress(range(3), desc="items")) == [0, 1, 2]
    assert "items: 100%" in terminal.getvalue()
    assert list(progress(range(3), desc="small", show=False)) == [0, 1, 2] and "small" not in terminal.getvalue()


def test_a_directory_without_a_lexicon_says_how_to_build_one(tmp_path, capsys, pairs_file):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "--baseline", "dictionary", "--lexicon", str(tmp_path / "empty"), "--data", str(pairs_file))
    assert code == 1 and "restore lexicon --articles FILE --out DIR" in err and "restore train" not in err, err

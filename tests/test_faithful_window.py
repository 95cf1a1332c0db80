"""Faithfulness at speed (restore.faithful_window, the cached round trip): the same texts and counts
as the chunk-by-chunk, line-by-line path, in this process or in worker processes."""

from __future__ import annotations

import lzma
import json
import random
import re
from pathlib import Path

import pytest

from restore.chunking import CHUNK_JOINER, LINE_JOINER, tidy_spaces
from restore.corrupt import corrupt, corrupt_sentence_cached, corrupt_tokens, tokenize_words, tokenize_words_cached
from restore.faithful import FaithfulStats, join_faithful, make_faithful
from restore.faithful_check import check, roundtrip
from restore.faithful_window import CheckPool, document_lines, faithful_documents
from restore.lexicon import Lexicon
from restore.surface_forms import SurfaceForms
from test_faithful import _perturb  # noqa: E402 (the deliberately broken "model")

TEST_PAIRS = Path(__file__).resolve().parents[1] / "data" / "eval" / "test.jsonl.xz"


def _clear_caches() -> None:
    for cached in (roundtrip, corrupt_sentence_cached, tokenize_words_cached):
        cached.cache_clear()


@pytest.fixture(scope="module")
def test_pairs() -> list[dict]:
    with lzma.open(TEST_PAIRS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def model_like_outputs(test_pairs) -> list[str]:
    """What a model writes for the test split's sources: its targets, many of them broken."""
    rng = random.Random(2)
    targets = [p["target"] for p in test_pairs]
    vocab = sorted({w for t in targets[:300] for w in re.findall(r"[A-Za-z]+", t)})
    return [_perturb(t, rng, vocab) if rng.random() < 0.4 else t for t in targets]


# --- the cached round trip ------------------------------------------------------------------------
def test_cached_roundtrip_equals_corruption_on_the_vectors(corrupt_vectors):
    _clear_caches()
    originals = [v["original"] for v in corrupt_vectors]
    # the sentences first alone, then in the texts they came from, then joined with their
    # neighbours: a cached sentence must not stand for one that Punkt splits differently in context
    texts = originals + [" ".join(originals[i : i + 3]) for i in range(0, len(originals), 2)]
    for text in texts:
        assert list(roundtrip(text)) == corrupt_tokens(text), text
    assert [" ".join(roundtrip(v["original"])) for v in corrupt_vectors] == [v["corrupted"] for v in corrupt_vectors]
    assert roundtrip.cache_info().hits > 0 and corrupt_sentence_cached.cache_info().hits > 0


def test_cached_roundtrip_equals_corruption_on_the_test_split(test_pairs, model_like_outputs):
    _clear_caches()
    targets = [p["target"] for p in test_pairs]
    texts = model_like_outputs + targets + [a + " " + b for a, b in zip(targets[:300], targets[1:300])]
    assert [roundtrip(t) for t in texts] == [tuple(corrupt_tokens(t)) for t in texts]
    assert all(check(p["target"], corrupt(p["target"])) for p in test_pairs[:200])
    sentences = [s for t in targets[:200] for s in re.split(r"(?<=\.) ", t)]
    assert [tokenize_words_cached(s) for s in sentences] == [tuple(tokenize_words(s)) for s in sentences]


# --- the window driver vs chunk by chunk, line by line --------------------------------------------
@pytest.fixture(scope="module")
def window(test_pairs, model_like_outputs):
    """Documents of 12 test chunks each, in lines of a few chunks, their model-like outputs, a lexicon
    and the "right" restorations (targets, also of neighbours joined, for the junctions' beams)."""
    rng = random.Random(3)
    plans, outputs, targets = [], [], {p["source"]: p["target"] for p in test_pairs}
    for k in range(0, 360, 12):
        chunks = [p["source"] for p in test_pairs[k : k + 12]]
        plans.append((chunks, [""] + [rng.choice([CHUNK_JOINER, CHUNK_JOINER, LINE_JOINER]) for _ in chunks[1:]]))
        outputs += model_like_outputs[k : k + 12]
        for a, b in zip(chunks, chunks[1:]):
            targets[a + " " + b] = targets[a] + " " + targets[b]
    lexicon = Lexicon.build([p["target"] for p in test_pairs[:600]])
    return plans, outputs, lexicon, targets


def _beams(targets: dict, calls: list):
    def redecode(sources: list[str]) -> list[list[str]]:
        calls.append(list(sources))
        # a beam that sometimes holds the target, sometimes only garbage (as a real one does)
        return [["Nothing here.", targets[s]] if s in targets and len(s) % 3 else ["Nothing.", s] for s in sources]

    return redecode


def _chunk_by_chunk(plans, outputs, lexicon, targets) -> tuple[list[tuple[str, int]], FaithfulStats, int, list[str]]:
    """What restore.infer did before the window driver: make_faithful, then join_faithful per line
    (texts, counts, re-decode calls and each chunk's outcome)."""
    stats, calls, outcomes = FaithfulStats(), [], []
    chunks = [c for cs, _ in plans for c in cs]
    forms = SurfaceForms(lexicon)
    settled = iter(make_faithful(chunks, outputs, _beams(targets, calls), forms, stats, outcomes))
    restored, at = [], 0
    for cs, joiners in plans:
        doc = [tidy_spaces(next(settled)) for _ in cs]
        before, parts = stats.unfaithful_lines, []
        for line in document_lines(cs, joiners):
            decided = [outcomes[at + k] for k in line]
            text = join_faithful([cs[k] for k in line], [doc[k] for k in line], [""] + [joiners[k] for k in line[1:]],
                                 _beams(targets, calls), forms, stats, decided)  # fmt: skip
            for k, outcome in zip(line, decided):
                outcomes[at + k] = outcome
            parts.append(joiners[line[0]] + text)
        restored.append(("".join(parts), stats.unfaithful_lines - before))
        at += len(cs)
    return restored, stats, len(calls), outcomes


@pytest.mark.parametrize("workers", [0, 2])
def test_window_equals_chunk_by_chunk(window, workers):
    plans, outputs, lexicon, targets = window
    expected, expected_stats, _, expected_outcomes = _chunk_by_chunk(plans, outputs, lexicon, targets)
    assert expected_stats.failed_greedy > 20 and expected_stats.failed_junctions > 0  # both halves are exercised
    assert expected_stats.fixed_by_beam > 0 and expected_stats.repaired > 0
    _clear_caches()
    pool = CheckPool(workers, lexicon) if workers else None
    try:
        stats, calls = FaithfulStats(), []
        documents = faithful_documents(plans, outputs, _beams(targets, calls), SurfaceForms(lexicon), stats, pool)
    finally:
        if pool:
            pool.close()
    assert [(d.text, d.unfaithful_lines) for d in documents] == expected
    assert stats == expected_stats
    assert len(calls) == 2  # the window's failing chunks in one call, its failing junctions' spans in another
    outcomes = [o.how for d in documents for o in d.chunks]
    # the same outcomes as make_faithful, then join_faithful per line (a junction's marks included)
    assert outcomes == expected_outcomes and {"passed", "redecoded", "repaired"} <= set(outcomes)
    assert outcomes.count("redecoded") >= stats.fixed_by_beam and outcomes.count("repaired") >= stats.repaired


def test_window_without_failures_calls_nothing():
    plans = [(["born 1879 .", "die 1940 ."], ["", "\n\n"])]
    never = lambda sources: pytest.fail("nothing to re-decode")  # noqa: E731
    stats = FaithfulStats()
    documents = faithful_documents(plans, ["Born in 1879.", "Died in 1940."], never, None, stats)
    assert [d.text for d in documents] == ["Born in 1879.\n\nDied in 1940."]
    assert stats == FaithfulStats(chunks=2) and [o.how for o in documents[0].chunks] == ["passed", "passed"]
    with pytest.raises(ValueError, match="1 outputs for 2 chunks"):
        faithful_documents(plans, ["Born in 1879."])


def test_restorer_with_check_workers_equals_inline(tiny_model_dir, wiki_texts, one_thread):
    from restore.infer import Restorer

    documents = [" ".join(corrupt(text).split()[:100]) for text in wiki_texts[:2]]  # a few windows of 8 chunks
    runs = []
    for workers in (0, 2):
        restorer = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful_beams=2, check_workers=workers, window_chunks=8)
        try:
            runs.append((list(restorer.restore_many_checked(documents)), restorer.stats))
            assert (restorer.check_pool() is None) == (workers == 0)
        finally:
            restorer.close()
    (inline, inline_stats), (pooled, pooled_stats) = runs
    assert pooled == inline and pooled_stats.faithful == inline_stats.faithful
    assert (pooled_stats.chunks, pooled_stats.redecoded) == (inline_stats.chunks, inline_stats.redecoded)
    assert inline_stats.faithful.failed_greedy > 0

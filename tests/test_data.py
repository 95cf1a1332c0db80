"""Training pairs: aligned with the original text, chunked like inference, prepared in parallel and cached."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import pytest

from restore.chunking import ChunkConfig, chunk_text, unit_starts
from restore.config import load_config_dict
from restore.corrupt import corrupt, corrupt_sentence, sentence_spans
from restore.data import (
    ArticleSelection,
    TokenizedPairs,
    article_pairs,
    eval_indices,
    prepare_pairs,
    resolve_files,
    split_selections,
    token_batches,
)
from restore.errors import RestoreError


def write_jsonl(path: Path, texts: list[str], xz: bool = False) -> Path:
    lines = "".join(json.dumps({"id": i, "title": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    if xz:
        with lzma.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def articles_file(tmp_path_factory, wiki_texts) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "wiki.jsonl.xz", wiki_texts, xz=True)


# --- one article -----------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [48, 16, 8])
def test_targets_are_consecutive_spans_whose_corruption_is_the_source(wiki_texts, limit):
    for text in wiki_texts:
        sources, targets, units, dropped = article_pairs(text, limit)
        assert len(sources) == len(targets) and units >= len(sources)
        position = 0
        for source, target in zip(sources, targets):
            assert 0 < len(source.split()) <= limit
            at = text.index(target, position)  # in order, never overlapping
            position = at + len(target)
            assert target == target.strip()
            assert corrupt(target) == source
            if "# #" in source:
                assert source.startswith("# #")  # a heading opens its chunk
        if not dropped:
            assert " ".join(sources) == corrupt(text)  # nothing lost between chunks


def test_pairs_follow_the_inference_chunk_rule_where_cuts_are_sentence_starts(wiki_texts):
    checked = 0
    for text in wiki_texts:
        offsets, tokens = [], []
        for s, e in sentence_spans(text):
            offsets.append(len(tokens))
            tokens.extend(corrupt_sentence(text[s:e]))
        sources, _, _, dropped = article_pairs(text, 48)
        if dropped or not set(unit_starts(tokens)) <= set(offsets):
            continue  # training ignores cuts inside a Punkt sentence; inference cannot see them
        assert chunk_text(" ".join(tokens), ChunkConfig(48)) == sources
        checked += 1
    assert checked >= len(wiki_texts) // 2


def test_over_long_units_are_dropped_and_counted():
    text = "Short one. " + " ".join(f"word{i}" for i in range(30)) + ". Another short one. And more."
    sources, targets, units, dropped = article_pairs(text, 8)
    assert (units, dropped) == (4, 1)
    # No chunk spans the dropped unit: the pieces before and after it stay apart.
    assert sources == ["short one .", "anoth short one . ."]
    assert targets == ["Short one.", "Another short one. And more."]


def test_heading_opens_a_chunk_and_empty_articles_give_nothing():
    text = "He was born. He lived.\n\n## Career\n\nHe worked. He died."
    sources, targets, _, _ = article_pairs(text, 48)
    assert sources == ["born . live .", "# # career work . die ."]
    assert targets[1] == "## Career\n\nHe worked. He died."
    assert article_pairs("", 48) == ([], [], 0, 0)
    assert article_pairs("   \n\n  ", 48)[0] == []
    assert article_pairs("It is the one.", 48)[0] == ["one ."]


# --- preparation and caching -----------------------------------------------------------------
def test_prepare_matches_article_pairs_and_is_cached(tmp_path, articles_file, wiki_texts):
    selection = ArticleSelection((str(articles_file),))
    first = prepare_pairs(selection, ChunkConfig(32), str(tmp_path / "cache"), num_proc=1)
    expected = [pair for t in wiki_texts for pair in zip(*article_pairs(t, 32)[:2])]
    assert list(zip(first.dataset["source"], first.dataset["target"])) == expected
    assert first.stats["articles"] == len(wiki_texts) and first.stats["pairs"] == len(expected)
    assert not first.stats["cached"]
    again = prepare_pairs(selection, ChunkConfig(32), str(tmp_path / "cache"), num_proc=1)
    assert again.stats["cached"] and again.dataset["target"] == first.dataset["target"]
    assert len(list((tmp_path / "cache").glob("pairs-*"))) == 1
    other = prepare_pairs(selection, ChunkConfig(16), str(tmp_path / "cache"), num_proc=1)
    assert not other.stats["cached"] and len(other) != len(first)  # chunking is part of the key


def test_parallel_preparation_gives_the_same_pairs(tmp_path, articles_file):
    selection = ArticleSelection((str(articles_file),))
    one = prepare_pairs(selection, ChunkConfig(48), str(tmp_path / "a"), num_proc=1)
    two = prepare_pairs(selection, ChunkConfig(48), str(tmp_path / "b"), num_proc=2)
    assert two.stats["num_proc"] == 2
    assert one.dataset["source"] == two.dataset["source"] and one.dataset["target"] == two.dataset["target"]
    assert one.stats["units"] == two.stats["units"]


def test_selections_cap_and_hold_out_articles(tmp_path, articles_file, wiki_texts):
    raw = {"data": {"train_files": [str(articles_file)], "max_train_articles": 10, "dev_holdout": 3}}
    train_sel, dev_sel = split_selections(load_config_dict(raw).data)
    train = prepare_pairs(train_sel, ChunkConfig(48), str(tmp_path), num_proc=1)
    dev = prepare_pairs(dev_sel, ChunkConfig(48), str(tmp_path), num_proc=1)
    assert (train.stats["articles"], dev.stats["articles"]) == (7, 3)
    assert dev.dataset["target"][0] in wiki_texts[7]


def test_text_files_and_other_fields(tmp_path, wiki_texts):
    (tmp_path / "a.txt").write_text(wiki_texts[0], encoding="utf-8")
    pairs = prepare_pairs(ArticleSelection((str(tmp_path / "a.txt"),)), ChunkConfig(48), str(tmp_path / "c"))
    assert pairs.stats["articles"] == 1 and list(pairs.dataset["source"]) == article_pairs(wiki_texts[0], 48)[0]
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": wiki_texts[1]}) + "\n", encoding="utf-8")
    pairs = prepare_pairs(ArticleSelection((str(tmp_path / "b.jsonl"),), text_field="body"), ChunkConfig(48), str(tmp_path / "c"))
    assert pairs.stats["articles"] == 1


def test_file_errors_are_one_clear_line(tmp_path):
    with pytest.raises(RestoreError, match=r"^data.train_files: no such file: .*nope.jsonl$"):
        resolve_files([str(tmp_path / "nope.jsonl")], "data.train_files")
    with pytest.raises(RestoreError, match="no file matches"):
        resolve_files([str(tmp_path / "*.jsonl")], "data.train_files")
    with pytest.raises(RestoreError, match="is a directory"):
        resolve_files([str(tmp_path)], "data.train_files")
    cases = {
        "empty.jsonl": ("", "no articles"),
        "blank.jsonl": ("\n\n", "no articles"),
        "bad.jsonl": ('{"text": "a"}\n{oops\n', "bad.jsonl: cannot read"),
        "notext.jsonl": ('{"title": "x"}\n', "records have no 'text' field"),
        "number.jsonl": ('{"text": 5}\n', "field 'text' is not text"),
        "data.csv": ("text\nx\n", "unsupported data file type"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(RestoreError, match=message) as e:
            prepare_pairs(ArticleSelection((str(tmp_path / name),)), ChunkConfig(48), str(tmp_path / "cache"))
        assert "\n" not in str(e.value)


# --- batches ---------------------------------------------------------------------------------
def test_token_batches_cover_every_pair_within_the_budget_and_reshuffle_per_epoch():
    lengths = np.random.default_rng(0).integers(3, 60, size=500)
    epoch0 = token_batches(lengths, 256, seed=1, epoch=0)
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(500))
    assert all(len(b) * lengths[b].max() <= 256 for b in epoch0)
    assert [b.tolist() for b in epoch0] == [b.tolist() for b in token_batches(lengths, 256, seed=1, epoch=0)]
    assert [b.tolist() for b in epoch0] != [b.tolist() for b in token_batches(lengths, 256, seed=1, epoch=1)]
    assert token_batches(np.array([300, 2]), 256, 0, 0)  # a pair over the budget goes alone
    assert eval_indices(100, 5).tolist() == [0, 25, 50, 74, 99]


class _Tok:
    """A stand-in tokenizer: one id per whitespace word plus </s> (id 3)."""

    def __call__(self, texts, verbose=False):
        return {"input_ids": [[10 + len(w) for w in t.split()] + [3] for t in texts]}


def test_tokenized_pairs_collate_pads_and_shifts(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"source": ["a bb", "ccc", "x " * 20], "target": ["A", "Bb Cc", "y"]})
    pairs = TokenizedPairs.encode(ds, _Tok(), max_length=10)
    assert len(pairs) == 2 and pairs.dropped == 1
    batch = pairs.collate([0, 1], pad_id=0, decoder_start_id=2)
    assert batch["input_ids"].tolist() == [[11, 12, 3], [13, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[11, 3, -100], [12, 12, 3]]
    assert batch["decoder_input_ids"].tolist() == [[2, 11, 0], [2, 12, 12]]

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
from restore.data import ArticleSelection, article_pairs, build_lexicon, corpus_selections, prepare_pairs, resolve_files, sample_indices
from restore.token_ids import TokenizedPairs, encode_pairs, eval_indices, token_batches
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
        sources, targets, units, dropped = article_pairs(text, ChunkConfig(max_source_words=limit))
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
        sources, _, _, dropped = article_pairs(text, ChunkConfig(max_source_words=48))
        if dropped or not set(unit_starts(tokens)) <= set(offsets):
            continue  # training ignores cuts inside a Punkt sentence; inference cannot see them
        assert chunk_text(" ".join(tokens), ChunkConfig(48)) == sources
        checked += 1
    assert checked >= len(wiki_texts) // 2


def test_over_long_units_are_dropped_and_counted():
    text = "Short one. " + " ".join(f"word{i}" for i in range(30)) + ". Another short one. And more."
    sources, targets, units, dropped = article_pairs(text, ChunkConfig(max_source_words=8))
    assert (units, dropped) == (4, 1)
    # No chunk spans the dropped unit: the pieces before and after it stay apart.
    assert sources == ["short one .", "anoth short one . ."]
    assert targets == ["Short one.", "Another short one. And more."]


def test_heading_opens_a_chunk_and_empty_articles_give_nothing():
    text = "He was born. He lived.\n\n## Career\n\nHe worked. He died."
    sources, targets, _, _ = article_pairs(text, ChunkConfig(max_source_words=48))
    assert sources == ["born . live .", "# # career work . die ."]
    assert targets[1] == "## Career\n\nHe worked. He died."
    assert article_pairs("", ChunkConfig(max_source_words=48)) == ([], [], 0, 0)
    assert article_pairs("   \n\n  ", ChunkConfig(max_source_words=48))[0] == []
    assert article_pairs("It is the one.", ChunkConfig(max_source_words=48))[0] == ["one ."]


# --- preparation and caching -----------------------------------------------------------------
def test_prepare_matches_article_pairs_and_is_cached(tmp_path, articles_file, wiki_texts):
    selection = ArticleSelection((str(articles_file),))
    first = prepare_pairs(selection, ChunkConfig(32), str(tmp_path / "cache"), num_proc=1)
    expected = [pair for t in wiki_texts for pair in zip(*article_pairs(t, ChunkConfig(max_source_words=32))[:2])]
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
    (corpus,) = corpus_selections(load_config_dict(raw).data)
    train_sel, dev_sel = corpus.train, corpus.dev
    train = prepare_pairs(train_sel, ChunkConfig(48), str(tmp_path), num_proc=1)
    dev = prepare_pairs(dev_sel, ChunkConfig(48), str(tmp_path), num_proc=1)
    assert (train.stats["articles"], dev.stats["articles"]) == (7, 3)
    assert dev.dataset["target"][0] in wiki_texts[7]


def test_text_files_and_other_fields(tmp_path, wiki_texts):
    (tmp_path / "a.txt").write_text(wiki_texts[0], encoding="utf-8")
    pairs = prepare_pairs(ArticleSelection((str(tmp_path / "a.txt"),)), ChunkConfig(48), str(tmp_path / "c"))
    assert pairs.stats["articles"] == 1 and list(pairs.dataset["source"]) == article_pairs(wiki_texts[0], ChunkConfig(max_source_words=48))[0]
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


def test_tokenized_pairs_collate_pads_to_multiples_of_8_and_shifts(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"source": ["a bb", "ccc", "x " * 20], "target": ["A", "Bb Cc", "y"]})
    pairs = TokenizedPairs.encode(ds, _Tok(), max_length=10)
    assert len(pairs) == 2 and pairs.dropped == 1
    exact = pairs.collate([0, 1], pad_id=0, decoder_start_id=2, pad_multiple=1)
    assert exact["input_ids"].tolist() == [[11, 12, 3], [13, 3, 0]]
    assert exact["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert exact["labels"].tolist() == [[11, 3, -100], [12, 12, 3]]
    assert exact["decoder_input_ids"].tolist() == [[2, 11, 0], [2, 12, 12]]
    padded = pairs.collate([0, 1], pad_id=0, decoder_start_id=2)  # lengths rounded up to 8: shapes repeat
    for name, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", -100), ("decoder_input_ids", 0)):
        assert padded[name].shape == (2, 8)
        assert padded[name][:, :3].tolist() == exact[name].tolist() and (padded[name][:, 3:] == fill).all()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, articles_file):
    cache = tmp_path_factory.mktemp("prepared")
    return prepare_pairs(ArticleSelection((str(articles_file),)), ChunkConfig(48), str(cache), num_proc=1), cache


@pytest.fixture(scope="module")
def tokenizer(wiki_texts):
    from restore.tokenizer import train_tokenizer

    return train_tokenizer(wiki_texts + [corrupt(t) for t in wiki_texts], vocab_size=600)


def test_encoding_in_parallel_equals_one_process_and_is_cached_by_tokenizer_content(prepared, tokenizer, tmp_path):
    from restore.tokenizer import train_tokenizer

    pairs, _ = prepared
    cache = tmp_path / "ids"
    serial = TokenizedPairs.encode(pairs.dataset, tokenizer, max_length=40, num_proc=1)
    assert serial.dropped > 0 and len(serial) + serial.dropped == len(pairs)  # long pairs are left out
    first = 0
    for i, (source, target) in enumerate(zip(pairs.dataset["source"], pairs.dataset["target"])):
        s, t = tokenizer(source)["input_ids"], tokenizer(target)["input_ids"]
        if max(len(s), len(t)) <= 40:
            assert serial.src[serial.src_off[first] : serial.src_off[first + 1]].tolist() == s
            assert serial.tgt[serial.tgt_off[first] : serial.tgt_off[first + 1]].tolist() == t
            first += 1
    assert first == len(serial)

    def same(a, b):
        return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in TokenizedPairs.ARRAYS) and a.dropped == b.dropped

    many = encode_pairs(pairs, tokenizer, 40, str(cache), num_proc=2)
    assert same(many, serial)
    [entry] = cache.glob("ids-*")
    assert entry.name.startswith(f"ids-{pairs.key}-") and entry.name.endswith("-40")
    np.save(entry / "src.npy", np.zeros(1, dtype=np.int32))  # proves the next call reads the cache
    assert len(encode_pairs(pairs, tokenizer, 40, str(cache)).src) == 1
    other = train_tokenizer(list(pairs.dataset["target"]), vocab_size=500)
    assert same(encode_pairs(pairs, other, 40, str(cache)), TokenizedPairs.encode(pairs.dataset, other, 40, num_proc=1))
    assert len(list(cache.glob("ids-*"))) == 2 and not list(cache.glob("*.tmp-*"))


def test_lexicon_counted_in_parallel_equals_the_lexicon_of_the_sample(prepared, tmp_path):
    from restore.lexicon import Lexicon

    pairs, _ = prepared
    sample = [pairs.dataset["target"][i] for i in sample_indices(len(pairs), 60, 5)]
    expected = Lexicon.build(sample, min_count=2, max_entries=300)
    assert len(expected.forms) > 50
    assert build_lexicon(pairs, 60, 5, 2, 300, str(tmp_path), num_proc=2) == expected
    assert len(list(tmp_path.glob("lexicon-*"))) == 1
    assert build_lexicon(pairs, 60, 5, 2, 300, str(tmp_path), num_proc=1) == expected  # from the cache

"""Which words do the restorations miss, add or change, by class? (issue 22: outputs are too short)

Reads the outputs file that ``restore eval --report R.json`` writes beside its report
(``R.outputs.jsonl``: source, output, target per pair), splits output and target into words
with the preprocessing's own tokenizer (Punkt + Treebank, :mod:`restore.corrupt`), aligns the
two word sequences (:class:`difflib.SequenceMatcher` on lowercased words, then position by
position inside each differing block) and counts every difference by class:

- ``casing``: the same word with other letter case (``the``/``The``);
- ``inflection``: another form of the same Porter stem (``receives``/``received``);
- ``article``, ``auxiliary``, ``preposition``, ``pronoun``, ``conjunction``, ``other stopword``:
  function words the preprocessing dropped (NLTK's stopwords), by grammatical class;
- ``punctuation``; ``content``: any other word.

A target word with no counterpart is *missing*, an output word with none is *extra*, a pair
that differs is *changed* (counted under the target word's class). ``missing - extra`` per class
says where the output's length shortfall (BLEU's brevity penalty) comes from.

    python -m restore eval --data test --report runs/eval/test.json
    python scripts/error_classes.py runs/eval/test.outputs.jsonl [--markdown]
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore.corrupt import STOPWORDS, split_sentences, stem, tokenize_words  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.textio import parse_jsonl, read_data_text  # noqa: E402

ARTICLES = frozenset("a an the".split())
AUXILIARIES = frozenset(
    "am is are was were be been being have has had having do does did doing "
    "will would shall should can could may might must ought".split()
)
PREPOSITIONS = frozenset(
    "of in on at by for with from to into onto upon about above below under over between among through "
    "during before after against within without across along around behind beyond near off out up down "
    "since until till toward towards via per than".split()
)
PRONOUNS = frozenset(
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself "
    "she her hers herself it its itself they them their theirs themselves this that these those who whom "
    "whose which what".split()
)
CONJUNCTIONS = frozenset("and or but nor so yet as because while whereas although though if unless whether".split())
CLASSES = ("article", "auxiliary", "preposition", "pronoun", "conjunction", "other stopword", "content",
           "inflection", "casing", "punctuation")  # fmt: skip


def words(text: str) -> list[str]:
    """The words of ``text`` as the preprocessing splits them.

    >>> words("He received the news, then left.")
    ['He', 'received', 'the', 'news', ',', 'then', 'left', '.']
    """
    return [w for sentence in split_sentences(text) for w in tokenize_words(sentence)]


def word_class(word: str) -> str:
    """The class of a word on its own (casing and inflection are differences, not classes).

    >>> [word_class(w) for w in ("The", "was", "of", "they", "and", "very", ",", "Kherson")]
    ['article', 'auxiliary', 'preposition', 'pronoun', 'conjunction', 'other stopword', 'punctuation', 'content']
    """
    lower = word.lower()
    if not any(c.isalnum() for c in word):
        return "punctuation"
    for name, members in (("article", ARTICLES), ("auxiliary", AUXILIARIES), ("preposition", PREPOSITIONS),
                          ("pronoun", PRONOUNS), ("conjunction", CONJUNCTIONS)):  # fmt: skip
        if lower in members:
            return name
    return "other stopword" if lower in STOPWORDS else "content"


def differences(output: str, target: str) -> Counter:
    """Counts of ``(kind, class)``: kind is ``missing``, ``extra`` or ``changed``.

    >>> d = differences("Trotsky receive news in Kherson.", "Trotsky received the news in Kherson.")
    >>> sorted(d.items())
    [(('changed', 'inflection'), 1), (('missing', 'article'), 1)]
    >>> sorted(differences("the plague reached crimea.", "The plague reached Crimea.").items())
    [(('changed', 'casing'), 2)]
    """
    out, ref = words(output), words(target)
    counts: Counter = Counter()
    matcher = difflib.SequenceMatcher(None, [w.lower() for w in out], [w.lower() for w in ref], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            counts.update(("changed", "casing") for o, r in zip(out[i1:i2], ref[j1:j2]) if o != r)
            continue
        o_block, r_block = out[i1:i2], ref[j1:j2]
        # Inside a differing block, pair words of the same stem first (inflections), then by position.
        paired_o, paired_r = set(), set()
        for a, o in enumerate(o_block):
            for b, r in enumerate(r_block):
                if b not in paired_r and any(c.isalnum() for c in o) and stem(o) == stem(r):
                    counts["changed", "inflection"] += 1
                    paired_o.add(a), paired_r.add(b)
                    break
        rest_o = [o for a, o in enumerate(o_block) if a not in paired_o]
        rest_r = [r for b, r in enumerate(r_block) if b not in paired_r]
        for o, r in zip(rest_o, rest_r):
            counts["changed", word_class(r)] += 1
        for r in rest_r[len(rest_o) :]:
            counts["missing", word_class(r)] += 1
        for o in rest_o[len(rest_r) :]:
            counts["extra", word_class(o)] += 1
    return counts


def read_outputs(path: Path) -> list[dict]:
    """The records of an outputs file (``.jsonl``, or ``.jsonl.xz``); a bad file is one RestoreError."""
    return list(parse_jsonl(read_data_text(path), str(path), required="output"))


def table(counts: Counter, ref_words: int, out_words: int, markdown: bool) -> str:
    rows = []
    for name in CLASSES:
        missing, extra, changed = (counts[kind, name] for kind in ("missing", "extra", "changed"))
        rows.append((name, missing, extra, missing - extra, changed))
    gap = ref_words - out_words
    head = ("class", "missing", "extra", "missing - extra", "% of the length gap", "changed")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)] if markdown else ["  ".join(f"{h:>16}" for h in head)]
    for name, missing, extra, net, changed in rows:
        share = f"{100 * net / gap:.1f}%" if gap else "-"
        cells = (name, f"{missing:,}", f"{extra:,}", f"{net:,}", share, f"{changed:,}")
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", type=Path, help="the .outputs.jsonl that restore eval --report writes")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        records = [r for r in read_outputs(args.outputs) if r.get("target") is not None]
    except RestoreError as e:
        raise SystemExit(f"error_classes: {e}") from None
    if not records:
        raise SystemExit(f"error_classes: {args.outputs}: no records with a target")
    counts: Counter = Counter()
    out_words = ref_words = 0
    for record in records:
        counts += differences(record["output"], record["target"])
        out_words += len(words(record["output"]))
        ref_words += len(words(record["target"]))
    print(f"{args.outputs}: {len(records)} pairs; output {out_words:,} words, targets {ref_words:,} words "
          f"(output/target {out_words / ref_words:.3f}, gap {ref_words - out_words:,} words)")  # fmt: skip
    print(table(counts, ref_words, out_words, args.markdown))
    print(f"error_classes.py: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

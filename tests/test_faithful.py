"""Faithful restoration: checks, choosing among hypotheses, and repair of a deliberately broken "model"."""

from __future__ import annotations

import random
import re

import pytest

from restore.corrupt import corrupt, corrupt_tokens
from restore.faithful import FaithfulStats, join_faithful, make_faithful
from restore.faithful_check import check, check_content, choose_faithful, closest, content_tokens
from restore.repair import render, repair, repair_traced
from restore.surface_forms import SurfaceForms
from restore.lexicon import Lexicon


@pytest.fixture(scope="module")
def originals(corrupt_vectors) -> list[str]:
    return [v["original"] for v in corrupt_vectors]


@pytest.fixture(scope="module")
def forms(originals) -> SurfaceForms:
    """Surface forms as a trained model has them: a lexicon built from the same kind of text."""
    return SurfaceForms(Lexicon.build(originals))


@pytest.fixture(scope="module")
def chunks(originals) -> list[str]:
    """Chunk-like targets: runs of 1-3 sentences, some across a paragraph break."""
    rng = random.Random(0)
    out, i = [], 0
    while i < len(originals):
        k = rng.choice([1, 2, 3])
        out.append(rng.choice([" ", " ", "\n\n"]).join(originals[i : i + k]))
        i += k
    return out


# --- a deliberately broken "model": drops, adds, changes words, numbers, names, punctuation ---
def _perturb(text: str, rng: random.Random, vocab: list[str]) -> str:
    for _ in range(rng.choice([1, 1, 2, 3])):
        words = list(re.finditer(r"\S+", text))
        if not words:
            break
        m = rng.choice(words)
        a, b = m.span()
        op = rng.choice(["drop", "dup", "sub", "num", "name", "punct", "period", "insert", "merge", "swap", "quote"])
        if op == "drop":
            text = text[:a] + text[b:].lstrip(" ") if a == 0 else text[:a].rstrip(" ") + text[b:]
        elif op == "dup":
            text = text[:b] + " " + m.group() + text[b:]
        elif op == "sub":
            text = text[:a] + rng.choice(vocab) + text[b:]
        elif op == "num" and (numbers := list(re.finditer(r"\d+", text))):
            n = rng.choice(numbers)
            text = text[: n.start()] + str(int(n.group()) + rng.randint(1, 9)) + text[n.end() :]
        elif op == "name":
            text = text[:a] + m.group().lower() + text[b:]
        elif op == "punct" and (marks := list(re.finditer(r"[,.;:()\"']", text))):
            p = rng.choice(marks)
            text = text[: p.start()] + text[p.end() :]
        elif op == "period":
            text = text[:b] + "." + text[b:]
        elif op == "insert":
            text = text[:a] + rng.choice(vocab) + " " + text[a:]
        elif op == "merge" and b < len(text) and text[b] == " ":
            text = text[:b] + text[b + 1 :]
        elif op == "swap" and len(words) > 1:
            x, y = words[(i := rng.randrange(len(words) - 1))], words[i + 1]
            text = text[: x.start()] + y.group() + " " + x.group() + text[y.end() :]
        elif op == "quote":
            text = text[:a] + '"' + text[a:]
    return text


@pytest.fixture(scope="module")
def broken(chunks, originals) -> list[tuple[str, str]]:
    """(target, broken output) pairs: three independent perturbations of every chunk."""
    rng = random.Random(1)
    vocab = sorted({w for o in originals for w in re.findall(r"[A-Za-z]+", o)})
    return [(c, _perturb(c, rng, vocab)) for _ in range(3) for c in chunks]


# --- checks -----------------------------------------------------------------------------------
def test_content_tokens_drop_punctuation_only():
    tokens = "`` lenin 's 1917 ( o. . — '' n't 20,000 ...".split()
    assert content_tokens(tokens) == ["lenin", "'s", "1917", "o.", "n't", "20,000"]


def test_check_is_exact_round_trip(corrupt_vectors):
    for v in corrupt_vectors:
        assert check(v["original"], v["corrupted"])
    assert not check("He was born in 1880.", "born 1879 .")
    assert not check("He was born in 1879", "born 1879 .")
    assert check_content("He was born in 1879", "born 1879 .")


def test_choose_faithful_takes_first_passing_hypothesis():
    hyps = ["Born in 1880.", "He was born in 1879.", "Born 1879."]
    assert choose_faithful(hyps, "born 1879 .") == "He was born in 1879."
    assert choose_faithful(hyps[:1], "born 1879 .") is None
    assert choose_faithful([], "born 1879 .") is None
    assert closest(["It rained.", "Born in 1880.", "Born 1881 in Rome."], "born 1879 .") == "Born in 1880."


# --- repair -----------------------------------------------------------------------------------
def test_faithful_output_is_left_untouched(corrupt_vectors, chunks, forms):
    for v in corrupt_vectors:
        assert repair(v["original"], v["corrupted"], forms) == v["original"]
    for c in chunks:
        assert repair(c, corrupt(c), forms) == c
        assert repair_traced(c, corrupt(c))[1] == "faithful"


@pytest.mark.parametrize(
    "output, source, expected",
    [
        # a changed number and a changed name are put back; the model's other words stay
        ("Trotsky was born in 1897 in Odessa.", "trotski born 1879 kherson .", "Trotsky was born in 1879 in Kherson."),
        # an invented word is dropped, a missing one inserted before the next kept word
        ("He left the old city quickly.", "left citi russia .", "He left the city Russia."),
        # a missing sentence end: period back, next sentence capitalized
        ("He left Russia and the war ended", "left russia . war end .", "He left Russia. And the war ended."),
        # an invented sentence end goes away, the stopword after it is lowered
        ("He left. The city burned.", "left citi burn .", "He left the city burned."),
        # missing punctuation with its words comes right after the previous kept word
        ("The conference met.", "1919 , peac confer met pari .", "1919, the peace conference met Paris."),
        # quotes and brackets
        ("He called it expropriation.", "call `` expropri '' ( 1906 ) .", 'He called it "expropriation" (1906).'),
        # a clitic attaches to its host
        ("She did think so.", "n't think .", "She didn't think so."),
    ],
)
def test_repair_cases(output, source, expected):
    lexicon = Lexicon({"trotski": "Trotsky", "kherson": "Kherson", "russia": "Russia", "pari": "Paris",
                       "peac": "peace", "confer": "conference", "expropri": "expropriation", "citi": "city"})
    repaired = repair(output, source, lexicon)
    assert check(repaired, source), corrupt(repaired)
    assert repaired == expected


def test_capital_sensitive_lemmatization_is_respected():
    # "dies" corrupts to "dy" but "Dies" (a name) to "die": a repair must produce the right one.
    for output, source in [("The plant Dies in winter.", "plant dy winter ."),
                           ("He met the dies committee.", "die committe .")]:
        repaired = repair(output, source)
        assert check(repaired, source), (repaired, corrupt(repaired))


def test_abbreviations_and_sentence_splits():
    cases = [
        ("He lived in St Petersburg", "live st. petersburg ."),  # abbreviation period put back
        ("Sedov (born 1906) lived.", "sedov ( b . 1906 ) live ."),  # "b." is split by Punkt: "b ."
        ("He arrived at 5 p.m. Left at 6.", "arriv 5 p.m . left 6 ."),  # Punkt does not split "p.m. Left"
        ("Lenin called them expropriations, armed robberies.", "lenin call `` expropri '' , i.e . arm robberi ."),
        ("He won in Virginia. 2 seed.", "virginia . . 2 seed ."),  # a stopword-only sentence "No." left ". ."
    ]
    for output, source in cases:
        repaired = repair(output, source)
        assert check(repaired, source), (output, repaired, corrupt(repaired))


def test_repair_keeps_paragraph_breaks_and_headings():
    target = "## Early life\n\nHe was born in 1879. He studied law.\n\nHe died in 1940."
    output = "## Early life\n\nHe was born in 1897 He studied medicine.\n\nHe died in 1940."
    repaired = repair(output, corrupt(target))
    assert repaired == target


def test_surface_forms_are_verified():
    forms = SurfaceForms(Lexicon({"parti": "parties", "die": "dies"}))  # "dies" would corrupt to "dy"
    assert forms.form("parti") == "parties"
    assert forms.form("die") == "die"
    assert forms.form("``") == forms.form("''") == '"'
    # stems that are not their own stem get a word back that corrupts to them
    for stem in ["dos/vs", "conge", "then-applic", "hous", "revolutionari", "won", "other"]:
        form = forms.form(stem)
        assert corrupt_tokens(form) == [stem], (stem, form)


def test_render_rebuilds_from_source_alone(corrupt_vectors):
    exact = 0
    for v in corrupt_vectors:
        rebuilt = render(v["corrupted"].split())
        assert check_content(rebuilt, v["corrupted"]), (v["corrupted"], rebuilt)
        exact += check(rebuilt, v["corrupted"])
    assert exact / len(corrupt_vectors) >= 0.95


def test_broken_model_outputs_are_repaired(broken, forms):
    """The acceptance test: content tokens always, exact round trip for (nearly) all chunks."""
    failing_before = sum(not check(out, corrupt(target)) for target, out in broken)
    assert failing_before >= 0.7 * len(broken)  # the perturbations really break faithfulness
    exact, not_exact = 0, []
    for target, out in broken:
        source = corrupt(target)
        repaired = repair(out, source, forms)
        assert check_content(repaired, source), (out, repaired)
        if check(repaired, source):
            exact += 1
        else:
            not_exact.append((source, out, repaired))
    share = exact / len(broken)
    print(f"exact after repair: {exact}/{len(broken)} = {share:.4f}")
    for source, out, repaired in not_exact:
        print(f"SOURCE {source}\nOUTPUT {out!r}\nREPAIR {repaired!r}\nGOT    {corrupt(repaired)}")
    assert share >= 0.98


def test_repair_keeps_most_of_the_models_words(broken, forms):
    """Repair edits locally: far closer to the target than a rebuild from the source alone."""
    import difflib

    def similarity(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a.split(), b.split()).ratio()

    pairs = broken[:150]
    repaired = sum(similarity(repair(out, corrupt(t), forms), t) for t, out in pairs) / len(pairs)
    rebuilt = sum(similarity(render(corrupt(t).split(), forms), t) for t, _ in pairs) / len(pairs)
    assert repaired > 0.9 and repaired > rebuilt + 0.2


def test_garbage_outputs_become_faithful(chunks, originals):
    rng = random.Random(2)
    vocab = sorted({w for o in originals for w in re.findall(r"[A-Za-z']+", o)})
    for target in chunks[:60]:
        source = corrupt(target)
        garbage = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))) + rng.choice([".", "", " !"])
        repaired = repair(garbage, source)
        assert check_content(repaired, source), (garbage, repaired)


def test_degenerate_inputs():
    assert check(repair("", "born 1879 ."), "born 1879 .")
    assert corrupt(repair("Hello there, world.", "")) == ""
    assert check(repair("   ", "x ."), "x .")


# --- batch driver and stats ---------------------------------------------------------------------
def test_make_faithful_redecodes_failing_chunks_once_and_counts():
    sources = ["born 1879 .", "die 1940 .", "live pari .", "left russia ."]
    outputs = ["He was born in 1879.", "He died in 1941.", "He lived in Rome.", "He left Russia."]
    calls = []

    def redecode(failing: list[str]) -> list[list[str]]:
        calls.append(list(failing))
        beams = {"die 1940 .": ["He died in 1942.", "He died in 1940."], "live pari .": ["He lived in Rome."]}
        return [beams[s] for s in failing]

    stats = FaithfulStats()
    result = make_faithful(sources, outputs, redecode, stats=stats)
    assert calls == [["die 1940 .", "live pari ."]]  # one batched call, failing chunks only
    assert result[0] == outputs[0] and result[3] == outputs[3]
    assert result[1] == "He died in 1940."
    assert result[2].startswith("He lived in ") and check(result[2], sources[2])
    assert (stats.chunks, stats.failed_greedy, stats.fixed_by_beam, stats.repaired) == (4, 2, 1, 1)
    assert stats.still_unfaithful_exact == stats.still_unfaithful_content == 0


def test_make_faithful_without_redecoding_repairs_and_skips_passing():
    def never(_: list[str]) -> list[list[str]]:
        raise AssertionError("nothing fails, nothing to re-decode")

    assert make_faithful(["born 1879 ."], ["Born 1879."], never) == ["Born 1879."]
    stats = FaithfulStats()
    assert make_faithful(["born 1879 ."], ["Born 1880."], None, stats=stats) == ["Born 1879."]
    assert (stats.failed_greedy, stats.fixed_by_beam, stats.repaired) == (1, 0, 1)


def test_stats_merge_share_and_summary():
    a = FaithfulStats(chunks=10, failed_greedy=4, fixed_by_beam=3, repaired=1)
    b = FaithfulStats(chunks=10, failed_greedy=2, fixed_by_beam=0, repaired=2, still_unfaithful_exact=1)
    total = a.merge(b)
    assert (total.chunks, total.failed_greedy, total.repaired, total.still_unfaithful_exact) == (20, 6, 3, 1)
    shares = total.as_dict()
    assert shares["fixed_by_beam_share"] == pytest.approx(0.15) and shares["repaired_share"] == pytest.approx(0.15)
    assert "20 chunks" in total.summary() and "15.0% repaired" in total.summary()
    assert FaithfulStats().as_dict()["repaired_share"] == 0.0


# --- integration with restore.infer (a tiny model with random weights: garbage out, faithful after) ---
@pytest.fixture(scope="module")
def model_chunks(wiki_texts) -> list[str]:
    from restore.chunking import ChunkConfig, chunk_text

    return [c for text in wiki_texts[:2] for c in chunk_text(corrupt(text), ChunkConfig(max_source_words=16))][:4]


def test_restorer_makes_every_chunk_faithful(tiny_model_dir, model_chunks, monkeypatch, one_thread):
    from restore.infer import Restorer

    raw = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful=False)
    garbage = raw.restore_chunks(model_chunks)
    assert sum(check(out, src) for out, src in zip(garbage, model_chunks)) < len(model_chunks) // 2
    assert raw.stats.faithful.chunks == 0

    # faithful_beams: 4 in real runs; the random model is slow at any width
    restorer = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful_beams=2)
    assert restorer.faithful and restorer.surface_forms.lexicon is not None  # the model dir's lexicon
    calls = []
    candidates = restorer.chunk_candidates

    def recording(chunks, num_beams, num_return_sequences, **options):
        calls.append((len(chunks), num_beams, num_return_sequences))
        return candidates(chunks, num_beams, num_return_sequences, **options)

    monkeypatch.setattr(restorer, "chunk_candidates", recording)
    restored = restorer.restore_chunks(model_chunks)
    stats = restorer.stats.faithful
    assert all(check(out, src) for out, src in zip(restored, model_chunks)), stats
    failing = sum(not check(out, src) for out, src in zip(garbage, model_chunks))
    assert calls == [(len(model_chunks), 1, 1), (failing, 2, 2)]  # one batched re-decode
    assert (stats.chunks, stats.failed_greedy) == (len(model_chunks), failing)
    assert stats.fixed_by_beam + stats.repaired == failing
    assert stats.still_unfaithful_exact == stats.still_unfaithful_content == 0
    # a chunk the greedy pass got right is kept as it was
    assert all(r == g for r, g, src in zip(restored, garbage, model_chunks) if check(g, src))


def test_restored_documents_round_trip(tiny_model_dir, monkeypatch, one_thread):
    from restore.infer import Restorer

    restorer = Restorer.from_pretrained(tiny_model_dir, device="cpu", faithful_beams=2)
    source = "# # earli life trotski born 1879 kherson . father , david , farmer . `` revolut '' came 1917 ."
    restored = restorer.restore(source)
    assert restorer.stats.chunks > 1  # several chunks, joined
    assert check(restored, source)  # the whole document, read as one text, corrupts back exactly


def test_cli_faithful_summary_and_opt_out(tmp_path, capsys, tiny_model_dir, restorer_options):
    from restore.cli import build_parser, main

    restorer_options(faithful_beams=2)  # 4 in real runs; the random model is slow at any width
    assert build_parser().parse_args(["infer"]).faithful is True
    assert build_parser().parse_args(["infer", "--no-faithful"]).faithful is False
    text = tmp_path / "doc.txt"
    text.write_text("leon trotski born 1879 kherson . father farmer .\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["infer", str(text), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "faithful: 1 chunk, " in err and "repaired" in err and "; 0 unfaithful lines; wall " in err and len(err.splitlines()) == 1
    assert check(out.read_text(encoding="utf-8").strip(), "leon trotski born 1879 kherson . father farmer .")
    assert main(["infer", str(text), "-o", str(out), "--model", str(tiny_model_dir), "--no-faithful"]) == 0
    assert "faithful: off" in capsys.readouterr().err


# --- junctions: chunks faithful alone, the line read as one text ------------------------------------------
CRIMEA = ["black death plagu reach crimea 1346 .", ", probabl carri flea black rat"]
CRIMEA_OUT = ["The Black Death plague reached Crimea by 1346.", ", Probably carried by fleas on black rats"]


def test_join_faithful_repairs_the_junction_punkt_reads_across():
    assert all(check(o, s) for o, s in zip(CRIMEA_OUT, CRIMEA))  # each chunk passes on its own
    assert not check(" ".join(CRIMEA_OUT), " ".join(CRIMEA))  # ... but "1346. ," is one token "1346."
    stats = FaithfulStats()
    calls = []

    def unhelpful_beam(sources):
        calls.append(sources)
        return [[" ".join(CRIMEA_OUT)] for _ in sources]

    lexicon = Lexicon({"probabl": "probably", "black": "black"})
    text = join_faithful(CRIMEA, CRIMEA_OUT, ["", " "], unhelpful_beam, lexicon, stats)
    assert text == "The Black Death plague reached Crimea by 1346. Then, probably carried by fleas on black rats"
    assert check(text, " ".join(CRIMEA))
    assert calls == [[" ".join(CRIMEA)]]  # the two chunks re-decoded together, once
    assert (stats.failed_junctions, stats.junctions_fixed_by_beam, stats.junctions_repaired, stats.unfaithful_lines) == (1, 0, 1, 0)
    assert stats.summary().endswith(", 1 failed junction (0 fixed by beam, 1 repaired); 0 unfaithful lines")


def test_join_faithful_takes_a_faithful_beam_of_the_joined_chunks():
    good = "The Black Death plague reached Crimea by 1346. From there, probably carried by fleas on black rats"
    stats = FaithfulStats()
    text = join_faithful(CRIMEA, CRIMEA_OUT, ["", " "], lambda sources: [["wrong", good] for _ in sources], None, stats)
    assert text == good and (stats.junctions_fixed_by_beam, stats.junctions_repaired) == (1, 0)


def test_join_faithful_leaves_passing_lines_alone():
    stats = FaithfulStats()
    outputs = ["The plague reached Crimea by 1346.", "It was probably carried by fleas."]
    sources = ["plagu reach crimea 1346 .", "probabl carri flea ."]
    never = lambda sources: pytest.fail("nothing to re-decode")  # noqa: E731
    assert join_faithful(sources, outputs, ["", " "], never, None, stats) == " ".join(outputs)
    assert stats == FaithfulStats()


def test_restorer_checks_the_junctions_of_the_document(tiny_model_dir):
    """The issue's case end to end: a model that restores each chunk faithfully, the document not."""
    from transformers import AutoTokenizer

    from restore.chunking import ChunkConfig
    from restore.infer import Restorer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    table = {**dict(zip(CRIMEA, CRIMEA_OUT)), "second line .": "The second line."}

    class TableModel:  # the "model": a fixed restoration per chunk; nothing for anything else
        batch_tokens = 16384

        def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **_):
            texts = tokenizer.batch_decode(batch, skip_special_tokens=True)
            outs = [tokenizer(table.get(t, ""), add_special_tokens=False)["input_ids"] for t in texts]
            return [ids for ids in outs for _ in range(num_return_sequences)]

    lexicon = Lexicon({"probabl": "probably", "black": "black"})
    restorer = Restorer(tokenizer, TableModel(), ChunkConfig(max_source_words=8), lexicon=lexicon)
    document = " ".join(CRIMEA) + "\nsecond line ."
    restored = restorer.restore(document)
    assert restored.split("\n\n")[0] == "The Black Death plague reached Crimea by 1346. Then, probably carried by fleas on black rats"
    assert [corrupt(line) for line in restored.split("\n\n")] == document.split("\n")
    stats = restorer.stats
    assert (stats.chunks, stats.faithful.failed_junctions, stats.faithful.unfaithful_lines) == (3, 1, 0)
    assert stats.redecoded == 1  # the span of the failing junction, with beams

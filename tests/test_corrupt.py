import json
import os
import subprocess
import sys

import pytest

from restore import corrupt
from restore.corrupt import STOPWORDS, corrupt_sentence, corrupt_tokens, split_sentences


def test_every_vector_reproduces_byte_for_byte(corrupt_vectors):
    assert len(corrupt_vectors) == 339
    mismatches = [v["original"] for v in corrupt_vectors if corrupt(v["original"]) != v["corrupted"]]
    assert mismatches == []


def test_seed_format_worked_examples():
    assert corrupt("Lenin called them \"expropriations\", i.e. armed robberies of banks.") == (
        "lenin call `` expropri '' , i.e . arm robberi bank ."
    )
    assert corrupt("He agreed to appear as a witness before the Dies Committee. The plant dies in winter. "
                   "Trotsky died the next day.") == "agre appear wit die committe . plant dy winter . trotski die next day ."
    assert corrupt("However, it would also be one of the few cases that could be won.") == "howev , would also one case could ."


def test_empty_and_whitespace_input():
    assert corrupt("") == ""
    assert corrupt("   \n\n ") == ""


def test_sentence_by_sentence_equals_whole_document(wiki_texts):
    for text in wiki_texts:
        per_sentence = [t for s in split_sentences(text) for t in corrupt_sentence(s)]
        assert per_sentence == corrupt_tokens(text) == corrupt(text).split()


def test_deterministic_and_no_stopword_survives(tmp_path, wiki_texts):
    # Another process with another hash seed gives the same bytes (no set or dict order leaks out).
    text = "\n\n".join(wiki_texts)
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    other = subprocess.run([sys.executable, "-m", "restore", "corrupt", str(tmp_path / "doc.txt")],
                           env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True)  # fmt: skip
    assert other.returncode == 0 and other.stdout.decode("utf-8") == corrupt(text) + "\n"
    # Every one-word stopword of the 179 is dropped: mid-sentence, opening a sentence, in capitals.
    assert len(STOPWORDS) == 179
    words = sorted(w for w in STOPWORDS if w.isalpha())
    assert len(words) == 153
    for w in words:
        assert (corrupt(f"Kherson {w} farmer."), corrupt(f"{w.capitalize()} farmer left."),
                corrupt(f"Kherson {w.upper()} farmer.")) == ("kherson farmer .", "farmer left .", "kherson farmer .")  # fmt: skip
    # The other 26 are contractions: the tokenizer splits them first, so their parts are what is filtered.
    assert corrupt("Kherson didn't farm. She couldn't.") == "kherson n't farm . could n't ."


def run_cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "restore", "corrupt", *args], input=stdin, capture_output=True)


def test_cli_stdin_to_stdout():
    r = run_cli(stdin="He was an influential politician of the early days of the Soviet Union.".encode())
    assert r.returncode == 0
    assert r.stdout.decode() == "influenti politician earli day soviet union .\n"


def test_cli_jsonl_keeps_fields(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 7, "text": "The children played."}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = run_cli(str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text(encoding="utf-8")) == {"id": 7, "text": "The children played.", "source": "child play ."}
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.txt", None, "no such file"),
        ("adir", "DIR", "is a directory"),
        ("bin.txt", b"\x7fELF\x00\x01\x02", "binary"),
        ("latin1.txt", "café".encode("latin-1"), "not valid UTF-8"),
        ("bad.jsonl", b'{"text": "ok."}\n{"id": 3}\n', "string field 'text'"),
        ("broken.jsonl", b'{"text": "ok."}\n{not json\n', "invalid JSON"),
    ],
)
def test_cli_bad_input_one_line_error_and_no_output(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.txt"
    r = run_cli(str(path), "-o", str(out))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

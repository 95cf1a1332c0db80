"""The lossy preprocessing that produced the texts users hold, reproduced exactly.

Spec: ``SEED_FORMAT.md`` (spec version :data:`SPEC_VERSION`). The pipeline is a list
of pure steps, applied in this order:

1. :func:`split_sentences` - Punkt (pretrained English parameters), original case;
2. :func:`tokenize_words`  - NLTK's improved Treebank tokenizer, per sentence;
3. :func:`drop_stopwords`  - NLTK's 179-word English stopword list;
4. :func:`lemmatize_noun`  - WordNet 3.0 noun lemmatizer, case-sensitive;
5. :func:`stem`            - Porter, NLTK extensions (also lowercases);
6. join with single spaces.

>>> corrupt("None of us desires or is able to dispute the will of the Party.")
'none u desir abl disput parti .'
>>> corrupt("## Before the 1917 revolution\\n\\nTrotsky was born in Kherson province.")
'# # 1917 revolut trotski born kherson provinc .'

The tokenizer and stemmer are NLTK's own (``nltk>=3.9.1,<3.9.3``, pinned in
``pyproject.toml``: NLTK 3.9.3+ tokenizes differently and does not reproduce the
seeds). The resources NLTK would download ship in ``restore/resources`` (see its
README), so nothing here touches the network.
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from functools import lru_cache
from importlib import resources
from typing import Iterable

from nltk.stem.porter import PorterStemmer
from nltk.tokenize.destructive import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

SPEC_VERSION = "seed-v1"

# NLTK's English stopword list, 179 entries, exactly as written out in SEED_FORMAT.md
# (nltk_data corpora/stopwords/english, the list shipped with NLTK 3.2 - 3.8).
STOPWORDS = frozenset(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours
    yourself yourselves he him his himself she she's her hers herself it it's its
    itself they them their theirs themselves what which who whom this that that'll
    these those am is are was were be been being have has had having do does did
    doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in
    out on off over under again further then once here there when where why how all
    any both each few more most other some such no nor not only own same so than too
    very s t can will just don don't should should've now d ll m o re ve y ain aren
    aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven
    haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't
    shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
    """.split()
)
assert len(STOPWORDS) == 179

# WordNet's morphological substitutions for nouns, applied once (NLTK >= 3.9 `_morphy`).
NOUN_SUFFIX_RULES = (
    ("s", ""),
    ("ses", "s"),
    ("ves", "f"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)

_RESOURCES = resources.files("restore") / "resources"


@lru_cache(maxsize=1)
def _punkt() -> PunktSentenceTokenizer:
    folder = _RESOURCES / "punkt_english"

    def lines(name: str) -> list[str]:
        return [ln for ln in (folder / name).read_text(encoding="utf-8").split("\n") if ln]

    params = PunktParameters()
    params.abbrev_types = set(lines("abbrev_types.txt"))
    params.sent_starters = set(lines("sent_starters.txt"))
    params.collocations = {tuple(ln.split("\t")) for ln in lines("collocations.tab")}
    params.ortho_context = defaultdict(int)
    for ln in lines("ortho_context.tab"):
        word, flags = ln.split("\t")
        params.ortho_context[word] = int(flags)
    return PunktSentenceTokenizer(params)


@lru_cache(maxsize=1)
def _wordnet_nouns() -> tuple[frozenset[str], dict[str, list[str]]]:
    with gzip.open(str(_RESOURCES / "wordnet_noun_lemmas.txt.gz"), "rt", encoding="utf-8") as f:
        lemmas = frozenset(f.read().split())
    exceptions: dict[str, list[str]] = {}
    for line in (_RESOURCES / "wordnet_noun.exc").read_text(encoding="utf-8").splitlines():
        inflected, *bases = line.split()
        exceptions.setdefault(inflected, []).extend(bases)
    return lemmas, exceptions


_word_tokenizer = NLTKWordTokenizer()
_porter = PorterStemmer()  # mode NLTK_EXTENSIONS


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the Punkt sentences of ``text`` (original case; newlines are spaces).

    >>> text = "He returned to St. Petersburg. It was 1905."
    >>> [text[s:e] for s, e in sentence_spans(text)]
    ['He returned to St. Petersburg.', 'It was 1905.']
    """
    return list(_punkt().span_tokenize(text))


def split_sentences(text: str) -> list[str]:
    """Step 1: Punkt sentences; a heading line has no period and glues onto the next sentence.

    >>> split_sentences("## Early life\\n\\nHe was born. He died.")
    ['## Early life\\n\\nHe was born.', 'He died.']
    """
    return [text[s:e] for s, e in sentence_spans(text)]


def tokenize_words(sentence: str) -> list[str]:
    """Step 2: NLTK's improved Treebank word tokenizer on one sentence.

    >>> tokenize_words("He didn't take part (b. 1906).")
    ['He', 'did', "n't", 'take', 'part', '(', 'b.', '1906', ')', '.']
    """
    return _word_tokenizer.tokenize(sentence)


def drop_stopwords(tokens: Iterable[str]) -> list[str]:
    """Step 3: drop tokens whose lowercase form is a stopword; punctuation and clitics stay.

    >>> drop_stopwords(["He", "was", "n't", "the", "one", "."])
    ["n't", 'one', '.']
    """
    return [t for t in tokens if t.lower() not in STOPWORDS]


def lemmatize_noun(token: str) -> str:
    """Step 4: WordNet 3.0 noun lemma of ``token`` in its original case (NLTK 3.9 ``_morphy``).

    Candidates are the token itself followed by its ``noun.exc`` entries, or else the
    single-pass suffix rewrites; the shortest candidate that is a noun lemma wins.

    >>> [lemmatize_noun(w) for w in ["us", "children", "leaves", "media", "Dies", "became"]]
    ['u', 'child', 'leaf', 'medium', 'Dies', 'became']
    """
    lemmas, exceptions = _wordnet_nouns()
    if token in exceptions:
        candidates = [token, *exceptions[token]]
    else:
        candidates = [token] + [token[: -len(old)] + new for old, new in NOUN_SUFFIX_RULES if token.endswith(old)]
    found = [c for c in candidates if c in lemmas]
    return min(found, key=len) if found else token


def stem(token: str) -> str:
    """Step 5: NLTK's Porter stemmer (``NLTK_EXTENSIONS``), which also lowercases.

    >>> [stem(w) for w in ["generally", "increasingly", "trying", "news", "News", "'s", "1920s"]]
    ['gener', 'increasingli', 'tri', 'news', 'new', "'s", '1920']
    """
    return _porter.stem(token)


@lru_cache(maxsize=1 << 20)
def normalize_token(token: str) -> str:
    """Steps 4+5 for one kept token, memoized per word type (the hot path of corruption).

    >>> normalize_token("Committees"), normalize_token("Dies")
    ('committe', 'die')
    """
    return stem(lemmatize_noun(token))


def corrupt_sentence(sentence: str) -> list[str]:
    """Steps 2-5 on one Punkt sentence: the corrupted tokens it contributes.

    >>> corrupt_sentence("He received the news of Lenin's death.")
    ['receiv', 'news', 'lenin', "'s", 'death', '.']
    """
    return [normalize_token(t) for t in drop_stopwords(tokenize_words(sentence))]


def corrupt_tokens(text: str) -> list[str]:
    """The corrupted token sequence of a whole document."""
    return [tok for sentence in split_sentences(text) for tok in corrupt_sentence(sentence)]


# Faithfulness checks corrupt the same sentences again and again (a chunk, then its line, its beam
# hypotheses, each repair round); steps 2-5 of a sentence depend on that sentence alone, so they are
# memoized per Punkt sentence. Step 1 reads across sentences: it is cached per whole text only.
SENTENCE_CACHE = 1 << 15


@lru_cache(maxsize=SENTENCE_CACHE)
def corrupt_sentence_cached(sentence: str) -> tuple[str, ...]:
    """:func:`corrupt_sentence`, memoized per sentence (a tuple: the cached value cannot be changed).

    >>> corrupt_sentence_cached("He received the news.") == tuple(corrupt_sentence("He received the news."))
    True
    """
    return tuple(corrupt_sentence(sentence))


@lru_cache(maxsize=SENTENCE_CACHE)
def tokenize_words_cached(sentence: str) -> tuple[str, ...]:
    """:func:`tokenize_words`, memoized per sentence (what repair re-reads of a text it edits)."""
    return tuple(tokenize_words(sentence))


def corrupt(text: str) -> str:
    """The whole preprocessing: one line of space-separated tokens (empty input -> '').

    >>> corrupt("Leon Trotsky was a Bolshevik revolutionary and Marxist theorist.")
    'leon trotski bolshevik revolutionari marxist theorist .'
    """
    return " ".join(corrupt_tokens(text))


# --- file driver (the `restore corrupt` command) ---------------------------------------------
PROGRESS_MIN_CHARS = 1 << 20  # show a progress bar (on a terminal) from 1 MB of input on


def corrupt_file(input_path: str | None, output_path: str | None) -> None:
    """Corrupt a text file (one document) or a ``.jsonl`` file (``text`` -> ``source``).

    Output is written atomically: on any error no output file appears.
    """
    from restore.progress import progress
    from restore.textio import atomic_output, dump_jsonl_line, is_jsonl, parse_jsonl, read_text

    text = read_text(input_path)
    name = "<stdin>" if input_path in (None, "-") else str(input_path)
    show = len(text) >= PROGRESS_MIN_CHARS  # and only on a terminal (restore.progress)
    if is_jsonl(input_path):
        records = list(parse_jsonl(text, name, required="text"))  # validate all before writing
        with atomic_output(output_path) as out:
            for record in progress(records, show=show, desc="corrupt", unit="doc"):
                out.write(dump_jsonl_line({**record, "source": corrupt(record["text"])}))
        return
    sentences = split_sentences(text)
    tokens = [tok for s in progress(sentences, show=show, desc="corrupt", unit="sent") for tok in corrupt_sentence(s)]
    with atomic_output(output_path) as out:
        out.write(" ".join(tokens) + ("\n" if tokens else ""))

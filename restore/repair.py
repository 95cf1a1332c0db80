"""Repair: edit an unfaithful restoration until it corrupts back to its source chunk.

:func:`repair` splits the output into its own word tokens (Punkt + Treebank, each located in
the text), maps every kept token to its corrupted form, aligns that sequence with the source
tokens (:class:`difflib.SequenceMatcher`, then an edit-distance pairing inside each differing
block), and edits the *text*: changed tokens are replaced, missing ones inserted, invented ones
dropped, each in a surface form that corrupts to the source token (:mod:`restore.surface_forms`).
The model's stopwords, casing and spacing around the edits are kept. Later rounds also force
sentence splits Punkt missed (and undo ones it made); if that is not enough, the chunk is
rebuilt from the source tokens' surface forms (:func:`render`), so the content tokens always
come back. What passes is :mod:`restore.faithful_check`'s check; when to repair (after a beam
re-decode) is :mod:`restore.faithful`'s.

>>> src = "trotski born 1879 kherson ."
>>> repair("Trotsky was born in 1897 in Odessa, Ukraine.", src)
'Trotsky was born in 1879 in Kherson.'
>>> repair("Trotsky was born in 1879 in Kherson.", src)  # a faithful text is left untouched
'Trotsky was born in 1879 in Kherson.'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from restore.chunking import CLOSERS, TERMINATORS
from restore.corrupt import STOPWORDS, normalize_token, sentence_spans, tokenize_words_cached
from restore.faithful_check import check, check_content, closest, roundtrip
from restore.lexicon import Lexicon
from restore.surface_forms import CLITICS, QUOTE_SURFACE, SurfaceForms, as_surface_forms, is_form_of

# Tokens written against the previous token ("word," "word." "5%"), besides the clitics ("Lenin's" "didn't").
_ATTACH_LEFT = frozenset({".", ",", ";", ":", "!", "?", ")", "]", "}", ">", "''", "'", "%", "”", "’", "»"})
# Words "n't" is written against (the tokenizer splits "didn't" into "did" "n't").
_NT_HOSTS = frozenset(
    "do does did is are was were have has had ca could would should wo must need might ai sha dare".split()
)
# Tokens the next token is written against ("(born" "\"We" "$5").
_ATTACH_RIGHT = frozenset({"(", "[", "{", "<", "``", "“", "‘", "«", "„", "$"})
_SENTENCE_END = TERMINATORS | CLOSERS  # a sentence end and what may follow it (restore.chunking)
REPAIR_ROUNDS = 3  # aligned edit rounds before rebuilding from the source


# --- the output as word tokens with the text between them -----------------------------------------
@dataclass
class _Word:
    token: str  # the tokenizer's token (`` and '' for quotes)
    text: str  # as written in the output
    gap: str  # what the output has between the previous word and this one (whitespace)
    stem: str | None  # corrupted form; None for a stopword


class _Unlocatable(Exception):
    """A tokenizer token could not be found in the text (never seen; handled by rebuilding)."""


def _locate(text: str, token: str, pos: int, end: int) -> tuple[int, int]:
    while pos < end and text[pos].isspace():
        pos += 1
    if token in QUOTE_SURFACE:
        for written in ('"', "``", "''"):
            if text.startswith(written, pos):
                return pos, pos + len(written)
    if text.startswith(token, pos):
        return pos, pos + len(token)
    found = text.find(token, pos, end)
    if found < 0:
        raise _Unlocatable(token)
    return found, found + len(token)


def _words(text: str) -> tuple[list[_Word], str]:
    """The output's word tokens, exactly as :func:`restore.corrupt.corrupt` sees them, and the tail.

    >>> words, tail = _words('He said "no." Then (1905) left.')
    >>> [(w.text, w.token, w.gap, w.stem) for w in words][1:5]
    [('said', 'said', ' ', 'said'), ('"', '``', ' ', '``'), ('no', 'no', '', None), ('.', '.', '', '.')]
    """
    words: list[_Word] = []
    pos = 0
    for start, end in sentence_spans(text):
        at = start
        for token in tokenize_words_cached(text[start:end]):
            a, b = _locate(text, token, at, end)
            stem_ = None if token.lower() in STOPWORDS else normalize_token(token)
            words.append(_Word(token, text[a:b], text[pos:a], stem_))
            pos = at = b
    return words, text[pos:]


def located_words(text: str) -> list[tuple[int, int, str | None]] | None:
    """Every word token of ``text`` as :func:`restore.corrupt.corrupt` sees it, where it is written:
    ``(start, end, stem)``, the stem ``None`` for a stopword (:mod:`restore.spans` aligns these).
    ``None`` if a token cannot be found in the text (never seen; :func:`repair` rebuilds then).

    >>> text = "He didn't say (no)."
    >>> [(text[a:b], stem_) for a, b, stem_ in located_words(text)]
    [('He', None), ('did', None), ("n't", "n't"), ('say', 'say'), ('(', '('), ('no', None), (')', ')'), ('.', '.')]
    """
    try:
        words, _ = _words(text)
    except _Unlocatable:
        return None
    located, pos = [], 0
    for word in words:
        start = pos + len(word.gap)
        pos = start + len(word.text)
        located.append((start, pos, word.stem))
    return located


# --- editing ---------------------------------------------------------------------------------
def _kind(token: str) -> str:
    if token in _ATTACH_LEFT or token.lower() in CLITICS or (len(token) > 1 and set(token) == {"."}):
        return "left"
    if token[:1] in ":," and len(token) > 1:  # ":dq2" exists only glued to a colon: "A1::DQ2"
        return "left"
    if token in _ATTACH_RIGHT:
        return "right"
    return "hash" if token == "#" else "word"


def attaches_left(token: str) -> bool:
    """Whether ``token`` is written against the token before it (punctuation, clitics).

    >>> attaches_left(","), attaches_left("n't"), attaches_left("(")
    (True, True, False)
    """
    return _kind(token) == "left"


@dataclass
class _Item:
    token: str
    text: str
    gap: str | None  # None until placed
    stem: str | None
    orig: int | None  # index of the output word it keeps or replaces; None if inserted
    changed: bool


@dataclass
class _Plan:
    replace: dict[int, str] = field(default_factory=dict)  # word index -> source token
    delete: set[int] = field(default_factory=set)
    insert: dict[int, list[str]] = field(default_factory=dict)  # before word index -> source tokens

    def add(self, position: int, tokens: Sequence[str]) -> None:
        self.insert.setdefault(position, []).extend(tokens)


_GAP_COST = 0.7  # aligning a token with nothing; substituting costs 1 - similarity (+1 across word/punct)


_MAX_CELLS = 4096  # larger differing blocks are paired in order (cheap and rare)


def _is_punct(token: str) -> bool:
    return not any(c.isalnum() for c in token)


def _substitution_cost(a: str, b: str) -> float:
    similarity = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return 1.0 - similarity + (_is_punct(a) != _is_punct(b))


def _align_block(a: Sequence[str], b: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """Pairs (i, j), deletions (i, None) and insertions (None, j) aligning two short token lists.

    Similar tokens are paired, words and punctuation are not (edit-distance DP).

    >>> _align_block(["heleft", "14"], [".", "left", "6"])
    [(None, 0), (0, 1), (1, 2)]
    """
    n, m = len(a), len(b)
    if n * m > _MAX_CELLS:
        k = min(n, m)
        return [(i, i) for i in range(k)] + [(i, None) for i in range(k, n)] + [(None, j) for j in range(k, m)]
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    move = [[(0, 0)] * (m + 1) for _ in range(n + 1)]  # back pointers: (di, dj) of the best step
    for i in range(n + 1):
        for j in range(m + 1):
            if i or j:
                steps = []
                if i and j:
                    steps.append((cost[i - 1][j - 1] + _substitution_cost(a[i - 1], b[j - 1]), (1, 1)))
                if i:
                    steps.append((cost[i - 1][j] + _GAP_COST, (1, 0)))
                if j:
                    steps.append((cost[i][j - 1] + _GAP_COST, (0, 1)))
                cost[i][j], move[i][j] = min(steps, key=lambda step: step[0])
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        di, dj = move[i][j]
        i, j = i - di, j - dj
        pairs.append((i if di else None, j if dj else None))
    return pairs[::-1]


def _split_insertion(run: Sequence[str]) -> int:
    """Where a run of missing tokens splits into what follows the previous kept word and what
    precedes the next one: missing punctuation (and the words before it) comes early
    ("[1919,] the city"), up to the first sentence end; missing words come late ("the [old] city").

    >>> _split_insertion(["1919", ",", "peac"]), _split_insertion([".", "''", ",", "war"]), _split_insertion(["old"])
    (2, 2, 0)
    """
    for j, token in enumerate(run):
        if token in TERMINATORS:
            while j + 1 < len(run) and run[j + 1] in _SENTENCE_END:
                j += 1
            return j + 1
    return max((j + 1 for j, t in enumerate(run) if _kind(t) == "left" and _is_punct(t)), default=0)


def _plan(words: list[_Word], source: list[str]) -> _Plan:
    """Edits that turn the output's corrupted tokens into ``source``."""
    kept = [i for i, w in enumerate(words) if w.stem is not None]
    stems = [words[i].stem for i in kept]
    plan = _Plan()

    def place(run: list[str], prev: int, following: int) -> None:
        """Insert ``run`` between kept tokens ``prev`` and ``following`` (indices into ``kept``)."""
        if not run:
            return
        early = kept[prev] + 1 if prev >= 0 else 0
        late = kept[following] if following < len(kept) else len(words)
        # at the very end, final punctuation goes after any trailing stopwords
        cut = 0 if following == len(kept) else _split_insertion(run)
        plan.add(early, run[:cut])
        plan.add(late, run[cut:])

    matcher = difflib.SequenceMatcher(None, stems, source, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        run: list[str] = []
        prev = i1 - 1
        for i, j in _align_block(stems[i1:i2], source[j1:j2]):
            if i is None:
                run.append(source[j1 + j])
                continue
            place(run, prev, i1 + i)
            run, prev = [], i1 + i
            if j is None:
                plan.delete.add(kept[i1 + i])
            else:
                plan.replace[kept[i1 + i]] = source[j1 + j]
        place(run, prev, i2)
    return plan


def _is_stop(token: str) -> bool:
    return token in TERMINATORS or (len(token) > 1 and set(token) == {"."})


def _fresh_gap(prev: _Item | None, token: str, inherited: Sequence[str]) -> str:
    """The space to write before ``token`` when what precedes it has changed."""
    if prev is None:
        return ""
    if token.lower() in CLITICS:  # "didn't", "Lenin's"; never "surface.n't" or "Shen't"
        host = prev.text.lower() in _NT_HOSTS if token.lower() == "n't" else not _is_punct(prev.token)
        return "" if host else " "
    if _is_stop(token) and (_is_stop(prev.token) or prev.text.endswith(".")):  # ". . .", "Virginia. . 2"
        return " "
    if _kind(token) == "left":
        return ""
    if token == prev.token == "``":  # two opening quotes: '" "' (a '""' reads as one closing quote)
        return " "
    breaks = [g for g in inherited if "\n" in g]
    if breaks:
        return max(breaks, key=len)  # never lose a paragraph break
    if _kind(prev.token) == "right" or (token == "#" and prev.token == "#"):
        return ""
    return " "


def _apply(words: list[_Word], plan: _Plan, forms: SurfaceForms, force: bool = False) -> list[_Item]:
    """Carry out ``plan`` on the output's words; the model's spacing is kept where nothing changed.

    ``force`` (later rounds) also splits what Punkt failed to split: a period put back after a
    word the model wrote with a period (``p.m. Left``) is written apart (``p.m . Left``), and a
    word glued to a comma gets its space (``Ellison,J.``); a quote whose direction the context
    would flip is written as the Treebank token itself (``''`` opening a chunk).
    """
    items: list[_Item] = []
    carried: list[str] = []  # paragraph breaks of deleted words (or swallowed by punctuation) to pass on

    def emit(item: _Item, inherited: list[str]) -> None:
        nonlocal carried
        prev = items[-1] if items else None
        if item.gap is None:
            item.gap = _fresh_gap(prev, item.token, inherited)
            if force and prev and _kind(item.token) != "left" and prev.token in {",", ";", ":"}:
                item.gap = item.gap or " "
            if force and item.token == "." and prev and prev.orig is not None and words[prev.orig].text.endswith("."):
                item.gap = " "
        if force and item.changed and item.token in QUOTE_SURFACE:
            # '"' turns into `` or '' by context; where the context says the wrong one, write it out
            opening = prev is None or item.gap != "" or _kind(prev.token) == "right"
            if opening != (item.token == "``"):
                item.text = item.token
        breaks = [g for g in inherited if "\n" in g]
        carried = breaks if breaks and "\n" not in item.gap else []
        items.append(item)

    for k in range(len(words) + 1):
        following = words[k] if k < len(words) else None
        took_gap = False
        for token in plan.insert.get(k, ()):
            prev = items[-1] if items else None
            inherited = list(carried)
            # a new sentence-opening word goes after a paragraph break, a sentence's last word before it
            if following and not took_gap and (prev is None or prev.token in _SENTENCE_END):
                inherited.append(following.gap)
                took_gap = "\n" in following.gap
            emit(_Item(token, forms.form(token), None, token, None, True), inherited)
        if following is None:
            break
        if k in plan.delete:
            carried.append(following.gap)
            continue
        replaced = k in plan.replace
        token = plan.replace[k] if replaced else following.token
        text = forms.cased_like(token, following.text) if replaced else following.text
        prev = items[-1] if items else None
        unchanged_left = not (carried or took_gap or replaced) and (
            (k == 0 and prev is None) or (prev is not None and prev.orig == k - 1 and not prev.changed)
        )
        item = _Item(token, text, following.gap if unchanged_left else None, token if replaced else following.stem,
                     k, replaced)
        emit(item, carried + ([] if took_gap else [following.gap]))
    _fix_sentence_case(words, items, forms.lexicon)
    if force:
        _unsplit_periods(words, items)
    return items


def _unsplit_periods(words: list[_Word], items: list[_Item]) -> None:
    """Keep Punkt going after a word that must keep its period (``st.``, ``1854.``, ``T.``).

    Such a word was written but Punkt ended the sentence there (the output had ``1854`` ``.``).
    Punkt reads on before a common lower-case word: a capitalized stopword after it is lowered
    (``1854. In`` -> ``1854. in``); otherwise one is put in (``1854. and 1856``).
    """
    k = 0
    while k + 1 < len(items):
        item, after = items[k], items[k + 1]
        k += 1
        glued = len(item.token) > 1 and item.token.endswith(".") and not _is_punct(item.token)
        if not (glued and item.changed and (after.text[:1].isalnum() or _kind(after.token) == "right")):
            continue
        if _kind(after.token) == "right":  # "Poblacion.[source?]": glued, the period stays
            after.gap = ""
        elif after.stem is None and after.text[:1].isupper() and after.text != "I":
            after.text = after.text.lower()
        elif item.orig is not None and words[item.orig].token != item.token:  # Punkt split it last time
            items.insert(k, _Item("and", "and", " ", None, None, True))


def _join(items: Iterable[_Item], tail: str = "") -> str:
    return "".join(item.gap + item.text for item in items) + tail


def _recased(item: _Item, text: str) -> bool:
    """Set ``item.text`` to ``text`` if that corrupts the same; report success."""
    if item.stem is not None and not is_form_of(text, item.stem):
        return False
    item.text = text
    return True


def _sentence_starts(tokens: Sequence[str], texts: Sequence[str]) -> list[int]:
    """Positions of the first word of each sentence: at the start and after a ``.``/``?``/``!`` token.

    (The tokenizer splits a period off only at the end of a Punkt sentence, so a ``.`` token
    is a sentence end; closing quotes and brackets after it do not start the sentence.)
    """
    starts, expecting = [], True
    for i, (token, text) in enumerate(zip(tokens, texts)):
        if expecting and text[:1].isalnum():
            if token.lower() not in CLITICS:  # a stray "n't" is not capitalized
                starts.append(i)
            expecting = False
        expecting = expecting or token in TERMINATORS
    return starts


def _fix_sentence_case(words: list[_Word], items: list[_Item], lexicon: Lexicon | None) -> None:
    """Capitalize words that now start a sentence; lower common words that no longer do.

    A word is only recased where it corrupts the same (``Dies`` and ``dies`` do not).
    """
    was_start = {k for k in _sentence_starts([w.token for w in words], [w.text for w in words])}
    now_start = _sentence_starts([it.token for it in items], [it.text for it in items])
    for i in now_start:
        item = items[i]
        if (item.orig is None or item.changed or item.orig not in was_start) and item.text[:1].islower():
            _recased(item, item.text[0].upper() + item.text[1:])
    now = {items[i].orig for i in now_start}
    for item in items:
        if item.orig in was_start and item.orig not in now and not item.changed and item.text[1:2].islower():
            stopword = item.stem is None and item.text != "I"
            common = lexicon is not None and lexicon.forms.get(item.stem or "", "")[:1].islower()
            if stopword or common:
                _recased(item, item.text[0].lower() + item.text[1:])


# --- repairing a chunk ---------------------------------------------------------------------------
def _edit(text: str, source: list[str], forms: SurfaceForms, force: bool = False) -> str:
    words, tail = _words(text)
    return _join(_apply(words, _plan(words, source), forms, force), tail)


def render(source: Sequence[str], forms: SurfaceForms | None = None) -> str:
    """Text built from the source tokens alone: surface forms, Treebank spacing, sentence capitals.

    >>> print(render("`` ca n't stop , '' coach said , `` work . '' next .".split()))
    "Can't stop," coach said, "work." Next.
    """
    forms = forms or SurfaceForms()
    text = _join(_apply([], _Plan(insert={0: list(source)}), forms))
    for _ in range(REPAIR_ROUNDS - 1):  # Punkt may still need a forced split ("p.m. Left")
        if roundtrip(text) == tuple(source):
            break
        text = _edit(text, list(source), forms, force=True)
    return text


def _spaced(source: Sequence[str], forms: SurfaceForms) -> str:
    """Every source token's form, space-separated: the last resort for the content tokens."""
    return " ".join(forms.form(t) for t in source)


def repair(output: str, source: str, lexicon: Lexicon | SurfaceForms | None = None) -> str:
    """Edit ``output`` until it corrupts back to ``source``; a faithful output is returned unchanged.

    Aligned edit rounds first (replace changed tokens, insert missing ones, drop invented ones,
    keeping the model's other words); then a rebuild of the whole chunk from the source tokens,
    and space-separated source forms. The first exact candidate wins; otherwise the first one
    whose content tokens match (punctuation can resist: Punkt may split differently), otherwise
    the most similar. :func:`repair_traced` also says which step succeeded.

    >>> lex = Lexicon({"1919": "1919", "pari": "Paris", "peac": "peace", "confer": "conference"})
    >>> repair("In 1918, the peace conference met in London.", "1919 , peac confer met pari .", lex)
    'In 1919, the peace conference met in Paris.'
    >>> repair("The conference met.", "1919 , peac confer met pari .", lex)
    '1919, the peace conference met Paris.'
    """
    return repair_traced(output, source, lexicon)[0]


def repair_traced(output: str, source: str, lexicon: Lexicon | SurfaceForms | None = None) -> tuple[str, str]:
    """:func:`repair` and the step that produced its result: ``faithful`` (untouched), ``edit1``..
    ``edit3`` (aligned edit rounds), ``render``, ``spaced`` (exact rebuilds), ``content`` (only the
    content tokens match) or ``closest`` (nothing matched).

    >>> repair_traced("Born in 1897.", "born 1879 .")
    ('Born in 1879.', 'edit1')
    """
    forms = as_surface_forms(lexicon)
    target = source.split()
    candidates: list[str] = []
    text = output
    for round_ in range(REPAIR_ROUNDS + 1):
        try:
            if check(text, source):
                return text, f"edit{round_}" if round_ else "faithful"
            candidates.append(text)
            if round_ < REPAIR_ROUNDS:
                text = _edit(text, target, forms, force=round_ > 0)
        except _Unlocatable:
            break
    for step, text in (("render", render(target, forms)), ("spaced", _spaced(target, forms))):
        if check(text, source):
            return text, step
        candidates.append(text)
    for text in candidates:
        if check_content(text, source):
            return text, "content"
    return closest(candidates, source), "closest"

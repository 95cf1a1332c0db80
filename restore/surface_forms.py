"""Surface forms: a written word that corrupts to a given source token (stem).

Repairing a restoration (:mod:`restore.repair`) puts source tokens back as words: ``trotski``
as ``Trotsky``, ``parti`` as ``parties``. :class:`SurfaceForms` finds, per token, a form that
is verified to corrupt back to it: the lexicon's most frequent form (:mod:`restore.lexicon`,
shipped with the model), else the token itself, else the token with Porter's endings put back.

>>> forms = SurfaceForms(Lexicon({"trotski": "Trotsky", "revolut": "revolution"}))
>>> forms.form("trotski"), forms.form("revolut"), forms.form("conge"), forms.form("1917")
('Trotsky', 'revolution', 'congee', '1917')
"""

from __future__ import annotations

from typing import Iterator

from restore.corrupt import STOPWORDS, normalize_token, tokenize_words
from restore.lexicon import Lexicon

# Clitics: tokens the tokenizer splits off a word and that are written against it ("Lenin's" "didn't").
CLITICS = frozenset({"'s", "'m", "'d", "'ll", "'re", "'ve", "n't"})
# A Treebank quote token stands for '"' in text (the tokenizer decides `` or '' from context).
QUOTE_SURFACE = {"``": '"', "''": '"'}


def is_form_of(form: str, stem_: str) -> bool:
    """``form`` is kept, corrupts to ``stem_`` and stays one token inside a sentence."""
    return (
        form.lower() not in STOPWORDS
        and normalize_token(form) == stem_
        and tokenize_words(form + " x") == [form, "x"]
    )


# Endings the Porter stemmer removes, to find a word for a stem that is not its own stem
# ("then-applic" <- "then-applicable", "conge" <- "congee"), shortest first.
_ENDINGS = (
    "e s es ed ing y ion ions al ally ate ated ation ations ative able ible ment ments ness ful ity ities "
    "ive ize ized ise ism ist ists ous ence ance ent ant er ers ic ical ly"
).split()


def _unstemmed(stem_: str) -> Iterator[str]:
    """Words that may stem to ``stem_``: the stem capitalized (capitals block the noun lemmatizer),
    with Porter's endings put back (``i`` -> ``y``), or upper case.

    >>> list(_unstemmed("conge"))[:3]
    ['Conge', 'congee', 'conges']
    """
    yield stem_.capitalize()
    bases = [stem_] + ([stem_[:-1] + "y", stem_[:-1]] if stem_.endswith("i") else [])
    for ending in _ENDINGS:
        for base in bases:
            yield base + ending
    yield stem_.upper()
    yield stem_.capitalize() + "s"


class SurfaceForms:
    """Verified surface form per source token: the lexicon's (most frequent) form, else the token.

    >>> forms = SurfaceForms(Lexicon({"trotski": "Trotsky", "parti": "parties", "news": "news"}))
    >>> [forms.form(t) for t in ["trotski", "parti", "1917", "``", "revolut"]]
    ['Trotsky', 'parties', '1917', '"', 'revolut']
    """

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon
        self._cache: dict[str, str] = {}

    def form(self, token: str) -> str:
        if token not in self._cache:
            self._cache[token] = self._find(token)
        return self._cache[token]

    def _find(self, token: str) -> str:
        if token in QUOTE_SURFACE:
            return QUOTE_SURFACE[token]
        known = [self.lexicon.forms[token]] if self.lexicon and token in self.lexicon.forms else []
        # Porter writes a final y as i ("mcnari" <- "McNary"), so try the y first
        plain = [token[:-1] + "y", token] if token.endswith("i") else [token]
        found = next((c for c in known + plain if is_form_of(c, token)), None)
        return found or next((c for c in _unstemmed(token) if is_form_of(c, token)), token)

    def cased_like(self, token: str, model_word: str) -> str:
        """The form for ``token``, capitalized like ``model_word`` where that corrupts the same."""
        form = self.form(token)
        if model_word[:1].isupper() and form[:1].islower() and token.lower() not in CLITICS:
            upper = form[0].upper() + form[1:]
            if is_form_of(upper, token):
                return upper
        return form


def as_surface_forms(lexicon: Lexicon | SurfaceForms | None) -> SurfaceForms:
    """``lexicon`` as :class:`SurfaceForms` (already one: itself), what the repair functions take."""
    return lexicon if isinstance(lexicon, SurfaceForms) else SurfaceForms(lexicon)

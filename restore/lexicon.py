"""Surface forms: for each corrupted token (a stem), the word it most often came from.

Built from original text by running the preprocessing word by word and counting
which surface form produced each stem. Used by the dictionary baseline and by
faithfulness repair (to put a missing source token back as a real word), and
saved next to a trained model as ``lexicon.json.gz``.

>>> lex = Lexicon.build(["The parties met. The party won.", "Parties split."])
>>> lex.surface("parti"), lex.surface("unseen")
('parties', 'unseen')
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from restore.corrupt import drop_stopwords, normalize_token, split_sentences, tokenize_words
from restore.errors import RestoreError

LEXICON_FILE = "lexicon.json.gz"


@dataclass
class Lexicon:
    """Most frequent surface form (as written, lowercased unless always capitalized) per stem."""

    forms: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_entries: int | None = None) -> "Lexicon":
        return cls.from_counts(count_surface_forms(texts), min_count, max_entries)

    @classmethod
    def from_counts(cls, counts: dict[str, Counter], min_count: int = 1, max_entries: int | None = None) -> "Lexicon":
        """The lexicon of :func:`count_surface_forms` counts (of one text, or summed over many).

        >>> a, b = count_surface_forms(["The parties met."]), count_surface_forms(["Parties split. The party won."])
        >>> Lexicon.from_counts(merge_counts([a, b])) == Lexicon.build(["The parties met.", "Parties split. The party won."])
        True
        """
        ranked = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        forms = {}
        for stem_, surface_counts in ranked[:max_entries]:
            if sum(surface_counts.values()) < min_count:
                break
            forms[stem_] = _preferred_form(surface_counts)
        return cls(forms)

    def surface(self, stem_: str) -> str:
        """The surface form for ``stem_``; an unknown stem is returned unchanged."""
        return self.forms.get(stem_, stem_)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / LEXICON_FILE
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
            json.dump(self.forms, f, ensure_ascii=False, separators=(",", ":"))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Lexicon":
        path = Path(directory) / LEXICON_FILE
        if not path.is_file():
            raise RestoreError(
                f"{directory}: no {LEXICON_FILE} (build one: restore lexicon --articles FILE --out DIR; "
                "a model directory holds one too)"
            )
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                forms = json.load(f)
        except (OSError, EOFError, ValueError) as e:  # truncated or not gzip/JSON/UTF-8
            raise RestoreError(f"{path}: corrupt or truncated ({str(e).splitlines()[0]})") from None
        if not isinstance(forms, dict):
            raise RestoreError(f"{path}: corrupt (expected a JSON object of surface forms)")
        return cls(forms)


def count_surface_forms(texts: Iterable[str]) -> dict[str, Counter]:
    """How often each surface token (kept by the preprocessing) produced each stem.

    >>> count_surface_forms(["The parties met. Parties split."])["parti"]
    Counter({'parties': 1, 'Parties': 1})
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        for sentence in split_sentences(text):
            for token in drop_stopwords(tokenize_words(sentence)):
                counts[normalize_token(token)][token] += 1
    return counts


def merge_counts(parts: Iterable[dict[str, Counter]]) -> dict[str, Counter]:
    """Sum of several :func:`count_surface_forms` results (order does not matter)."""
    total: dict[str, Counter] = defaultdict(Counter)
    for part in parts:
        for stem_, surface_counts in part.items():
            total[stem_].update(surface_counts)
    return total


def _preferred_form(surface_counts: Counter) -> str:
    """Lowercase unless the word is (nearly) always capitalized, e.g. names.

    >>> _preferred_form(Counter({"The": 3, "the": 5})), _preferred_form(Counter({"Paris": 9, "paris": 1}))
    ('the', 'Paris')
    """
    lowered: Counter = Counter()
    for form, n in surface_counts.items():
        lowered[form.lower()] += n
    best_lower = max(lowered.items(), key=lambda kv: (kv[1], kv[0]))[0]
    variants = {f: n for f, n in surface_counts.items() if f.lower() == best_lower}
    if best_lower in variants and variants[best_lower] * 4 >= sum(variants.values()):
        return best_lower
    return max(variants.items(), key=lambda kv: (kv[1], kv[0]))[0]

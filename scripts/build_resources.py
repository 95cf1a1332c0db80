"""Derive the offline language resources that ship inside ``restore/resources``.

NLTK's downloader is not reachable offline, so ``restore.corrupt`` carries the
two resources the preprocessing needs, in a compact form made by this script
from an ``nltk_data`` directory (default: ``../shared/nltk_data``):

- ``punkt_english/``: the English Punkt parameters (``punkt_tab/english``),
  copied unchanged (Apache License 2.0, NLTK Project).
- ``wordnet_noun_lemmas.txt.gz``: the lemma column of WordNet 3.0 ``index.noun``
  (one lemma per line; the synset offsets are not needed by the noun lemmatizer).
- ``wordnet_noun.exc``: WordNet 3.0 ``noun.exc``, unchanged.
- ``LICENSE.wordnet`` / ``LICENSE.punkt``: the license notices.

Usage: python scripts/build_resources.py [NLTK_DATA_DIR]
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "restore" / "resources"
PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")


def build(nltk_data: Path) -> None:
    punkt_src = nltk_data / "tokenizers" / "punkt_tab" / "english"
    wordnet_src = nltk_data / "corpora" / "wordnet"
    punkt_dst = RESOURCES / "punkt_english"
    punkt_dst.mkdir(parents=True, exist_ok=True)
    for name in PUNKT_FILES:
        shutil.copyfile(punkt_src / name, punkt_dst / name)

    lemmas = []
    with open(wordnet_src / "index.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # license header lines start with two spaces
                continue
            lemmas.append(line.split(" ", 1)[0])
    # mtime=0 keeps the gzip byte-identical between runs.
    with open(RESOURCES / "wordnet_noun_lemmas.txt.gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(("\n".join(lemmas) + "\n").encode("utf-8"))
    shutil.copyfile(wordnet_src / "noun.exc", RESOURCES / "wordnet_noun.exc")
    shutil.copyfile(wordnet_src / "LICENSE", RESOURCES / "LICENSE.wordnet")
    print(f"wrote {len(lemmas)} noun lemmas and the Punkt English parameters to {RESOURCES}")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "nltk_data"
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else default)

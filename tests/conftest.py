"""Shared fixtures: small, deterministic, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def corrupt_vectors() -> list[dict]:
    with open(DATA / "corrupt_vectors.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def wiki_texts(corrupt_vectors) -> list[str]:
    """A few hundred real Wikipedia sentences grouped into small articles with headings and paragraphs."""
    sentences = [v["original"] for v in corrupt_vectors]
    articles = []
    for a in range(0, len(sentences), 12):
        group = sentences[a : a + 12]
        paragraphs = [" ".join(group[i : i + 4]) for i in range(0, len(group), 4)]
        articles.append(f"{paragraphs[0]}\n\n## Section {a // 12}\n\n" + "\n\n".join(paragraphs[1:]))
    return articles

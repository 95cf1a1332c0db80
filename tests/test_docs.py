"""The documentation a new user runs: every option documented, the documented commands leave
nothing untracked in the checkout (issue 27.9)."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from restore.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "models/README.md", "data/eval/README.md")


def command_sections(text: str, command: str) -> str:
    """The README sections (``### `restore COMMAND ...```) of one command, joined."""
    return "".join(m.group(0) for m in re.finditer(rf"^### `restore {command}\b.*?(?=^##)", text, re.S | re.M))


def test_readme_documents_every_option_of_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in subcommands.choices.items():
        section = command_sections(readme, name)
        assert section, f"README.md has no section for restore {name}"
        for action in parser._actions:
            if action.option_strings and "--help" not in action.option_strings:
                if not any(re.search(rf"`[^`]*{re.escape(o)}\b", section) for o in action.option_strings):
                    missing.append(f"restore {name} {action.option_strings[-1]}")
    assert missing == []


def documented_outputs() -> list[tuple[str, str]]:
    """(document, path) of every relative output path of a ``restore`` command in the docs' bash blocks."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.search(r"(?:python -m restore|^restore) (?:corrupt|infer|eval|lexicon|train)\b(.*)", line)
                if not command:
                    continue
                words = shlex.split(command.group(1).split(" #")[0])
                for flag, value in zip(words, words[1:]):
                    if flag in ("-o", "--output", "--out", "--report") and not value.startswith("/") and "$" not in value:
                        found.append((doc, value))
    return found


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_documented_commands_write_only_ignored_paths():
    outputs = documented_outputs()
    assert ("README.md", "seed.restored.txt") in outputs  # the parser finds the quick start's output
    tracked_or_untracked = [
        (doc, path) for doc, path in outputs
        if subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode != 0
    ]  # fmt: skip
    assert tracked_or_untracked == []


def test_the_committed_example_output_corrupts_back_to_the_example_input():
    """examples/seed.restored.txt is what the quick start's command 1 writes: faithful to seed.txt."""
    from restore.corrupt import corrupt

    examples = ROOT / "examples"
    restored = (examples / "seed.restored.txt").read_text(encoding="utf-8")
    assert restored.count("\n\n") > 10 and restored[:1].isupper()  # paragraphs, cased prose
    assert corrupt(restored).split() == (examples / "seed.txt").read_text(encoding="utf-8").split()

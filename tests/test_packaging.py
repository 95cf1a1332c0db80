"""What `pip install .` gives a user: the shipped model inside the wheel, found from any directory,
and the fast CPU engine as a dependency where CTranslate2 has wheels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "restore-small"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built as `pip install .` builds it (offline: no build isolation)."""
    if not (MODEL / "restore.json").is_file():
        pytest.skip(f"{MODEL} is not in this checkout")
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # setuptools writes build/ into the tree it builds
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "ctranslate2-*", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("restore", "models"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (path,) = out.glob("restore-*.whl")
    return path


def test_the_wheel_carries_the_shipped_model_and_requires_ctranslate2(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    shipped = {f"restore/models/restore-small/{p.name}" for p in MODEL.iterdir() if p.is_file()}
    assert shipped and shipped <= names  # weights, tokenizer, restore.json, lexicon, model card
    assert "restore/models/restore-small/README.md" in names
    assert not any("ctranslate2-" in n for n in names)  # a local conversion never ships
    assert "restore/resources/punkt_english/sent_starters.txt" in names
    assert "restore/static/index.html" in names  # restore serve's page
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: ctranslate2")]
    assert any("sys_platform == \"linux\"" in line and "extra" not in line for line in requires), requires


def test_an_installed_restore_finds_its_model_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # what pip does with a pure-Python wheel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("RESTORE_MODEL", None)
    where = subprocess.run(
        [sys.executable, "-c", "import restore.checkpoint as c; print(c.__file__); print(c.default_model_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == site / "restore" / "models" / "restore-small"

    source = "influenti politician earli day soviet union .\n"
    done = subprocess.run(
        [sys.executable, "-m", "restore", "infer"], input=source, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    from restore.corrupt import corrupt

    assert done.stdout.strip() and corrupt(done.stdout) == source.strip()  # faithful, with the shipped model


def test_conversions_of_an_installed_model_go_to_the_user_cache(tmp_path):
    from restore.backend_ct2 import installed_with_package

    assert installed_with_package(Path(sysconfig.get_paths()["purelib"]) / "restore" / "models" / "restore-small")
    assert not installed_with_package(tmp_path) and not installed_with_package(MODEL)

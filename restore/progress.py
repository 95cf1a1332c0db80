"""Progress bars: one rule for every command.

A bar is drawn only when stderr is a terminal. When stderr goes to a file or a pipe (a log, a
batch job) no bar updates are written, only each command's summary lines. The libraries'
own bars (``datasets``, transformers' loading bars) follow the same rule.

>>> bar = progress(range(3), desc="test")  # stderr is not a terminal under a test runner
>>> bar.disable, list(bar)
(True, [0, 1, 2])
"""

from __future__ import annotations

import sys


def show_progress() -> bool:
    """Whether progress bars are drawn: only when stderr is a terminal."""
    return sys.stderr.isatty()


def quiet_library_bars() -> None:
    """transformers' own bars (e.g. "Writing model shards" when a model is exported) follow the
    rule too (``datasets``' bars: :func:`restore.data._quiet_datasets`)."""
    if not show_progress():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress(iterable=None, *, show: bool = True, **options):
    """A tqdm bar on stderr, drawn only where :func:`show_progress` says (and ``show``, for a
    caller that skips bars for small inputs); ``options`` go to tqdm (``total``, ``desc``, ``unit``)."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not (show and show_progress()), dynamic_ncols=True, **options)

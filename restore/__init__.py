"""restore: turn destroyed (lowercased, stopword-free, stemmed) English text back into readable prose.

>>> import restore
>>> r = restore.load()  # doctest: +SKIP
>>> r("influenti politician earli day soviet union .").text  # doctest: +SKIP
'He was an influential politician of the early days of the Soviet Union.'

(:mod:`restore.api`; importing ``restore`` loads no model and no torch.)
"""

__version__ = "0.1.0"

from restore.api import Pipeline, Restoration, load  # noqa: E402
from restore.corrupt import corrupt  # noqa: E402
from restore.errors import RestoreError  # noqa: E402

__all__ = ["corrupt", "load", "Pipeline", "Restoration", "RestoreError", "__version__"]

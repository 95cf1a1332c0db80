"""restore: turn destroyed (lowercased, stopword-free, stemmed) English text back into readable prose."""

__version__ = "0.1.0"

from restore.corrupt import corrupt  # noqa: E402

__all__ = ["corrupt", "__version__"]

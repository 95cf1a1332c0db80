"""What a Restorer is built from: the decoding presets (``--quality``), explicit decoding options
winning over them, and the model resolved (:func:`restorer_settings`, the one place ``restore
infer``, ``restore serve``, Ray actors and :func:`restore.load` take their settings from).

>>> restorer_settings("models/restore-small", quality="fast")["num_beams"]
1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from restore.errors import RestoreError


def check_positive(option: str, value: int) -> None:
    """An option that counts something (a budget, beams) must be at least 1: one clear error.

    >>> check_positive("--num-beams", 0)
    Traceback (most recent call last):
    restore.errors.RestoreError: --num-beams must be a positive integer, got 0
    """
    if value < 1:
        raise RestoreError(f"{option} must be a positive integer, got {value}")


def check_length_penalty(value: float) -> None:
    """A beam search's length penalty must be a positive number (``nan`` is not).

    >>> check_length_penalty(0)
    Traceback (most recent call last):
    restore.errors.RestoreError: --length-penalty must be positive, got 0
    """
    if not value > 0:
        raise RestoreError(f"--length-penalty must be positive, got {value}")


@dataclass(frozen=True)
class Decoding:
    """How chunks are decoded: beam size and length penalty (beam search only)."""

    num_beams: int
    length_penalty: float = 1.0


# ``--quality``: ``fast`` is greedy; ``best`` a beam search of 6 favouring longer hypotheses (the
# model's outputs are short), whose hypotheses faithfulness chooses from. Chosen from the README's
# decoding table (models/restore-small, ``test``, CTranslate2 int8): the best BLEU at most 1.5x the
# CPU time of a beam of 4 (39.91 at 1.44x; beams 4: 39.52; beams 8, length penalty 2.0: 40.08 at 2.0x).
QUALITY = {"fast": Decoding(num_beams=1), "best": Decoding(num_beams=6, length_penalty=2.0)}
DEFAULT_QUALITY = "best"


def decoding_for(quality: str = DEFAULT_QUALITY, num_beams: int | None = None, length_penalty: float | None = None) -> Decoding:
    """The preset ``quality``, with ``num_beams`` / ``length_penalty`` given explicitly taking precedence.

    >>> decoding_for("fast"), decoding_for("fast", num_beams=3)
    (Decoding(num_beams=1, length_penalty=1.0), Decoding(num_beams=3, length_penalty=1.0))
    """
    if quality not in QUALITY:
        raise RestoreError(f"--quality must be one of {', '.join(QUALITY)}, got {quality!r}")
    preset = QUALITY[quality]
    decoding = Decoding(
        num_beams=preset.num_beams if num_beams is None else num_beams,
        length_penalty=preset.length_penalty if length_penalty is None else length_penalty,
    )
    check_positive("--num-beams", decoding.num_beams)
    check_length_penalty(decoding.length_penalty)
    return decoding


def restorer_settings(
    model: str | Path | None = None,
    *,
    device: str = "auto",
    batch_tokens: int | None = None,
    quality: str = DEFAULT_QUALITY,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    backend: str = "auto",
    compute_type: str = "auto",
    static_cache: bool = False,
    faithful: bool = True,
) -> dict:
    """Keyword arguments of :meth:`Restorer.from_pretrained`, the model resolved (given, else
    ``$RESTORE_MODEL``, else the shipped one) and the decoding resolved (:func:`decoding_for`:
    the ``quality`` preset, ``num_beams``/``length_penalty`` given explicitly winning): what
    ``restore infer``, ``restore serve`` and :func:`restore.load` build a Restorer from (a plain
    dict: Ray actors build their own from it)."""
    from restore.checkpoint import default_model_dir

    decoding = decoding_for(quality, num_beams, length_penalty)
    return dict(
        path=str(model or default_model_dir()), device=device, batch_tokens=batch_tokens, num_beams=decoding.num_beams,
        length_penalty=decoding.length_penalty, backend=backend, compute_type=compute_type, static_cache=static_cache,
        faithful=faithful,
    )  # fmt: skip


def restorer_options(args, model: str | Path | None = None) -> dict:
    """:func:`restorer_settings` from ``restore infer``'s options."""
    return restorer_settings(
        model or args.model, device=args.device, batch_tokens=args.batch_tokens, quality=args.quality,
        num_beams=args.num_beams, length_penalty=args.length_penalty, backend=args.backend,
        compute_type=args.compute_type, static_cache=args.static_cache, faithful=args.faithful,
    )  # fmt: skip

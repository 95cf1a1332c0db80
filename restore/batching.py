"""Token-budget batching: the one rule that groups items into padded batches, for training and inference.

Items come in a fixed order (sorted by length, so that similar lengths share a
batch); consecutive items are grouped while the batch's padded size,
``rows * widest item``, stays within a budget of token ids (subword ids, not the
corrupted words that :class:`restore.chunking.ChunkConfig` counts). An item wider
than the budget on its own gets a batch of its own, so nothing is ever dropped.

>>> budget_batches([30, 28, 15, 14, 6], budget=60)
[range(0, 2), range(2, 5)]
"""

from __future__ import annotations

from typing import Sequence


def budget_batches(widths: Sequence[int], budget: int) -> list[range]:
    """Consecutive ranges of positions into ``widths``, each costing ``len(range) * max(width)`` <= ``budget``.

    >>> budget_batches([2, 3, 3, 5, 8, 9], budget=10)
    [range(0, 3), range(3, 4), range(4, 5), range(5, 6)]
    >>> budget_batches([], budget=10), budget_batches([50], budget=10)
    ([], [range(0, 1)])
    """
    batches: list[range] = []
    start, widest = 0, 0
    for i, width in enumerate(widths):
        width = int(width)
        if i > start and (i - start + 1) * max(widest, width) > budget:
            batches.append(range(start, i))
            start, widest = i, 0
        widest = max(widest, width)
    if len(widths) > start:
        batches.append(range(start, len(widths)))
    return batches

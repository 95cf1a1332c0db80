"""Evaluation during training: dev loss, and dev BLEU of the sources decoded as ``restore infer`` decodes them.

The Trainer (:mod:`restore.train_loop`) calls both every ``train.eval_every`` steps and at
the end, on the main process, with the model in eval mode; the metrics go to the log, to the
run's history and into ``restore.json``. Dev pairs are a fixed sample spread over the dev set
(:func:`restore.token_ids.eval_indices`), so every evaluation scores the same pairs.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from restore.attention import PAD_MULTIPLE, round_up
from restore.batching import budget_batches
from restore.chunking import ChunkConfig
from restore.token_ids import IGNORE_INDEX, TokenizedPairs, eval_indices, to_device


def dev_loss(model, dev_set: TokenizedPairs, pairs: int, batch_tokens: int, pad_id: int, start_id: int, device) -> dict:
    """Cross-entropy per target token of ``pairs`` dev pairs (teacher forcing, no label smoothing)."""
    indices = eval_indices(len(dev_set), pairs)
    total, count = 0.0, 0
    for ids in eval_batches(dev_set, indices, batch_tokens):
        batch = to_device(dev_set.collate(ids, pad_id, start_id), device)
        labels = batch.pop("labels")
        logits = model(**batch, use_cache=False).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    return {"loss": round(total / max(1, count), 5), "loss_pairs": len(indices)}


def dev_bleu(model, tokenizer, dev_set: TokenizedPairs, pairs: int, chunking: ChunkConfig, device) -> dict:
    """sacreBLEU of ``pairs`` dev pairs decoded as ``restore infer --backend torch --no-faithful`` decodes them.

    The sources go through :class:`restore.infer.Restorer` with the torch backend: the same
    generation settings (no forced ``</s>``, ``<pad>``/``<s>`` suppressed), the same new-token
    limits and the same batching as inference, greedy, without faithfulness repair.
    """
    if not pairs:
        return {}
    from sacrebleu.metrics import BLEU

    from restore.backends import TorchGenerator
    from restore.infer import Restorer

    indices = eval_indices(len(dev_set), pairs)
    src, s_off, tgt, t_off = dev_set.src, dev_set.src_off, dev_set.tgt, dev_set.tgt_off
    decode = tokenizer.batch_decode
    sources = decode([src[s_off[i] : s_off[i + 1]] for i in indices], skip_special_tokens=True)
    refs = decode([tgt[t_off[i] : t_off[i + 1]] for i in indices], skip_special_tokens=True)
    kept = model.generation_config  # the generator installs restoration's own; the export keeps the model's
    try:
        generator = TorchGenerator(model, device, next(model.parameters()).dtype)
        restorer = Restorer(
            tokenizer, generator, chunking, device=device,
            max_positions=int(model.config.max_position_embeddings), faithful=False,
        )  # fmt: skip
        hyps = restorer.restore_chunks(sources)
    finally:
        model.generation_config = kept
    bleu = BLEU()
    score = bleu.corpus_score(hyps, [refs])
    return {"bleu": round(score.score, 3), "bleu_pairs": len(indices), "bleu_signature": str(bleu.get_signature())}


def eval_batches(dev_set: TokenizedPairs, indices: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """``indices`` sorted by padded length and cut into batches of at most ``batch_tokens`` padded tokens."""
    lengths = round_up(np.maximum(np.maximum(dev_set.src_lens, dev_set.tgt_lens), 1), PAD_MULTIPLE)
    order = indices[np.argsort(lengths[indices], kind="stable")]
    return [order[r.start : r.stop] for r in budget_batches(lengths[order], batch_tokens)]

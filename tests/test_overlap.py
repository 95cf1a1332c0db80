"""Overlapped restoration (generation in a worker thread, faithfulness and assembly in the caller's):
the same documents, in the same order, with the same counts as the sequential path."""

from __future__ import annotations

import threading

import pytest
import torch

from restore.backends import TorchGenerator, restore_generation_config
from restore.chunking import ChunkConfig
from restore.corrupt import corrupt
from restore.infer import Restorer
from restore.model import ModelConfig, build_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tokenizer):
    """A random BART whose outputs vary per input and end at different lengths."""
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, encoder_layers=1, decoder_layers=2, attention_heads=2, ffn_dim=64, dropout=0.0)
    model = build_model(config, len(tokenizer)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        model.final_logits_bias[0, model.config.eos_token_id] = 5.0
    model.generation_config = restore_generation_config(model.config)
    return model


class Recording:
    """A generator wrapper that records which thread ran each batch."""

    def __init__(self, inner):
        self.inner = inner
        self.batch_tokens = inner.batch_tokens
        self.threads: list[str] = []

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **options):
        self.threads.append(threading.current_thread().name)
        return self.inner.generate(batch, max_new_tokens, num_beams, num_return_sequences, **options)


def test_overlapped_equals_sequential(tokenizer, model, wiki_texts):
    documents = [corrupt(text) for text in wiki_texts[:3]]
    chunking = ChunkConfig(max_source_words=12)
    runs = {}
    for overlap in (False, True):
        generator = Recording(TorchGenerator(model, torch.device("cpu"), torch.float32, compact=True))
        restorer = Restorer(tokenizer, generator, chunking, window_chunks=6, overlap=overlap)  # many windows
        runs[overlap] = (list(restorer.restore_many(iter(documents))), restorer.stats, generator.threads)
    (sequential, s_stats, s_threads), (overlapped, o_stats, o_threads) = runs[False], runs[True]
    assert overlapped == sequential and len(sequential) == len(documents)
    assert (o_stats.documents, o_stats.chunks, o_stats.generated_tokens) == (s_stats.documents, s_stats.chunks, s_stats.generated_tokens)
    assert o_stats.faithful == s_stats.faithful and s_stats.faithful.failed_greedy > 0  # beam repair ran too
    assert s_stats.documents == len(documents) and s_stats.chunks > 3 * 6
    assert set(s_threads) == {threading.current_thread().name}
    assert any(name.startswith("restore-generate") for name in o_threads)  # greedy drafts in the worker
    assert threading.current_thread().name in o_threads  # beam repair in the caller's thread


def test_overlap_is_on_for_cuda_only(tokenizer):
    chunking = ChunkConfig()
    assert not Restorer(tokenizer, None, chunking, device="cpu", batch_tokens=100).overlap
    assert Restorer(tokenizer, None, chunking, device="cuda", batch_tokens=100).overlap
    assert Restorer(tokenizer, None, chunking, device="cpu", batch_tokens=100, overlap=True).overlap


def test_an_error_in_the_worker_reaches_the_caller(tokenizer, wiki_texts):
    class Broken:
        batch_tokens = 1000

        def generate(self, *args, **kwargs):
            raise ValueError("broken generator")

    restorer = Restorer(tokenizer, Broken(), ChunkConfig(max_source_words=12), window_chunks=5, overlap=True)
    with pytest.raises(ValueError, match="broken generator"):
        list(restorer.restore_many([corrupt(text) for text in wiki_texts[:3]]))

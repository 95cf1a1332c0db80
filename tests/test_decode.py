"""The compact decoder (restore.decode) against transformers' ``generate``: token for token, on the CPU.

The models are small random BARTs with large weights and a bias towards ``</s>``, so that
outputs differ per input and end at many different lengths (a plain random model repeats
one token to the limit and would hide cache, mask and stopping errors).
"""

from __future__ import annotations

import logging

import pytest
import torch

from restore.backends import DEFAULT_BATCH_TOKENS, TorchGenerator, pad_batch, restore_generation_config, strip_generated
from restore.decode import StaticGreedyDecoder, compact_decoder_for
from restore.model import ModelConfig, build_model

EOS, PAD = 3, 0
VOCAB = 300


pytestmark = pytest.mark.usefixtures("one_thread")


def varied_model(seed: int, std: float, eos_bias: float, decoder_layers: int = 2):
    torch.manual_seed(seed)
    config = ModelConfig(d_model=32, encoder_layers=2, decoder_layers=decoder_layers, attention_heads=4, ffn_dim=64, dropout=0.0)
    model = build_model(config, VOCAB).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        model.final_logits_bias[0, EOS] = eos_bias
    model.generation_config = restore_generation_config(model.config)
    return model


MODELS = {"varied": (0, 0.3, 5.0), "calmer": (1, 0.15, 3.0), "wild": (2, 0.5, 8.0)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return varied_model(*MODELS[request.param])


@pytest.fixture(scope="module")
def inputs() -> list[list[int]]:
    """96 encoder inputs of 1-60 ids, each ending with </s>."""
    generator = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 61, (96,), generator=generator).tolist()
    return [torch.randint(4, VOCAB, (n,), generator=generator).tolist() + [EOS] for n in lengths]


def plain_generate(model, batch: list[list[int]], max_new_tokens: int, min_new_tokens: int = 0) -> list[list[int]]:
    ids, mask = pad_batch(batch, PAD)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens or None, do_sample=False)  # fmt: skip
    return strip_generated(out, EOS, max_new_tokens)


def compact_generate(decoder: StaticGreedyDecoder, batch, max_new_tokens: int, min_new_tokens: int = 0, cache_length=None):
    ids, mask = pad_batch(batch, PAD)
    out = decoder.decode(ids, mask, max_new_tokens, min_new_tokens, cache_length)
    return strip_generated(torch.cat([torch.full((len(batch), 1), 2), out], dim=1), EOS, max_new_tokens)


def test_equal_to_generate_token_for_token(model, inputs):
    """96 inputs in batches of 16 (padded), cache exactly and 3x as long as needed."""
    decoder = StaticGreedyDecoder(model)
    outputs = []
    for k in range(0, len(inputs), 16):
        batch = inputs[k : k + 16]
        expected = plain_generate(model, batch, 48)
        assert compact_generate(decoder, batch, 48) == expected
        assert compact_generate(decoder, batch, 48, cache_length=144) == expected
        outputs += expected
    lengths = [len(o) for o in outputs]
    assert len(set(lengths)) >= 8 and min(lengths) < 48 and max(lengths) == 48  # EOS at many lengths, some cut
    assert len({tuple(o) for o in outputs}) > 10  # outputs depend on the input


def test_raw_rows_match_generate_including_padding_after_eos(model, inputs):
    decoder = StaticGreedyDecoder(model)
    batch = inputs[:12]
    ids, mask = pad_batch(batch, PAD)
    with torch.inference_mode():
        plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False)[:, 1:]
    out = decoder.decode(ids, mask, 30)
    assert torch.equal(out[:, : plain.shape[1]], plain)
    assert (out[:, plain.shape[1] :] == PAD).all()  # generate stopped early: every row had finished


@pytest.mark.parametrize("min_new, max_new", [(5, 20), (20, 20), (0, 1), (1, 1)])
def test_min_and_max_new_tokens_as_generate(min_new, max_new, inputs):
    model = varied_model(*MODELS["wild"])  # ends early most often: min_new_tokens matters
    decoder = StaticGreedyDecoder(model)
    batch = inputs[:24]
    out = compact_generate(decoder, batch, max_new, min_new)
    assert out == plain_generate(model, batch, max_new, min_new)
    assert all(min_new <= len(o) <= max_new for o in out)
    if min_new == max_new:
        assert all(len(o) == max_new for o in out)


def test_generator_batched_equals_one_by_one_and_generate(inputs):
    """The TorchGenerator's compact path, with and without shape buckets (rows, source, cache padded)."""
    model = varied_model(*MODELS["varied"])
    cpu = torch.device("cpu")
    reference = TorchGenerator(model, cpu, torch.float32, compact=False)
    compact = TorchGenerator(model, cpu, torch.float32, compact=True)
    bucketed = TorchGenerator(model, cpu, torch.float32, compact=True, buckets=True)
    assert compact.compact is not None and reference.compact is None
    batch = sorted(inputs[:40], key=len, reverse=True)
    one_by_one = [compact.generate([x], 64)[0] for x in batch]
    assert one_by_one == [reference.generate([x], 64)[0] for x in batch]
    assert compact.generate(batch, 64) == one_by_one
    assert bucketed.generate(batch, 64) == one_by_one
    assert bucketed.generate(batch[:5], 64, min_new_tokens=10) == reference.generate(batch[:5], 64, min_new_tokens=10)
    # Beams keep using generate.
    assert compact.generate(batch[:4], 10, num_beams=2, num_return_sequences=2) == reference.generate(
        batch[:4], 10, num_beams=2, num_return_sequences=2
    )


def test_single_layer_decoder_and_buckets_reused():
    model = varied_model(3, 0.3, 4.0, decoder_layers=1)
    decoder = StaticGreedyDecoder(model)
    batch = [[5, 6, 7, EOS], [8, EOS]]
    first = compact_generate(decoder, batch, 16)
    assert compact_generate(decoder, batch, 16) == first == plain_generate(model, batch, 16)
    assert len(decoder._buckets) == 1  # the same shape reuses its static tensors


def test_unsupported_model_falls_back_with_one_line(caplog):
    from transformers import MBartConfig, MBartForConditionalGeneration

    config = MBartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
    mbart = MBartForConditionalGeneration(config)  # pre-layer-norm: not the step restore.decode computes
    decoder, reason = compact_decoder_for(mbart)
    assert decoder is None and reason.startswith("compact decoder: ") and "\n" not in reason
    with caplog.at_level(logging.WARNING, logger="restore.backends"):
        generator = TorchGenerator(mbart, torch.device("cpu"), torch.float32, compact=True)
    assert generator.compact is None and "using generate" in caplog.text
    assert len(generator.generate([[5, 6, 2]], 4)[0]) <= 4


def test_describe_names_the_decoder():
    model = varied_model(*MODELS["calmer"])
    generator = TorchGenerator(model, torch.device("cpu"), torch.float32, compact=True)
    assert generator.describe().endswith("compact decoder (eager)")
    assert generator.batch_tokens == DEFAULT_BATCH_TOKENS["cpu"]  # sized from free memory on CUDA only

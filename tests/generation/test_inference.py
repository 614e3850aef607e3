"""Batched and one-by-one generation on a tiny Qwen2 model built here (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import USERS, tiny_qwen2  # noqa: E402
from transformers import LogitsProcessor  # noqa: E402

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.generation import inference  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402

@pytest.fixture(scope="module")
def prompts():
    return [modeling.chat_text(u) for u in USERS]


class NoStop(LogitsProcessor):
    """Never lets the model emit eos: every sequence runs to max_new_tokens."""

    def __init__(self, eos_id: int):
        self.eos_id = eos_id

    def __call__(self, input_ids, scores):
        scores[:, self.eos_id] = -float("inf")
        return scores


class Script(LogitsProcessor):
    """Forces row r of the batch to write scripts[r] token by token, counted from the prompt width."""

    def __init__(self, width: int, scripts: list[list[int]]):
        self.width, self.scripts = width, scripts

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.width
        forced = torch.full_like(scores, -1e9)
        for r, script in enumerate(self.scripts):
            forced[r, script[min(k, len(script) - 1)]] = 0.0
        return forced


def test_greedy_batched_equals_one_by_one(model, tok, prompts):
    # Prompts of different lengths: left padding must not change what the model writes.
    kwargs = dict(max_new_tokens=12, temperature=0.0, n_samples=2, progress=False)
    batched_stats, single_stats = {}, {}
    batched = inference.generate(model, tok, prompts, batch_size=3, stats=batched_stats, **kwargs)
    single = inference.generate_one_by_one(model, tok, prompts, stats=single_stats, **kwargs)
    assert batched == single
    assert [len(s) for s in batched] == [2] * len(prompts)
    assert all(a == b for a, b in batched)  # greedy: both samples of a prompt are the same
    assert batched_stats["sequences"] == single_stats["sequences"] == 2 * len(prompts)
    assert batched_stats["new_tokens"] == single_stats["new_tokens"] > 0


def test_sampling_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(model, tok, prompts):
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_p=0.95, n_samples=2, batch_size=4, progress=False)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = inference.generate(model, tok, prompts, seed=0, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    assert inference.generate(model, tok, prompts, seed=0, **kwargs) == a
    assert inference.generate(model, tok, prompts, seed=1, **kwargs) != a
    assert any(x != y for x, y in a)  # samples of one prompt differ


def test_special_tokens_are_kept_and_eos_and_padding_dropped(model, tok, prompts):
    ids = {t: tok.convert_tokens_to_ids(t) for t in (fmt.REASONING_START, fmt.STEP_START, fmt.PROCEED)}
    eos = tok.eos_token_id
    # Row r writes r + 1 structural tokens, then eos: rows end at different steps, so the
    # shorter ones are padded while the longest finishes.
    pieces = [fmt.REASONING_START, fmt.STEP_START, fmt.PROCEED, fmt.STEP_START]
    scripts = [[ids[p] for p in pieces[:r + 1]] + [eos] for r in range(len(prompts))]
    stats = {}
    out = inference.generate(model, tok, prompts, max_new_tokens=10, temperature=0.0, batch_size=len(prompts),
                             logits_processor=lambda width: [Script(width, scripts)], progress=False, stats=stats)
    assert [o[0] for o in out] == ["".join(pieces[:r + 1]) for r in range(len(prompts))]
    # real tokens 1 + 2 + 3 + 4; the batch computed 4 rows x 5 columns (the longest row and its eos)
    assert stats["new_tokens"] == 10 and stats["batch_slots"] == 4 * 5
    for o in out:
        assert modeling.IM_END not in o[0] and modeling.ENDOFTEXT not in o[0]


def test_generation_runs_to_max_new_tokens_without_eos(model, tok, prompts):
    stats = {}
    out = inference.generate(model, tok, prompts[:3], max_new_tokens=7, temperature=1.0, batch_size=2,
                             logits_processor=[NoStop(tok.eos_token_id)], progress=False, stats=stats)
    assert stats["new_tokens"] == stats["batch_slots"] == 3 * 7 and stats["tokens_per_s"] > 0
    assert len(out) == 3 and all(len(o) == 1 for o in out)


def test_kv_cache_off_gives_the_same_greedy_text(model, tok, prompts):
    kwargs = dict(max_new_tokens=8, temperature=0.0, progress=False)
    assert inference.generate(model, tok, prompts[:2], use_cache=False, **kwargs) == \
        inference.generate(model, tok, prompts[:2], **kwargs)


def test_preallocated_cache_gives_the_default_caches_outputs(model, tok, prompts):
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    kwargs = dict(max_new_tokens=9, do_sample=False, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    cache = inference.preallocated_cache(model, enc["input_ids"].shape[1] + 9)
    assert cache is not None
    with torch.inference_mode():
        default = model.generate(**enc, **kwargs)
        preallocated = model.generate(**enc, **kwargs, cache=cache)
    assert torch.equal(default, preallocated)
    assert cache.layers[0].keys.shape[-2] == enc["input_ids"].shape[1] + 8  # the last token is never fed back


def test_preallocated_layer_matches_concatenation_through_crop_select_and_overflow():
    from transformers.cache_utils import DynamicLayer

    layer = inference._preallocated_layer_class()(capacity=6)
    plain = DynamicLayer()
    torch.manual_seed(0)

    def both(n, batch=3):
        k, v = torch.randn(batch, 2, n, 4), torch.randn(batch, 2, n, 4)
        got, want = layer.update(k, v), plain.update(k.clone(), v.clone())
        assert all(torch.equal(g, w) for g, w in zip(got, want))

    both(4)
    both(1)
    buffer = layer._buffers[0]
    assert layer.keys.data_ptr() == buffer.data_ptr()  # written in place, no new tensor
    layer.crop(-2), plain.crop(-2)
    both(1)
    index = torch.tensor([2, 0])
    layer.batch_select_indices(index), plain.batch_select_indices(index)
    both(1, batch=2)
    both(5, batch=2)  # past the capacity: a larger buffer
    assert layer.get_seq_length() == plain.get_seq_length() == 10


def test_no_preallocated_cache_for_sliding_window_layers(tok):
    model = tiny_qwen2(tok, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                       use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert inference.preallocated_cache(model, 32) is None


def test_model_mode_is_restored_and_bad_arguments_are_named(model, tok, prompts):
    model.train()
    inference.generate(model, tok, prompts[:1], max_new_tokens=2, temperature=0.0, progress=False)
    assert model.training
    model.eval()
    with pytest.raises(TypeError, match="list of prompt texts"):
        inference.generate(model, tok, prompts[0], max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        inference.generate(model, tok, prompts, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        inference.generate(model, tok, prompts, max_new_tokens=2, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        inference.generate_one_by_one(model, tok, prompts, max_new_tokens=0, temperature=0.0)
    with pytest.raises(TypeError, match="logits_processor"):
        inference.generate(model, tok, prompts[:1], max_new_tokens=2, temperature=0.0, logits_processor=3,
                           progress=False)


def test_a_tokenizer_without_the_reasoning_tokens_is_refused(model):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    with pytest.raises(ValueError, match="reasoning token"):
        inference.generate(model, plain, ["x"], max_new_tokens=2, temperature=0.0)

"""The lean decode loop against transformers' model.generate, on tiny Qwen2 models built here (no downloads).

Greedy and seeded sampled outputs must be the very tokens model.generate writes, with and without
Steiner's processors; the first-token distribution must be the tempered, top-p cut softmax.
"""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import helpers  # noqa: E402
from helpers import ONE_LAYER, one_thread, tiny_qwen2  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

from steiner_lib import params as P  # noqa: E402
from steiner_lib.generation import inference, lean_decode  # noqa: E402
from steiner_lib.generation import constraints as C  # noqa: E402
from steiner_lib.training import checkpoints, modeling  # noqa: E402

USERS = [*helpers.USERS, "A", "then 75 + 7 = 82."]  # six prompts of several widths


def encode(tok, users):
    return tok([modeling.chat_text(u) for u in users], return_tensors="pt", padding=True, padding_side="left",
               add_special_tokens=False)


class Booster(LogitsProcessor):
    """Makes a random model write reasoning tokens often, so the processors' rules fire."""

    def __init__(self, tok, boost: float = 3.0):
        self.index, self.boost = torch.tensor(sorted(C.ReasoningTokenIds.from_tokenizer(tok).reasoning)), boost

    def __call__(self, input_ids, scores):
        scores[:, self.index] += self.boost
        return scores


class EosAt(LogitsProcessor):
    """Forces eos at generated position stops[r] for row r (None: never), so rows finish at different times."""

    def __init__(self, width: int, stops, eos: int):
        self.width, self.stops, self.eos = width, stops, eos

    def __call__(self, input_ids, scores):
        at = input_ids.shape[1] - self.width
        for r, stop in enumerate(self.stops):
            if stop is None:
                scores[r, self.eos] = float("-inf")
            elif at == stop:
                scores[r] = float("-inf")
                scores[r, self.eos] = 0.0
        return scores


def both(model, tok, enc, processors_factory, max_new_tokens=48, temperature=0.0, top_p=1.0, seed=0):
    """(model.generate ids, lean ids) for the same prompts, processors (made fresh for each) and seed."""
    width = enc["input_ids"].shape[1]
    sampling = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature,
                                                                    top_p=top_p, top_k=0)
    with one_thread(), torch.inference_mode(), torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=[tok.eos_token_id],
                             pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList(
                                 processors_factory(width)), **sampling)
        torch.manual_seed(seed)
        out = lean_decode.generate_ids(model, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                                       tok.eos_token_id, tok.pad_token_id, temperature=temperature, top_p=top_p,
                                       logits_processor=processors_factory(width))
    return ref, out


PROCESSORS = {
    "none": lambda tok: (lambda width: []),
    "reasoning_constraints(2, 3)": lambda tok: (lambda width: [
        Booster(tok), C.ReasoningConstraints(tok, 2, 3, prompt_length=width)]),
    "soft bias": lambda tok: (lambda width: [Booster(tok), C.SoftReasoningBias(tok, 1, 2, bias=4.0,
                                                                               prompt_length=width)]),
    "budget forcing": lambda tok: (lambda width: [
        Booster(tok), C.ReasoningConstraints(tok, 0, None, prompt_length=width),
        C.BudgetForcing(tok, min_reasoning_tokens=12, max_reasoning_tokens=24, grace_tokens=6,
                        prompt_length=width)]),
}


@pytest.mark.parametrize("name", list(PROCESSORS))
@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (0.7, 0.9), (1.0, 1.0)])
def test_same_tokens_as_transformers_generate(model, tok, name, temperature, top_p):
    ref, out = both(model, tok, encode(tok, USERS), PROCESSORS[name](tok), temperature=temperature, top_p=top_p)
    assert torch.equal(ref, out), f"{name}, T={temperature}: rows differ {(ref != out).any(1).nonzero().tolist()}"


def test_same_tokens_without_padding_and_at_batch_one(model, tok):
    for users in ([USERS[1]] * 3, [USERS[3]]):  # no padding: transformers drops the mask, so does the loop
        ref, out = both(model, tok, encode(tok, users), PROCESSORS["reasoning_constraints(2, 3)"](tok))
        assert torch.equal(ref, out)


def test_rows_that_finish_early_leave_the_batch_without_changing_any_token(model, tok):
    enc = encode(tok, USERS)
    stops = [3, None, 0, 10, 5, None]  # 4 of 6 rows finish at different steps: the batch is compacted twice
    for temperature in (0.0, 0.8):
        ref, out = both(model, tok, enc, lambda width: [EosAt(width, stops, tok.eos_token_id)],
                        temperature=temperature)
        assert torch.equal(ref, out)
        assert (out[2, enc["input_ids"].shape[1]:] == tok.pad_token_id).sum() == out.shape[1] - enc[
            "input_ids"].shape[1] - 1  # eos, then pad


def test_the_default_presets_model_shape_writes_what_transformers_writes(tok):
    """The CPU preset's architecture (hidden 128, 4 layers, 4 heads on 2 KV heads: the 1.1 M model)."""
    shape = checkpoints.model_config(P.load_preset(P.project_root() / "params" / "cpu.yaml").model)
    big = tiny_qwen2(tok, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                     num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
                     num_key_value_heads=shape.num_kv_heads)
    ref, out = both(big, tok, encode(tok, USERS), PROCESSORS["reasoning_constraints(2, 3)"](tok), max_new_tokens=64)
    assert torch.equal(ref, out)


def test_sampling_is_seeded(model, tok):
    enc = encode(tok, USERS)
    _, a = both(model, tok, enc, PROCESSORS["none"](tok), temperature=1.0, seed=5)
    _, b = both(model, tok, enc, PROCESSORS["none"](tok), temperature=1.0, seed=5)
    _, c = both(model, tok, enc, PROCESSORS["none"](tok), temperature=1.0, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic over the tokens of nonzero probability, and its degrees of freedom."""
    keep = probs > 0
    expected = probs[keep] * counts.sum()
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def test_first_token_frequencies_follow_the_tempered_top_p_softmax(tok):
    """4,000 draws of the first token of one prompt against softmax(logits / T) cut to the top-p nucleus
    (computed here, not by transformers' warpers); the untruncated softmax must be rejected (the test can fail)."""
    flat = tiny_qwen2(tok, seed=1, initializer_range=0.3)  # larger weights: a spread of probabilities
    enc = encode(tok, [USERS[0]] * 4000)
    temperature, top_p = 0.8, 0.7
    with one_thread(), torch.inference_mode(), torch.random.fork_rng():
        logits = flat(**{k: v[:1] for k, v in enc.items()}).logits[0, -1] / temperature
        torch.manual_seed(0)
        out = lean_decode.generate_ids(flat, enc["input_ids"], enc["attention_mask"], 1, tok.eos_token_id,
                                       tok.pad_token_id, temperature=temperature, top_p=top_p)
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]  # mass of the more likely tokens
    nucleus = torch.zeros_like(probs)
    nucleus[order[before < top_p]] = probs[order[before < top_p]]
    nucleus /= nucleus.sum()
    assert 3 <= int((nucleus > 0).sum()) < len(probs) // 2  # a real cut with several candidates
    counts = torch.bincount(out[:, -1], minlength=len(probs)).double()
    assert counts[nucleus == 0].sum() == 0, "a token outside the nucleus was drawn"
    stat, dof = chi_square(counts, nucleus.double())
    assert stat < dof + 5 * math.sqrt(2 * dof), (stat, dof)  # ~5 standard deviations of a chi-square
    wrong, wdof = chi_square(counts, probs.double())  # the untruncated softmax puts mass where no draw fell
    assert wrong > wdof + 5 * math.sqrt(2 * wdof)


def test_inference_generate_lean_and_transformers_give_the_same_texts(model, tok):
    prompts = [modeling.chat_text(u) for u in USERS]
    kwargs = dict(max_new_tokens=32, batch_size=4, seed=3, progress=False, n_samples=2, temperature=0.9,
                  logits_processor=lambda width: [C.ReasoningConstraints(tok, 1, 2, prompt_length=width)])
    with one_thread():
        lean = inference.generate(model, tok, prompts, backend="lean", **kwargs)
        hf = inference.generate(model, tok, prompts, backend="transformers", **kwargs)
    assert lean == hf


def test_a_model_the_loop_does_not_cover_falls_back_to_transformers_with_a_warning(tok, caplog):
    eager = tiny_qwen2(tok, **ONE_LAYER)
    eager.config._attn_implementation = "eager"
    assert "eager" in lean_decode.unsupported_reason(eager)
    with pytest.raises(ValueError, match="use backend 'transformers'"):
        lean_decode.Qwen2Stepper(eager, 1, 8)
    with caplog.at_level(logging.WARNING, logger="steiner_lib.generation.inference"), one_thread():
        texts = inference.generate(eager, tok, [modeling.chat_text(USERS[0])], max_new_tokens=4, temperature=0.0,
                                   progress=False, backend="lean")
    assert len(texts) == 1 and "generating with model.generate instead" in caplog.text


def test_bad_backends_are_refused_with_the_fix(model, tok):
    from steiner_lib.generation import backends

    with pytest.raises(ValueError, match="backends.load_model"):
        inference.generate(model, tok, ["x"], max_new_tokens=2, temperature=0.0, backend="vllm")
    with pytest.raises(ValueError, match="is not one of"):
        backends.resolve_backend("fast")
    assert backends.in_process("vllm") == backends.in_process("auto") == "lean"  # no GPU, no vLLM here

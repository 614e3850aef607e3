"""The lean decode loop: batched generation for Qwen2 models without model.generate's machinery.

Why it exists: issue 14 measured generation on the default model (1.1 M parameters) at 2-3% of
the machine's matmul peak. This loop does the same work with less around it: no per-step input
preparation, mask building, module calls or cache objects, and rows that finished leave the
batch instead of computing padding to the end. benchmarks/generation.py measures it against
model.generate, transformers' static cache with and without torch.compile, and CTranslate2
(benchmarks/results/generation.txt): what remains per step is mostly the work itself, the small
weight matmuls and attention reading the whole K/V cache.

What it does: the prompt is run through the model's own forward (one call, transformers' code);
its keys and values go into buffers preallocated for prompt + max_new_tokens positions; each
new token then runs through `Qwen2Stepper.step`, which performs the operations of transformers'
Qwen2 decoder (the same ops on the same weights in the same order, so greedy outputs are
exactly transformers' own: tests/generation/test_lean_decode.py) without its modules and masks. Logits
processors are the caller's transformers LogitsProcessor objects, applied to the same input_ids
model.generate would pass, followed by transformers' own warpers (temperature, top-k, top-p,
min-p), then softmax and torch.multinomial as in generate's sampling: a seeded sampled run draws
the same tokens as model.generate.

Covered: Qwen2-architecture models (Qwen2 and Qwen2.5; the CPU preset builds one) with SDPA
attention, full attention in every layer and default RoPE. `unsupported_reason` says why another
model is not; `inference.generate` then falls back to model.generate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# generation_config fields the loop honours (all others must keep their defaults; see unsupported_reason)
_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
_NEUTRAL = {"no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
            "min_new_tokens": (None, 0), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
            "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "typical_p": (None, 1.0),
            "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,),
            "encoder_repetition_penalty": (None, 1.0), "sequence_bias": (None,), "guidance_scale": (None, 1.0),
            "watermarking_config": (None,), "renormalize_logits": (None, False),
            "exponential_decay_length_penalty": (None,)}


def unsupported_reason(model) -> str | None:
    """None when the lean loop computes exactly what model.generate would, else why not."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "qwen2":
        return f"model type {getattr(config, 'model_type', type(model).__name__)!r} (the loop implements Qwen2)"
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {config._attn_implementation!r} (the loop mirrors 'sdpa')"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "sliding-window layers"
    if (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        return f"RoPE type {config.rope_parameters['rope_type']!r} (the loop implements the default RoPE)"
    gc = getattr(model, "generation_config", None)
    for name, neutral in _NEUTRAL.items():
        if getattr(gc, name, None) not in neutral:
            return f"generation_config.{name}={getattr(gc, name)!r} (the loop applies {', '.join(_SAMPLING_FIELDS)} only)"
    return None


def _rms_norm(x, weight, eps):  # transformers' Qwen2RMSNorm, op for op
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Qwen2Stepper:
    """One batch's decode state: the model's weights (read, not copied) and K/V buffers of `capacity` positions.

    Every row writes its next key and value at the same column (prompts are left-padded), so one
    `length` serves the batch; rows that finished keep computing (their tokens are pad), as in
    model.generate.
    """

    def __init__(self, model, batch: int, capacity: int):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the lean decode loop cannot run this model: {reason}; use backend 'transformers'")
        config = model.config
        self.model, self.capacity = model, capacity
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        inner = model.model
        self.embed, self.norm, self.lm_head = inner.embed_tokens.weight, inner.norm, model.lm_head.weight
        self.inv_freq, self.rope_scaling = inner.rotary_emb.inv_freq, inner.rotary_emb.attention_scaling
        self.layers = [layer for layer in inner.layers]
        like = self.embed
        shape = (len(self.layers), batch, self.kv_heads, capacity, self.head_dim)
        self.keys, self.values = like.new_empty(shape), like.new_empty(shape)
        self.length = 0

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch (indices into the current rows), in this order."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]

    def prefill(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """Run the prompts through the model's own forward; keep their keys and values; the last logits (float32)."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        width = input_ids.shape[1]
        if width > self.capacity:
            raise ValueError(f"prompt width {width} exceeds the buffer of {self.capacity} positions")
        for i, layer in enumerate(cache.layers):
            self.keys[i, :, :, :width] = layer.keys
            self.values[i, :, :, :width] = layer.values
        self.length = width
        return out.logits[:, -1].to(copy=True, dtype=torch.float32)

    def step(self, tokens, position_ids, attention_mask) -> torch.Tensor:
        """Logits (float32, batch x vocabulary) after feeding one token per row.

        tokens: (batch,); position_ids: (batch, 1); attention_mask: (batch, length + 1) of 0/1, or
        None when no row has padding (transformers drops an all-ones mask; so does the loop).
        """
        if self.length >= self.capacity:
            raise ValueError(f"the K/V buffers hold {self.capacity} positions; all are used")
        batch, at = tokens.shape[0], self.length
        x = F.embedding(tokens[:, None], self.embed)
        freqs = position_ids[..., None].float() * self.inv_freq.to(dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scaling).to(x.dtype)[:, None]
        sin = (emb.sin() * self.rope_scaling).to(x.dtype)[:, None]
        # transformers' sdpa_attention_forward for one query: with a mask, the query heads of a KV
        # group become its rows (pack_gqa); without one, SDPA's own grouped-query attention
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i, :, :, at:at + 1] = k
            self.values[i, :, :, at:at + 1] = v
            keys, values = self.keys[i, :, :, :at + 1], self.values[i, :, :, :at + 1]
            if mask is None:
                o = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling,
                                                   enable_gqa=self.groups > 1)
            else:
                query = q.reshape(batch, self.kv_heads, self.groups, self.head_dim) if self.groups > 1 else q
                o = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attn.scaling)
            o = o.reshape(batch, -1, 1, self.head_dim).transpose(1, 2).contiguous().reshape(batch, 1, -1)
            x = x + F.linear(o, attn.o_proj.weight)
            mlp = layer.mlp
            h = _rms_norm(x, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
            x = x + F.linear(mlp.act_fn(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        self.length = at + 1
        h = _rms_norm(x, self.norm.weight, self.norm.variance_epsilon)
        return F.linear(h, self.lm_head)[:, -1].to(dtype=torch.float32)  # (batch, 1, hidden) as in transformers


def _warpers(model, temperature: float, top_p: float, top_k: int | None, min_p: float | None,
             repetition_penalty: float | None):
    """(before, after): transformers' own processors around the caller's, in model.generate's order
    (repetition penalty first, the caller's processors, then temperature, top-k, top-p, min-p)."""
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    if repetition_penalty is None:
        repetition_penalty = getattr(model.generation_config, "repetition_penalty", None)
    before = [RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty not in (None, 1.0) else []
    after = []
    if temperature > 0:
        if temperature != 1.0:
            after.append(TemperatureLogitsWarper(temperature))
        if top_k:
            after.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            after.append(TopPLogitsWarper(top_p=top_p))
        if min_p is not None:
            after.append(MinPLogitsWarper(min_p=min_p))
    return before, after


def generate_ids(model, input_ids, attention_mask, max_new_tokens: int, eos_token_ids, pad_token_id: int,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int | None = None, min_p: float | None = None,
                 repetition_penalty: float | None = None, logits_processor=()) -> torch.Tensor:
    """prompt + generated ids (batch x (width + up to max_new_tokens)), as model.generate returns them.

    input_ids, attention_mask: the left-padded prompts; eos_token_ids: the stop token id(s).
    temperature 0 is greedy. logits_processor: transformers LogitsProcessor objects, applied first
    at every step (after a repetition penalty).
    The caller seeds torch's RNG and sets inference mode. A row that wrote eos gets pad from then
    on, and the loop ends when every row has written eos or max_new_tokens are written.

    Finished rows: model.generate keeps computing them (their outputs become pad); here they are
    dropped from the model's batch once a quarter of its rows are finished (the K/V buffers are
    compacted then, so copying costs at most a few times the cache). Processors and sampling
    still see the whole batch: a finished row's logits are zeros, which changes no other row's
    draw (torch.multinomial consumes the same random numbers whatever the probabilities).
    """
    batch, width = input_ids.shape
    stepper = Qwen2Stepper(model, batch, width + max_new_tokens)
    before, after = _warpers(model, temperature, top_p, top_k, min_p, repetition_penalty)
    processors = [*before, *logits_processor, *after]
    ids = input_ids.new_full((batch, width + max_new_tokens), pad_token_id)
    ids[:, :width] = input_ids
    padded = not bool(attention_mask.all())
    mask = torch.ones_like(ids) if padded else None
    if padded:
        mask[:, :width] = attention_mask
    # transformers' positions: cumsum of the mask - 1, padding at 0, then one more per step
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    logits = stepper.prefill(input_ids, attention_mask if padded else None, position_ids)
    position_ids = position_ids[:, -1:]
    eos = torch.tensor([eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids), device=ids.device)
    rows = torch.arange(batch, device=ids.device)  # the batch rows the stepper computes, in its order
    unfinished = torch.ones(batch, dtype=torch.long, device=ids.device)
    n = width
    while True:
        scores = logits
        if len(rows) < batch:
            scores = logits.new_zeros(batch, logits.shape[-1])
            scores[rows] = logits
        for p in processors:
            scores = p(ids[:, :n], scores)
        if temperature > 0:
            tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        tokens = tokens * unfinished + pad_token_id * (1 - unfinished)
        ids[:, n] = tokens
        n += 1
        unfinished = unfinished & (~torch.isin(tokens, eos)).long()
        if n == width + max_new_tokens or not unfinished.any():
            return ids[:, :n]
        running = unfinished[rows].bool()
        if 4 * int((~running).sum()) >= len(rows):
            rows = rows[running]
            stepper.keep(running.nonzero().squeeze(1))
        position_ids = position_ids + 1
        logits = stepper.step(tokens[rows], position_ids[rows], mask[rows, :n] if padded else None)


__all__ = ["unsupported_reason", "Qwen2Stepper", "generate_ids"]

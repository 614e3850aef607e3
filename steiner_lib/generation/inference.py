"""Sampling completions from a model: batched (the default) and one by one (the benchmark's baseline).

Prompts are full prompt texts, e.g. `modeling.chat_text(user)`, which ends in
"<|im_start|>assistant\\n". Generation stops at the tokenizer's eos (<|im_end|>). Completions
come back decoded with the special tokens kept (the 14 reasoning tokens are the structure the
parser reads) and without the eos and the padding.

Batching: prompts are left-padded, so every row's completion starts at the same column and the
KV cache serves the whole batch. Sampling is seeded per batch (`seed`, batch index) inside a
forked RNG, so a call is deterministic for a seed and batch size and leaves the global RNG alone.
Greedy decoding (temperature 0) gives the same texts batched or one by one (a test checks it);
sampled texts differ between the two, because the random draws are consumed in another order.

`logits_processor` (transformers LogitsProcessor objects) is applied at every step and sees the
whole batch's input_ids, prompt columns first. Pass a list (used as is for every model.generate
call) or a function `make(prompt_width) -> list` called once per model.generate call: with left
padding every row's completion starts at column `prompt_width`, so a stateful processor (Steiner's
reasoning_constraints counts steps) can read each row's generated tokens as input_ids[r, prompt_width:].

Backends (`backend`): "lean" (the default on CPU) runs lean_decode's loop over the model's own
weights: the same tokens as model.generate (greedy and seeded sampling alike), several times
faster on small models (benchmarks/generation.py); a model it does not cover (lean_decode.
unsupported_reason) falls back to model.generate with a warning. "transformers" is model.generate.

KV cache: each model.generate call gets a cache preallocated for prompt + max_new_tokens positions
(`preallocated_cache`). transformers' default DynamicCache grows by torch.cat, which copies the whole
cache at every step; at batch 64 that copying was about 30% of the generation time
(benchmarks/generation.py measures it).
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Sequence

import torch

from steiner_lib.format import SPECIAL_TOKENS
from steiner_lib.generation.backends import CPU_DEFAULT

log = logging.getLogger("steiner_lib.generation.inference")

IN_PROCESS_BACKENDS = ("lean", "transformers")  # what runs a model held in this process


def _check(prompts, max_new_tokens: int, temperature: float, top_p: float, n_samples: int, batch_size: int,
           backend: str):
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of prompt texts, not one str: wrap it as [prompt]")
    problems = []
    if backend not in IN_PROCESS_BACKENDS:
        problems.append(f"backend={backend!r} (a model in this process runs on one of {IN_PROCESS_BACKENDS}; "
                        f"vLLM takes a backends.VLLMModel: load it with backends.load_model(path, 'vllm'))")
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens={max_new_tokens} (need >= 1)")
    if temperature < 0:
        problems.append(f"temperature={temperature} (need >= 0; 0 means greedy)")
    if not 0 < top_p <= 1:
        problems.append(f"top_p={top_p} (need 0 < top_p <= 1)")
    if n_samples < 1 or batch_size < 1:
        problems.append(f"n_samples={n_samples}, batch_size={batch_size} (need both >= 1)")
    if problems:
        raise ValueError("generate: " + "; ".join(problems))


def _stop_ids(tokenizer, more: Sequence[int] = ()) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: set tokenizer.eos_token = '<|im_end|>'")
    return list(dict.fromkeys([tokenizer.eos_token_id, *more]))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def check_tokenizer(tokenizer) -> None:
    """Raise if the 14 reasoning tokens are not single tokens (the outputs would lose their structure)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"the tokenizer lacks {len(missing)} reasoning token(s), e.g. {missing[0]}: "
                         f"load it with modeling.load_tokenizer or train it with modeling.train_bpe_tokenizer")


def _generation_kwargs(tokenizer, max_new_tokens, temperature, top_p, use_cache, stop_token_ids=()) -> dict:
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=_stop_ids(tokenizer, stop_token_ids),
                  pad_token_id=_pad_id(tokenizer), use_cache=use_cache, num_beams=1)
    if temperature == 0:
        kwargs["do_sample"] = False
    else:  # top_k=0 turns off transformers' default top-k of 50: only temperature and top_p shape the draw
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    return kwargs


def _decode(tokenizer, new_ids: list[int], stop: set[int]) -> tuple[str, int]:
    """The text of the new tokens up to the first stop token (excluded) and how many tokens that is."""
    cut = next((i for i, t in enumerate(new_ids) if t in stop), len(new_ids))
    return tokenizer.decode(new_ids[:cut], skip_special_tokens=False, clean_up_tokenization_spaces=False), cut


def _processors(logits_processor, prompt_width: int):
    """The LogitsProcessorList for one model.generate call (see `generate` for the accepted forms)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    if logits_processor is None:
        return LogitsProcessorList()
    if isinstance(logits_processor, LogitsProcessor):
        return LogitsProcessorList([logits_processor])
    if isinstance(logits_processor, (list, tuple)):
        return LogitsProcessorList(list(logits_processor))
    if callable(logits_processor):  # a factory: fresh (possibly stateful) processors for each call
        made = logits_processor(prompt_width)
        return LogitsProcessorList([made] if isinstance(made, LogitsProcessor) else list(made))
    raise TypeError(f"logits_processor must be a list of LogitsProcessor, a LogitsProcessor or a function of the "
                    f"prompt width returning them; got {type(logits_processor).__name__}")


@lru_cache(maxsize=1)
def _preallocated_layer_class():
    """The layer class, made once (transformers is imported lazily, as everywhere in this module)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer that writes new keys and values into a buffer of `capacity` positions
        (allocated at the first update) and hands out views of its filled part, instead of growing by
        torch.cat. Anything that replaces self.keys (crop, batch_select_indices, a longer sequence
        than the capacity) is noticed at the next update, which then copies into a fresh buffer."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self._buffers = None

        def _fits(self, length: int, key_states) -> bool:
            if self._buffers is None or length == 0:
                return False
            keys = self._buffers[0]
            return (self.keys.data_ptr() == keys.data_ptr() and self.keys.shape[:2] == keys.shape[:2]
                    and key_states.shape[0] == keys.shape[0] and length <= keys.shape[-2])

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old = self.get_seq_length()
            new = old + key_states.shape[-2]
            if not self._fits(new, key_states):
                size = max(self.capacity, new)
                buffers = (key_states.new_empty(*key_states.shape[:2], size, key_states.shape[-1]),
                           value_states.new_empty(*value_states.shape[:2], size, value_states.shape[-1]))
                if old:
                    buffers[0][..., :old, :] = self.keys
                    buffers[1][..., :old, :] = self.values
                self._buffers = buffers
            keys, values = self._buffers
            keys[..., old:new, :] = key_states
            values[..., old:new, :] = value_states
            self.keys, self.values = keys[..., :new, :], values[..., :new, :]
            return self.keys, self.values

    return PreallocatedLayer


def preallocated_cache(model, capacity: int):
    """A DynamicCache whose layers write into buffers of `capacity` positions (no per-step torch.cat),
    or None (model.generate then makes its default cache) when the model's layers are not all plain
    full-attention DynamicLayers (sliding windows, linear attention) or its generation config asks for
    another cache implementation."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if getattr(getattr(model, "generation_config", None), "cache_implementation", None) is not None:
        return None
    config = model.config.get_text_config(decoder=True)
    try:
        cache = DynamicCache(config=config)
    except (KeyError, ValueError, TypeError, AttributeError):  # a layout it cannot build: keep the default
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    layer_class = _preallocated_layer_class()
    cache.layers = [layer_class(capacity) for _ in cache.layers]
    return cache


def _batch_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63)


def _engine(model, backend: str, use_cache: bool):
    """The function that generates one batch: lean_decode's loop, or model.generate."""
    from steiner_lib.generation import lean_decode

    if backend == "lean":
        reason = lean_decode.unsupported_reason(model) if use_cache else "use_cache=False"
        if reason is None:
            return _generate_lean
        log.warning("backend 'lean' cannot run this model (%s): generating with model.generate instead", reason)
    return _generate_transformers


def _generate_transformers(model, enc, gen_kwargs: dict, processors):
    width = enc["input_ids"].shape[1]
    cache = preallocated_cache(model, width + gen_kwargs["max_new_tokens"]) if gen_kwargs["use_cache"] else None
    return model.generate(**enc, **gen_kwargs, logits_processor=processors,
                          **({"cache": cache} if cache is not None else {}))


def _generate_lean(model, enc, gen_kwargs: dict, processors):
    from steiner_lib.generation import lean_decode

    return lean_decode.generate_ids(
        model, enc["input_ids"], enc["attention_mask"], gen_kwargs["max_new_tokens"], gen_kwargs["eos_token_id"],
        gen_kwargs["pad_token_id"], temperature=gen_kwargs.get("temperature", 0.0) if gen_kwargs["do_sample"] else 0.0,
        top_p=gen_kwargs.get("top_p", 1.0), logits_processor=processors)


def run_batches(model, tokenizer, jobs: list[list[str]], gen_kwargs: dict, seed: int, logits_processor,
                progress: bool, desc: str, stats: dict | None, engine) -> list[str]:
    """Generate for each group of prompts in `jobs` (one batch per group) with
    engine(model, enc, gen_kwargs, processors) -> prompt + new ids: the tokenizing, seeding,
    decoding and counting of `generate` around any batch function (benchmarks/generation.py
    passes transformers' static cache and CTranslate2 through it)."""
    from tqdm import tqdm

    stop = set(gen_kwargs["eos_token_id"])
    texts: list[str] = []
    new_tokens = slots = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode(), torch.random.fork_rng():
            for index, group in enumerate(tqdm(jobs, desc=desc, disable=not progress)):
                enc = tokenizer(group, return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(model.device)
                torch.manual_seed(_batch_seed(seed, index))
                width = enc["input_ids"].shape[1]
                out = engine(model, enc, gen_kwargs, _processors(logits_processor, width))
                slots += out[:, width:].numel()
                for row in out[:, width:].tolist():
                    text, n = _decode(tokenizer, row, stop)
                    texts.append(text)
                    new_tokens += n
    finally:
        model.train(was_training)
    if stats is not None:
        seconds = time.perf_counter() - start
        stats.update(sequences=len(texts), new_tokens=new_tokens, batch_slots=slots, seconds=seconds,
                     tokens_per_s=new_tokens / max(seconds, 1e-9))
    return texts


def _regroup(flat: list[str], n_prompts: int, n_samples: int) -> list[list[str]]:
    return [flat[i * n_samples:(i + 1) * n_samples] for i in range(n_prompts)]


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float,
             top_p: float = 1.0, n_samples: int = 1, batch_size: int = 16, seed: int = 0,
             logits_processor=None, progress: bool = True, use_cache: bool = True,
             stats: dict | None = None, backend: str = CPU_DEFAULT, stop_token_ids: Sequence[int] = (),
             reasoning_tokens: bool = True) -> list[list[str]]:
    """n_samples completions per prompt, batched with left padding; out[i][j] is prompt i's sample j.

    temperature 0 is greedy. backend: "lean" or "transformers". logits_processor: a list, or a
    function of the prompt width (module docstring). stop_token_ids: tokens that end a completion
    besides the eos. reasoning_tokens=False: a foreign model (the LLM teacher's), whose tokenizer
    need not hold the 14 reasoning tokens (they are then written as plain text). `stats`, if a dict, receives sequences, new_tokens (up to and
    excluding eos), batch_slots (positions generated including the padding of rows that
    finished before their batch did), seconds and tokens_per_s.
    """
    _check(prompts, max_new_tokens, temperature, top_p, n_samples, batch_size, backend)
    if reasoning_tokens:
        check_tokenizer(tokenizer)
    flat = [p for p in prompts for _ in range(n_samples)]
    jobs = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
    kwargs = _generation_kwargs(tokenizer, max_new_tokens, temperature, top_p, use_cache, stop_token_ids)
    texts = run_batches(model, tokenizer, jobs, kwargs, seed, logits_processor, progress, "generate", stats,
                        _engine(model, backend, use_cache))
    return _regroup(texts, len(prompts), n_samples)


def generate_one_by_one(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float,
                        top_p: float = 1.0, n_samples: int = 1, seed: int = 0, logits_processor=None,
                        progress: bool = True, use_cache: bool = True,
                        stats: dict | None = None, backend: str = "transformers") -> list[list[str]]:
    """Like `generate`, one sequence per call (no padding): the speed baseline."""
    _check(prompts, max_new_tokens, temperature, top_p, n_samples, 1, backend)
    check_tokenizer(tokenizer)
    jobs = [[p] for p in prompts for _ in range(n_samples)]
    kwargs = _generation_kwargs(tokenizer, max_new_tokens, temperature, top_p, use_cache)
    texts = run_batches(model, tokenizer, jobs, kwargs, seed, logits_processor, progress, "generate (one by one)",
                        stats, _engine(model, backend, use_cache))
    return _regroup(texts, len(prompts), n_samples)


__all__ = ["IN_PROCESS_BACKENDS", "generate", "run_batches", "generate_one_by_one", "check_tokenizer", "preallocated_cache"]

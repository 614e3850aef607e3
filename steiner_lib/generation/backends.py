"""Generation backends: the lean loop or transformers (any machine), or vLLM (GPU machines, `pip install .[gpu]`).

One entry, `generate`, with inference.generate's signature. What backend runs is decided when a
checkpoint is loaded for generation (`load_model`, `stage_loader`): the lean and transformers
backends load the Hugging Face model in memory (`generate` is told which of the two runs it); the vLLM backend returns a `VLLMModel`, a handle that
starts a vLLM engine (with `tensor_parallel_size` GPUs) on its first generation. So a notebook
never loads a 32B model into host memory just to hand its path to vLLM.

Backend names, as the params spell them:
    "lean"          lean_decode's decode loop over the model's own weights, in this process (the
                    CPU default: the same tokens as model.generate, several times faster on small
                    models; a model it does not cover falls back to model.generate with a warning)
    "transformers"  model.generate in this process (inference.generate)
    "vllm"          vLLM; an ImportError with the install command when vLLM is missing
    "auto"          vLLM when it is installed and a CUDA GPU is visible, else lean, with a log
                    line saying which and why

Steiner's logits processor reaches every backend through one object, `StepConstraints`: for
transformers it is the factory inference.generate calls with the prompt width; for vLLM its
min_steps / max_steps become the per-request extra_args of constraints.vllm_reasoning_constraints,
whose logits-processor class is registered when the engine starts.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

log = logging.getLogger("steiner_lib.generation.backends")

BACKEND_CHOICES = ("lean", "transformers", "vllm", "auto")
CPU_DEFAULT = "lean"  # the params' default for every generation backend key (params.py reads it)


def vllm_available() -> bool:
    """True when vLLM can be imported (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str, purpose: str = "generation") -> str:
    """The backend that will run: "lean", "transformers" or "vllm" (see the module docstring for "auto")."""
    if requested not in BACKEND_CHOICES:
        raise ValueError(f"{purpose}: backend {requested!r} is not one of {BACKEND_CHOICES}: set it to "
                         f"{CPU_DEFAULT!r} (CPU), 'vllm' (GPU) or 'auto'")
    if requested in ("lean", "transformers"):
        return requested
    if requested == "vllm":
        if not vllm_available():
            from steiner_lib.generation.constraints import VLLM_INSTALL_HINT

            raise ImportError(f"{purpose}: backend 'vllm' was asked for. {VLLM_INSTALL_HINT} "
                              f"Or set the backend to 'auto' (falls back to {CPU_DEFAULT}) or {CPU_DEFAULT!r}.")
        return "vllm"
    if vllm_available() and cuda_available():
        log.info("%s: backend auto -> vllm", purpose)
        return "vllm"
    why = "vLLM is not installed (pip install .[gpu])" if not vllm_available() else "no CUDA GPU is visible"
    log.warning("%s: backend auto -> %s, because %s", purpose, CPU_DEFAULT, why)
    return CPU_DEFAULT


def in_process(requested: str, purpose: str = "generation") -> str:
    """The backend for a model already in this process ("lean" or "transformers"); vLLM serves
    checkpoints from disk, so "vllm" (and "auto" resolving to it) mean the lean loop here."""
    resolved = resolve_backend(requested if requested != "vllm" else "auto", purpose)
    return CPU_DEFAULT if resolved == "vllm" else resolved


# --------------------------------------------------------------------------- the logits processor


@dataclass(frozen=True)
class StepConstraints:
    """Steiner's reasoning_constraints(min_steps, max_steps), for either backend.

    Called with the prompt width it returns the transformers processors (inference.generate's
    factory form, for the lean and transformers backends); VLLMModel reads min_steps and max_steps instead.
    """

    tokenizer: object = field(repr=False)
    min_steps: int = 0
    max_steps: int | None = 10

    def __call__(self, prompt_width: int):
        from steiner_lib.generation.constraints import ReasoningConstraints

        return [ReasoningConstraints(self.tokenizer, self.min_steps, self.max_steps, prompt_length=prompt_width)]


# --------------------------------------------------------------------------- vLLM


_ACTIVE_ENGINE: dict = {}  # path -> the one live vLLM engine (GPU memory holds one model at a time)


def _release_engines() -> None:
    """Shut the live engine down before another starts (vLLM frees GPU memory only on shutdown)."""
    for path in list(_ACTIVE_ENGINE):
        engine = _ACTIVE_ENGINE.pop(path)
        shutdown = getattr(getattr(engine, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del engine
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()


@dataclass
class VLLMModel:
    """A checkpoint directory served by vLLM; the engine starts on the first generation."""

    path: str
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    reasoning_tokens: bool = True  # False for a foreign model (the LLM teacher's): no Steiner processor to register

    def engine(self, tokenizer):
        if self.path not in _ACTIVE_ENGINE:
            _release_engines()
            from vllm import LLM

            processors = []
            if self.reasoning_tokens:
                from steiner_lib.generation.constraints import vllm_reasoning_constraints

                # a no-op for requests without extra_args
                processors.append(vllm_reasoning_constraints(tokenizer).logits_processor)
            log.info("starting vLLM on %s (tensor_parallel_size=%d)", self.path, self.tensor_parallel_size)
            _ACTIVE_ENGINE[self.path] = LLM(
                model=self.path, tokenizer=self.path, tensor_parallel_size=self.tensor_parallel_size,
                gpu_memory_utilization=self.gpu_memory_utilization, seed=self.seed,
                logits_processors=processors)
        return _ACTIVE_ENGINE[self.path]

    def close(self) -> None:
        if self.path in _ACTIVE_ENGINE:
            _release_engines()


def sampling_params(tokenizer, max_new_tokens: int, temperature: float, top_p: float, n_samples: int,
                    seed: int, constraints: StepConstraints | None, stop_token_ids: Sequence[int] = ()):
    """vllm.SamplingParams matching inference.generate: stop at eos (and `stop_token_ids`), special
    tokens kept verbatim."""
    from vllm import SamplingParams

    from steiner_lib.generation.constraints import request_extra_args

    extra = None if constraints is None else request_extra_args(tokenizer, constraints.min_steps,
                                                                  constraints.max_steps)
    return SamplingParams(
        n=n_samples, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed,
        stop_token_ids=[tokenizer.eos_token_id, *stop_token_ids], skip_special_tokens=False,
        spaces_between_special_tokens=False,  # the 14 tokens must come back exactly as the parser reads them
        extra_args=extra)


def _generate_vllm(model: VLLMModel, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float,
                   top_p: float, n_samples: int, seeds: Sequence[int], logits_processor, progress: bool,
                   stop_token_ids: Sequence[int]) -> list[list[str]]:
    if logits_processor is not None and not isinstance(logits_processor, StepConstraints):
        raise TypeError(f"the vLLM backend takes Steiner's constraints as backends.StepConstraints, not "
                        f"{type(logits_processor).__name__}: transformers logits processors cannot run inside vLLM")
    engine = model.engine(tokenizer)
    requests = [{"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
    # One SamplingParams per prompt: a seeded request draws the same samples in any batch.
    params = [sampling_params(tokenizer, max_new_tokens, temperature, top_p, n_samples, s, logits_processor,
                              stop_token_ids) for s in seeds]
    outputs = engine.generate(requests, params, use_tqdm=progress)
    eos = tokenizer.eos_token
    return [[o.text[:-len(eos)] if o.text.endswith(eos) else o.text for o in out.outputs] for out in outputs]


# --------------------------------------------------------------------------- one entry


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float,
             top_p: float = 1.0, n_samples: int = 1, batch_size: int = 16, seed: int | Sequence[int] = 0,
             logits_processor=None, progress: bool = True, backend: str = CPU_DEFAULT,
             stop_token_ids: Sequence[int] = (), reasoning_tokens: bool = True) -> list[list[str]]:
    """out[i][j]: prompt i's completion j, by vLLM when `model` is a VLLMModel, else by
    inference.generate with `backend` (in_process: "lean" or "transformers"). Texts keep the
    special tokens and end before the eos. `logits_processor`: a StepConstraints (any backend),
    or for lean and transformers anything inference.generate accepts.

    seed: one int seeds the call (vLLM: prompt i's request gets seed + i); a list gives prompt i
    the seed seeds[i], and its samples are those it would get alone (in process: it is generated
    in a batch of its own), whatever the other prompts (the LLM teacher's requests).
    stop_token_ids: tokens that end a completion besides the tokenizer's eos. reasoning_tokens=False
    skips the check that the tokenizer holds the 14 reasoning tokens (a foreign model, the teacher's).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of prompt texts, not one str: wrap it as [prompt]")
    per_prompt = isinstance(seed, Sequence)
    if per_prompt and len(seed) != len(prompts):
        raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts: give one seed per prompt, or one int")
    if isinstance(model, VLLMModel):
        seeds = list(seed) if per_prompt else [seed + i for i in range(len(prompts))]
        return _generate_vllm(model, tokenizer, prompts, max_new_tokens, temperature, top_p, n_samples, seeds,
                              logits_processor, progress, stop_token_ids)
    from steiner_lib.generation import inference

    def run(group: Sequence[str], group_seed: int) -> list[list[str]]:
        return inference.generate(model, tokenizer, group, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, n_samples=n_samples, batch_size=batch_size, seed=group_seed,
                                  logits_processor=logits_processor, progress=progress,
                                  backend=in_process(backend), stop_token_ids=stop_token_ids,
                                  reasoning_tokens=reasoning_tokens)

    if per_prompt:
        return [run([prompt], s)[0] for prompt, s in zip(prompts, seed)]
    return run(prompts, seed)


def _load_foreign_tokenizer(name_or_path: str):
    """A model's own tokenizer, as it was saved (no reasoning tokens added, no chat template set)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, local_files_only=Path(name_or_path).is_dir())


def _load_foreign_checkpoint(name_or_path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=Path(name_or_path).is_dir())
    return model.eval(), _load_foreign_tokenizer(name_or_path)


def load_model(path, backend: str = CPU_DEFAULT, tensor_parallel_size: int = 1, seed: int = 0,
               gpu_memory_utilization: float = 0.9, foreign: bool = False):
    """(model, tokenizer) of a checkpoint directory for `generate`: a Hugging Face model
    (lean, transformers: on the GPU when there is one) or a VLLMModel handle (vllm).

    foreign=True: a model this project did not train (the LLM teacher's): a hub name or a local
    path, loaded with its own tokenizer unchanged; generate it with reasoning_tokens=False."""
    from steiner_lib.training import checkpoints

    name = str(path)
    load_tokenizer, load_checkpoint = ((_load_foreign_tokenizer, _load_foreign_checkpoint) if foreign
                                       else (checkpoints.load_tokenizer, checkpoints.load_checkpoint))
    if resolve_backend(backend, f"generation with {Path(name).name}") == "vllm":
        return VLLMModel(name, tensor_parallel_size, gpu_memory_utilization, seed, reasoning_tokens=not foreign), \
            load_tokenizer(name)
    if tensor_parallel_size > 1:
        log.info("tensor_parallel_size=%d applies to vLLM only; transformers generates on one device",
                 tensor_parallel_size)
    model, tokenizer = load_checkpoint(name)
    if cuda_available():
        model = model.to("cuda")
    return model, tokenizer


def stage_loader(params, backend: str = CPU_DEFAULT, tensor_parallel_size: int = 1):
    """load(stage, name) -> (model, tokenizer) of a finished stage's checkpoint, for `generate`
    (checkpoints.load_stage_model's checks, then load_model)."""
    from steiner_lib.stages import require

    def load(stage: str, name: str):
        d, _ = require(params, stage)
        if not (d / name / "config.json").exists():
            raise FileNotFoundError(f"{d / name} holds no model: notebook {stage} did not save {name!r}")
        return load_model(d / name, backend, tensor_parallel_size, seed=params.values["run_seed"])

    return load


__all__ = ["BACKEND_CHOICES", "CPU_DEFAULT", "vllm_available", "resolve_backend", "in_process", "StepConstraints", "VLLMModel",
           "sampling_params", "generate", "load_model", "stage_loader"]

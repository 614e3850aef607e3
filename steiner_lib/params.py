"""The params schema: one typed dataclass per section, flat YAML keys `<section>_<field>`.

A preset (params/<name>.yaml) is a flat mapping, because Papermill injects flat globals
into each notebook's `parameters` cell. Keys a preset leaves out take the defaults below,
which are the default CPU preset (params/cpu.yaml states them all explicitly; a test
keeps the two equal, and keeps every notebook's parameters cell equal to its sections).
These are the only defaults of the training knobs: a stage turns its section into its config
in one function (sft.stage_config, rl.stage_config, rewards.RewardWeights.from_params); the
stage configs' fields that come from a section have no default, and RewardWeights reads its
defaults from RlParams (tests/training/test_stage_configs.py).

`load_preset(path)` validates a whole file before any compute: unknown keys, wrong types
and out-of-range values are all reported in one `ParamsError` naming the file and keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from steiner_lib.format import MAX_CLOSING_TOKENS
from steiner_lib.generation.backends import BACKEND_CHOICES, CPU_DEFAULT


def knob(default, doc: str, lo=None, hi=None):
    """A dataclass field with a docstring and an optional inclusive range."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi})


@dataclass(frozen=True)
class RunParams:
    name: str = knob("cpu", "run name: artifacts go to <root>/<name>/")
    seed: int = knob(0, "master random seed of the run", lo=0)
    root: str = knob("runs", "directory holding all runs (relative paths: to the project root)")


@dataclass(frozen=True)
class TaskParams:
    n_numbers: int = knob(4, "start numbers per Countdown problem", lo=2, hi=6)
    max_number: int = knob(15, "start numbers are drawn from 1..max_number", lo=2, hi=1000)
    min_steps: int = knob(2, "fewest operations of the shortest solution", lo=1)
    max_steps: int = knob(3, "most operations of the shortest solution", lo=1)
    max_result: Optional[int] = knob(60, "every result must be <= this (the question states it; null: no cap)", lo=2)
    n_train: int = knob(3000, "training questions (one DAG each)", lo=1)
    n_validation: int = knob(100, "validation questions, diamond rule (model selection)", lo=1)
    n_diamond: int = knob(200, "'diamond' questions, the reported benchmark", lo=1)
    n_hard: int = knob(100, "'hard' questions, reported beside diamond", lo=1)
    n_control: int = knob(100, "questions that need no search (forward-only control)", lo=1)
    diamond_max_backtracks: int = knob(5, "diamond rule: greedy fails and reference search backtracks <= this", lo=1)
    hard_min_backtracks: int = knob(100, "hard rule: greedy fails and reference search backtracks >= this", lo=2)
    answer_format: Literal["scan", "letter"] = knob("scan", "visible answer after the value: scan (each option from A, no / yes, then the letter) or letter (the letter alone)")


@dataclass(frozen=True)
class TeacherParams:
    kind: Literal["search", "llm"] = knob("search", "search: noisy heuristic search; llm: a language model")
    error_rate: float = knob(0.35, "search teacher: chance of taking a non-best operation", lo=0.0, hi=1.0)
    arithmetic_error_rate: float = knob(0.05, "search teacher: chance of a wrong result (hallucinated step)", lo=0.0, hi=1.0)
    branching: int = knob(3, "search teacher: how many top-ranked operations a mistake picks from", lo=1)
    max_explore_steps: int = knob(16, "steps the teacher explores before it is given the answer", lo=1)
    self_backtracks: int = knob(16, "search teacher: backtracks it makes on its own at a dead end before it is given the answer", lo=0)
    model: Optional[str] = knob(None, "llm teacher: hub name or local path of the model")
    backend: Literal["transformers", "vllm"] = knob("transformers", "llm teacher: generation backend")
    max_new_tokens: int = knob(512, "llm teacher: tokens per continuation", lo=1)
    temperature: float = knob(0.7, "llm teacher: sampling temperature", lo=0.0)
    tensor_parallel: int = knob(1, "llm teacher, vllm backend: GPUs the teacher model is split over (tensor parallel)", lo=1)


@dataclass(frozen=True)
class SynthesisParams:
    augmentations_per_question: int = knob(4, "truncation-augmented traces per question (plus one shortcut)", lo=0)
    workers: int = knob(2, "processes for synthesis (output does not depend on it)", lo=1)


@dataclass(frozen=True)
class DagParams:
    clusterer: Literal["exact", "embedding"] = knob("exact", "how steps become DAG nodes")
    embedding_threshold: float = knob(0.1, "embedding clusterer: cosine distance threshold", lo=0.0, hi=2.0)
    embedding_field: Literal["name", "thought", "summary", "reflection"] = knob("summary", "embedding clusterer: step field embedded")
    embedding_eval_questions: int = knob(60, "questions on which the embedding clusterer is scored", lo=0)
    paths_per_dag: int = knob(5, "paths sampled per DAG (paper: 50K paths / 10K DAGs)", lo=1)
    max_backtracks: int = knob(3, "backtracks a sampled path may take", lo=0)
    explore_prob: float = knob(0.3, "chance a sampled path enters a branch regardless of its outcome", lo=0.0, hi=1.0)
    backtrack_by: Literal["label", "name"] = knob("label", "how a backtrack cites its target: the step's depth label (Step 2) or its whole name")
    max_reasoning_tokens: int = knob(1024, "length filter: reasoning tokens (paper: 4,096)", lo=1)
    max_total_tokens: int = knob(2048, "length filter: prompt + reasoning + answer tokens (paper: 8,192)", lo=1)
    n_drawn: int = knob(4, "DAGs drawn in the report", lo=1, hi=12)


@dataclass(frozen=True)
class TokenizerParams:
    name_or_path: Optional[str] = knob(None, "null: train a BPE tokenizer here; else a hub name or local path")
    vocab_size: int = knob(1024, "size of the BPE tokenizer trained here", lo=64)
    numbers: Literal["digits", "whole", "spaced"] = knob("spaced", "tokenizer trained here: numbers digit by digit (Qwen2's rule), whole (the task's values one token each) or spaced (whole, with the space before: GPT-2's rule)")


@dataclass(frozen=True)
class ModelParams:
    name_or_path: Optional[str] = knob(None, "null: a small Qwen2 model built here; else a hub name or local path (e.g. Qwen/Qwen2.5-0.5B-Instruct)")
    hidden_size: int = knob(128, "built model: hidden size", lo=8)
    num_layers: int = knob(4, "built model: transformer layers", lo=1)
    num_heads: int = knob(4, "built model: attention heads", lo=1)
    num_kv_heads: int = knob(2, "built model: key/value heads (grouped-query attention)", lo=1)
    intermediate_size: int = knob(512, "built model: MLP width", lo=8)
    max_position_embeddings: int = knob(2048, "built model: context length", lo=64)
    tie_word_embeddings: bool = knob(True, "built model: the output projection shares the input embedding table (true, as Qwen2.5-0.5B); false gives each token, each number included, its own output row")
    lora: bool = knob(False, "train LoRA adapters (PEFT) instead of all weights; new token rows stay trainable")
    lora_r: int = knob(16, "LoRA rank", lo=1)
    dtype: Literal["float32", "bfloat16"] = knob("float32", "weights as built or loaded in 03, kept by every later checkpoint; bfloat16 halves the memory of a large base (Qwen2.5's own dtype)")


@dataclass(frozen=True)
class BaseParams:
    steps: int = knob(700, "built model only: pre-training steps of the base stand-in (regular text + shortcut reasoning)", lo=1)
    batch_size: int = knob(8, "base pre-training: blocks per step", lo=1)
    seq_len: int = knob(512, "base pre-training: tokens per block", lo=16)
    learning_rate: float = knob(3e-3, "base pre-training: peak learning rate", lo=0.0)
    shortcut_copies: int = knob(2, "base corpus: shortcut solutions per training question (fresh choice shuffles)", lo=0)
    fact_copies: int = knob(60, "base corpus: copies of the table of arithmetic facts (every legal a op b up to the task's cap; 5% held out)", lo=0)
    list_drills: int = knob(60000, "base corpus: copy, sort and take-two drills on short lists of numbers", lo=0)
    option_drills: int = knob(0, "base corpus: option drills: four options, a value, and the letter of its option", lo=0)


@dataclass(frozen=True)
class CptParams:
    enabled: bool = knob(True, "run CPT (false: the base model goes to SFT as is; the paper says CPT 'might be redundant')")
    steps: int = knob(450, "CPT steps", lo=1)
    batch_size: int = knob(8, "CPT: blocks per micro-batch and process", lo=1)
    seq_len: int = knob(512, "CPT: tokens per block", lo=16)
    learning_rate: float = knob(1e-3, "CPT: peak learning rate", lo=0.0)
    gradient_accumulation: int = knob(1, "CPT: micro-batches per optimizer step (effective batch = batch_size x this x processes)", lo=1)
    reasoning_share: float = knob(0.5, "CPT mix: share of tokens from reasoning paths (the rest regular text)", lo=0.0, hi=1.0)
    heldout_share: float = knob(0.05, "CPT: share of texts held out for the held-out loss", lo=0.0, hi=0.5)
    replay_base_corpus: bool = knob(False, "CPT's regular half: the built base's own corpus (regular text, domain knowledge, shortcuts) instead of regular text alone, so CPT does not erase what the base learnt")


@dataclass(frozen=True)
class SftParams:
    steps: int = knob(1400, "SFT optimizer steps", lo=1)
    batch_size: int = knob(8, "SFT: examples per step and process", lo=1)
    gradient_accumulation: int = knob(1, "SFT: micro-batches per optimizer step (effective batch = batch_size x this x processes)", lo=1)
    gradient_checkpointing: bool = knob(False, "SFT: recompute activations in the backward pass (long sequences on GPUs)")
    learning_rate: float = knob(3e-3, "SFT: peak learning rate", lo=0.0)
    max_length: int = knob(1024, "SFT: prompt + completion tokens; longer examples are dropped", lo=16)
    eval_share: float = knob(0.1, "SFT: share of questions held out for the eval loss", lo=0.0, hi=0.5)
    eval_questions: int = knob(60, "held-out validation questions sampled after SFT", lo=1)
    temperature: float = knob(0.7, "sampling temperature of the held-out check", lo=0.0)
    eval_samples: int = knob(4, "held-out check: outputs per validation question (> 1 needs a temperature > 0)", lo=1)
    eval_batch_size: int = knob(64, "held-out check: prompts per generate call", lo=1)
    eval_backend: Literal["lean", "transformers"] = knob(CPU_DEFAULT, "held-out check and learning curve: lean (the decode loop, the same tokens faster) or transformers (model.generate)")
    max_new_tokens: int = knob(1024, "tokens per sampled output (room for the longest kept path: dag_max_reasoning_tokens)", lo=8)
    curve_points: int = knob(4, "learning curve: sample held-out questions at this many evenly spaced SFT steps (0: none)", lo=0)
    curve_questions: int = knob(24, "learning curve: validation questions sampled (one output each) at each point", lo=1)


@dataclass(frozen=True)
class RlParams:
    steps: int = knob(40, "RL optimizer steps", lo=1)
    batch_size: int = knob(8, "RL: completions per step and process (whole groups)", lo=2)
    num_generations: int = knob(4, "RL: completions per prompt (the GRPO group)", lo=2)
    learning_rate: float = knob(5e-5, "RL: learning rate", lo=0.0)
    beta: float = knob(0.04, "RL: KL coefficient against the SFT policy", lo=0.0)
    temperature: float = knob(1.0, "RL: rollout sampling temperature", lo=0.01)
    max_completion_length: int = knob(640, "RL: tokens per rollout", lo=8)
    gradient_checkpointing: bool = knob(False, "RL: recompute activations in the backward pass (long rollouts on GPUs)")
    credit: Literal["step", "return_to_go", "sequence"] = knob("step", "how step rewards become token advantages")
    w_in_degree: float = knob(0.1, "reward: weight of log(1 + in-degree)")
    w_out_degree: float = knob(0.1, "reward: weight of log(1 + out-degree)")
    w_dist_question: float = knob(0.2, "reward: depth penalty per step from the question (scaled)")
    w_dist_answer: float = knob(1.0, "reward: progress toward the answer (1 - distance / depth)")
    outcome: float = knob(1.0, "reward: correct final letter")
    hallucination_penalty: float = knob(1.0, "reward: penalty of a step with wrong arithmetic", lo=0.0)
    format_penalty: float = knob(0.5, "reward: penalty on every token of an output that does not parse", lo=0.0)
    unreachable_value: float = knob(-0.5, "reward: the progress term at a dead end")
    eval_questions: int = knob(60, "held-out validation questions sampled after RL", lo=1)
    backend: Literal[BACKEND_CHOICES] = knob(CPU_DEFAULT, "RL rollouts (and the held-out checks of 05): lean (the decode loop), transformers generate, or vLLM colocated on the training GPUs (TRL use_vllm); auto: vllm if installed and a GPU is visible, else lean")
    vllm_gpu_memory: float = knob(0.3, "RL, vllm backend: share of each GPU's memory vLLM may take (TRL vllm_gpu_memory_utilization)", lo=0.05, hi=0.95)
    vllm_tensor_parallel: int = knob(1, "RL, vllm backend: GPUs each vLLM engine spans (TRL vllm_tensor_parallel_size; divides the process count)", lo=1)


@dataclass(frozen=True)
class EvalParams:
    benchmark: Optional[str] = knob(None, "null: this run's 01_synthesis/diamond.csv; else a GPQA-schema CSV path or a hub: source")
    max_questions: int = knob(64, "questions of the validation and diamond splits (the first ones)", lo=1)
    max_new_tokens: int = knob(640, "tokens per evaluated output (as rl_max_completion_length)", lo=8)
    temperature: float = knob(0.7, "evaluation sampling temperature (0: greedy; greedy outputs of small models loop, see 06)", lo=0.0)
    samples: int = knob(4, "outputs per question (> 1 needs a temperature > 0); a question scores the mean of its samples", lo=1)
    lp_min_steps_grid: str = knob("0,2", "logits processor: min_steps values tried on validation (comma-separated)")
    lp_max_steps_grid: str = knob("6,10", "logits processor: max_steps values tried on validation (comma-separated)")
    control_questions: int = knob(48, "questions of the control split (no search needed)", lo=1)
    hard_questions: int = knob(48, "questions of the hard split (reported beside diamond)", lo=1)
    backend: Literal[BACKEND_CHOICES] = knob(CPU_DEFAULT, "evaluation generation: lean (the decode loop), transformers, vllm, or auto (vllm if installed and a GPU is visible, else lean)")
    tensor_parallel: int = knob(1, "evaluation, vllm backend: GPUs each evaluated model is split over", lo=1)


@dataclass(frozen=True)
class ScalingParams:
    questions: int = knob(24, "first questions of the diamond split used by every scaling measurement", lo=1)
    stages: str = knob("SFT,RL", "checkpoints whose scaling curves are drawn (comma-separated; of base, CPT, SFT, RL)")
    max_new_tokens: int = knob(640, "tokens per output (room for forced steps beyond eval_max_new_tokens)", lo=8)
    batch_size: int = knob(16, "prompts per generate call", lo=1)
    backend: Literal["lean", "transformers"] = knob(CPU_DEFAULT, "generation: lean (the decode loop) or transformers; budget forcing and the soft bias are transformers processors, which both run")
    min_steps_grid: str = knob("0,2,6", "sequential scaling: min_steps forced (max_steps: none), comma-separated")
    budgets: str = knob("128,384", "sequential scaling: budget-forcing targets in reasoning tokens, comma-separated")
    budget_grace: int = knob(64, "budget forcing: tokens past the budget the model has to finish its step before the step is closed for it", lo=0)
    samples: int = knob(4, "parallel scaling: samples per question in the pool the votes draw from", lo=1)
    vote_ks: str = knob("1,2,4", "parallel scaling: samples per majority vote, comma-separated (<= samples)")
    vote_draws: int = knob(32, "parallel scaling: random k-subsets of the pool scored per question and k", lo=1)
    temperature: float = knob(0.7, "parallel scaling: sampling temperature of the pool", lo=0.01)
    length_bins: int = knob(4, "cause 1: quantile bins of reasoning length", lo=1)
    context_bins: int = knob(4, "cause 3: quantile bins of context position", lo=1)
    soft_bias: float = knob(4.0, "cause 4: logit bias of the soft variant of reasoning_constraints", lo=0.01)
    retrain_variants: bool = knob(False, "causes 1-2: retrain the long-path SFT and reward-weight RL variants (minutes; on in cpu-full and smoke)")
    long_paths_share: float = knob(0.5, "cause 1 variant: SFT on this longest share of the paths", lo=0.01, hi=1.0)
    variant_sft_steps: int = knob(100, "cause 1 variant: SFT steps from the CPT checkpoint", lo=1)
    reward_variants: str = knob("depth-heavy,breadth-heavy", "cause 2: reward-weight variants, comma-separated")
    reward_factor: float = knob(3.0, "cause 2: how much a variant scales its favoured terms", lo=0.01)
    variant_rl_steps: int = knob(15, "cause 2: RL steps of each variant from the SFT checkpoint", lo=1)


SECTIONS: dict[str, type] = {
    "run": RunParams,
    "task": TaskParams,
    "teacher": TeacherParams,
    "synthesis": SynthesisParams,
    "dag": DagParams,
    "tokenizer": TokenizerParams,
    "model": ModelParams,
    "base": BaseParams,
    "cpt": CptParams,
    "sft": SftParams,
    "rl": RlParams,
    "eval": EvalParams,
    "scaling": ScalingParams,
}

# Which sections each notebook reads. A stage's params hash covers exactly these.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "01_synthesis": ("run", "task", "teacher", "synthesis"),
    "02_dag": ("run", "dag", "tokenizer"),
    "03_cpt": ("run", "model", "base", "cpt"),
    "04_sft": ("run", "sft"),
    "05_rl": ("run", "rl"),
    "06_evaluation": ("run", "eval"),
    "07_inference_scaling": ("run", "scaling"),
    "08_summary": ("run",),  # reads the manifests and tables of 01-07; runs last
}
STAGES: tuple[str, ...] = tuple(STAGE_SECTIONS)


class ParamsError(ValueError):
    """Bad params: the message names the file (or notebook), each bad key and the fix."""


def flat_key(section: str, name: str) -> str:
    return f"{section}_{name}"


def all_keys() -> dict[str, tuple[str, dataclasses.Field]]:
    """flat key -> (section, dataclass field)."""
    out = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[flat_key(section, f.name)] = (section, f)
    return out


def defaults() -> dict[str, Any]:
    return {k: f.default for k, (_, f) in all_keys().items()}


def stage_keys(stage: str) -> list[str]:
    if stage not in STAGE_SECTIONS:
        raise ParamsError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return [k for k, (s, _) in all_keys().items() if s in STAGE_SECTIONS[stage]]


def _type_problem(value: Any, tp: Any) -> str | None:
    """None if value fits the annotation, else a short description of what was expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else " or ".join(p for p in problems if p) + (
            " or null" if type(None) in args else "")
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if tp is str:
        return None if isinstance(value, str) else "a string"
    raise TypeError(f"unsupported annotation {tp!r}")


def _check(key: str, value: Any, f: dataclasses.Field, hints: dict) -> str | None:
    expected = _type_problem(value, hints[f.name])
    if expected:
        return f"{key}: got {value!r}, expected {expected}"
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo or hi is not None and value > hi:
            rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            return f"{key}: {value!r} is out of range {rng}"
    return None


@dataclass(frozen=True)
class Params:
    """A validated, complete set of params (every key of every section)."""

    values: dict
    source: str = "<defaults>"

    def section(self, name: str):
        cls = SECTIONS[name]
        return cls(**{f.name: self.values[flat_key(name, f.name)] for f in dataclasses.fields(cls)})

    def __getattr__(self, name: str):
        if name in SECTIONS:
            return self.section(name)
        raise AttributeError(name)

    def for_stage(self, stage: str) -> dict:
        return {k: self.values[k] for k in stage_keys(stage)}

    def stage_hash(self, stage: str) -> str:
        return hash_mapping(self.for_stage(stage))


def hash_mapping(mapping: dict) -> str:
    blob = json.dumps(mapping, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def validate(values: dict, source: str, allowed: list[str] | None = None) -> Params:
    """Check a flat mapping against the schema; fill defaults. Raises one ParamsError for all problems."""
    known = all_keys()
    allowed_set = set(allowed) if allowed is not None else set(known)
    problems = []
    for key in values:
        if key not in allowed_set:
            close = difflib.get_close_matches(key, sorted(allowed_set), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: unknown key{hint}")
    for key, value in values.items():
        if key in known and key in allowed_set:
            section, f = known[key]
            hints = typing.get_type_hints(SECTIONS[section])
            msg = _check(key, value, f, hints)
            if msg:
                problems.append(msg)
    full = defaults()
    full.update({k: v for k, v in values.items() if k in known})
    if not problems:
        problems += _cross_checks(full)
    if problems:
        raise ParamsError(
            f"{source}: {len(problems)} problem(s) in the params:\n  - " + "\n  - ".join(problems)
            + "\nFix the file (the schema with every key's meaning is steiner_lib/params.py; "
            "params/cpu.yaml lists every key with its default)."
        )
    # ints are accepted for float knobs; store them as floats so hashes do not depend on spelling
    for key, (section, f) in known.items():
        if typing.get_type_hints(SECTIONS[section])[f.name] is float:
            full[key] = float(full[key])
    return Params(values=full, source=source)


def _cross_checks(v: dict) -> list[str]:
    out = []
    if v["task_min_steps"] > v["task_max_steps"]:
        out.append(f"task_min_steps ({v['task_min_steps']}) exceeds task_max_steps ({v['task_max_steps']})")
    if v["task_max_steps"] > v["task_n_numbers"] - 1:
        out.append(f"task_max_steps ({v['task_max_steps']}) is more than task_n_numbers - 1 "
                   f"({v['task_n_numbers'] - 1}): n numbers allow at most n - 1 operations")
    if v["task_max_result"] is not None and v["task_max_result"] <= v["task_max_number"]:
        out.append(f"task_max_result ({v['task_max_result']}) must be above task_max_number "
                   f"({v['task_max_number']}): a cap at or below the start numbers leaves almost no operation "
                   f"legal; raise it, or set it to null for no cap")
    if v["task_diamond_max_backtracks"] >= v["task_hard_min_backtracks"]:
        out.append(f"task_diamond_max_backtracks ({v['task_diamond_max_backtracks']}) must be below "
                   f"task_hard_min_backtracks ({v['task_hard_min_backtracks']}): a question cannot be both")
    if v["dag_max_reasoning_tokens"] > v["dag_max_total_tokens"]:
        out.append("dag_max_reasoning_tokens exceeds dag_max_total_tokens")
    for samples, temperature in (("sft_eval_samples", "sft_temperature"), ("eval_samples", "eval_temperature")):
        if v[samples] > 1 and v[temperature] == 0:
            out.append(f"{samples} ({v[samples]}) > 1 with {temperature} 0: greedy decoding gives identical "
                       f"samples; set {temperature} > 0 or {samples} to 1")
    if v["rl_batch_size"] % v["rl_num_generations"]:
        out.append(f"rl_batch_size ({v['rl_batch_size']}) must be a multiple of rl_num_generations "
                   f"({v['rl_num_generations']}): each step holds whole groups")
    if v["model_num_heads"] and v["model_hidden_size"] % v["model_num_heads"]:
        out.append("model_hidden_size must be a multiple of model_num_heads")
    if v["model_num_kv_heads"] and v["model_num_heads"] % v["model_num_kv_heads"]:
        out.append("model_num_heads must be a multiple of model_num_kv_heads")
    if v["model_name_or_path"] is None and max(v["base_seq_len"], v["cpt_seq_len"]) > v["model_max_position_embeddings"]:
        out.append("base_seq_len / cpt_seq_len exceed model_max_position_embeddings")
    try:
        budgets = [int(b) for b in str(v["scaling_budgets"]).split(",") if b.strip()]
    except ValueError:
        budgets = []  # notebook 07 names the malformed grid
    room = max(budgets, default=0) + v["scaling_budget_grace"] + MAX_CLOSING_TOKENS
    if budgets and room > v["scaling_max_new_tokens"]:
        out.append(f"scaling_max_new_tokens ({v['scaling_max_new_tokens']}) is too small for the largest of "
                   f"scaling_budgets ({max(budgets)}) plus scaling_budget_grace ({v['scaling_budget_grace']}) plus "
                   f"the {MAX_CLOSING_TOKENS} tokens that close a step and the reasoning: raise it to at least {room}, "
                   f"or lower the budget or the grace")
    if v["teacher_kind"] == "llm" and not v["teacher_model"]:
        out.append("teacher_kind is 'llm' but teacher_model is null: name a hub model or a local path")
    if v["teacher_kind"] == "llm" and v["synthesis_workers"] > 1:
        out.append(f"synthesis_workers ({v['synthesis_workers']}) must be 1 with teacher_kind 'llm': the "
                   f"teacher's model lives in one process (its generation is batched on the GPU instead)")
    return out


def load_preset(path: str | Path) -> Params:
    """Read and validate a preset YAML file (before any compute)."""
    path = Path(path)
    if not path.exists():
        presets = sorted(p.name for p in (project_root() / "params").glob("*.yaml"))
        raise ParamsError(f"{path}: no such params file; presets are {', '.join(presets)} in params/")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value, got {type(values).__name__}")
    return validate(values, source=str(path))


def from_notebook(stage: str, namespace: dict) -> Params:
    """Turn a notebook's parameter globals into validated Params (the setup cell calls this).

    Only the stage's own keys are read; any other key takes its default.
    """
    keys = stage_keys(stage)
    values = {k: namespace[k] for k in keys if k in namespace}
    return validate(values, source=f"notebook {stage}", allowed=keys)


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def run_dir(params: Params) -> Path:
    root = Path(params.values["run_root"])
    if not root.is_absolute():
        root = project_root() / root
    return root / params.values["run_name"]


def describe() -> str:
    """A markdown table of every key: section, type, default, range, meaning."""
    rows = ["| key | default | range | meaning |", "|---|---|---|---|"]
    for key, (_, f) in all_keys().items():
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        rng = "" if lo is None and hi is None else f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
        rows.append(f"| `{key}` | `{f.default!r}` | {rng} | {f.metadata['doc']} |")
    return "\n".join(rows)

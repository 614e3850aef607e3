"""Stage 3 of Steiner: RL with step-level rewards, on TRL's GRPO trainer.

GRPO (TRL 1.16) scores each completion with one scalar and gives every token of it the same
advantage: (reward - group mean) / group std. Steiner rewards *steps* (steiner_lib.training.rewards),
so `StepGRPOTrainer` hands the loss a per-token advantage instead:

    credit="step" (default). Let S be the rewards of all segments (steps, and each completion's
    answer segment; see rewards.StepRewards.segments) of the completions of one group (same
    prompt), μ and σ their mean and standard deviation (unbiased, as TRL's nanstd). A token in a
    segment of reward r gets the advantage (r - μ) / (σ + 1e-4). So two steps of one completion
    with different rewards push their own tokens in their own directions, even when every
    completion of the group earns the same total (where plain GRPO learns nothing).
    credit="return_to_go": DeepSeekMath's process supervision (Shao et al. 2024, §4.1.3): the same
    normalised segment rewards, but a token's advantage is the sum over its segment and all later
    ones, so an early step also answers for where it led.
    credit="sequence": plain GRPO on the episode return (rewards.StepRewards.episode_return), the
    baseline the other two are compared against.
    scale_rewards="none" skips the division by σ; "batch" takes σ over every segment of the batch.

Where TRL takes it: `_generate_and_score_completions` returns `advantages` of shape (B,), and
`_compute_loss` (trl/trainer/grpo_trainer.py, TRL 1.16.0, lines 3055-3059) reads

    advantages = inputs["advantages"]
    # ... To support subclasses that provide advantages with shape (B, T), we *conditionally* unsqueeze
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)

so a (B, T) tensor broadcasts against the (B, T) per-token log-ratios with no change to TRL
(the batch shuffling and splitting in `_prepare_inputs` index dim 0 only). The subclass
overrides `_generate_and_score_completions`: it calls TRL's, then replaces `advantages`.

Rollouts: with backend "lean" (the CPU default) the subclass also overrides TRL's
`_generate_single_turn` (TRL 1.16's one generation hook: prompt token ids in, completion token ids
out), running lean_decode's loop with TRL's sampling settings instead of model.generate; the
same tokens, faster. Text-only prompts only: anything else (images, tools, vLLM, transformers'
continuous batching, extra generation_kwargs, a model the loop does not cover) goes to TRL's.
The loss types grpo, bnpo, dr_grpo, dapo (default), cispo and sapo consume (B, T) advantages.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from trl import GRPOTrainer

from steiner_lib.generation.backends import BACKEND_CHOICES, CPU_DEFAULT, resolve_backend
from steiner_lib.tasks import choice
from steiner_lib.training import modeling
from steiner_lib.training.rewards import (
    RewardWeights, StepRewards, completion_token_offsets, reward_table, step_rewards, token_segments,
)

log = logging.getLogger("steiner_lib.training.rl")

CREDITS = ("step", "return_to_go", "sequence")
SCALES = ("group", "batch", "none")


@dataclass
class RLStageConfig:
    """Knobs of the RL stage (TRL style). One optimizer step = `batch_size` completions,
    `batch_size // num_generations` prompts with `num_generations` completions each.

    The fields that come from the preset's rl section have no default: build the config with
    `stage_config`, so the schema (params.RlParams) is the one place their defaults live."""

    steps: int  # optimizer steps
    batch_size: int  # completions per step (a multiple of num_generations)
    num_generations: int  # completions per prompt (the GRPO group)
    learning_rate: float
    beta: float  # KL coefficient against the starting policy (0: no reference model, no KL)
    temperature: float  # sampling temperature of the rollouts
    max_completion_length: int  # tokens per completion; longer ones are cut (and fail to parse)
    gradient_checkpointing: bool  # recompute activations in the backward pass (long rollouts on GPUs)
    credit: str  # step | return_to_go | sequence (see the module docstring)
    backend: str  # rollouts: lean | transformers | vllm (TRL use_vllm, colocate mode) | auto (backends)
    vllm_gpu_memory: float  # vllm: share of each GPU's memory the colocated engine takes
    vllm_tensor_parallel: int  # vllm: GPUs per engine (must divide the number of training processes)
    seed: int
    prompt_seed: int  # seed of the A-D shuffle of each question's choices (choice.format_prompt)
    logging_steps: int = 5
    scale_rewards: str = "group"  # group | batch | none
    loss_type: str = "dapo"  # TRL's loss aggregation (grpo, bnpo, dr_grpo, dapo, cispo, sapo)
    epsilon: float = 0.2  # PPO clip range
    bf16: bool = False  # GPU presets; on the CPU it is slower
    progress: bool = True  # the Trainer's progress bar
    keep_scored: int = 5_000  # scored completions kept for RLResult.scored (the most recent)
    output_dir: str | None = None  # Trainer scratch directory; None: a temporary one, removed after

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "max_completion_length", "logging_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (need >= 1)")
        if self.num_generations < 2:
            problems.append(f"num_generations={self.num_generations} (GRPO compares completions of one prompt: need >= 2)")
        elif self.batch_size % self.num_generations:
            problems.append(f"batch_size={self.batch_size} is not a multiple of num_generations={self.num_generations} "
                            f"(each step holds whole groups)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate={self.learning_rate} (need > 0)")
        if self.beta < 0:
            problems.append(f"beta={self.beta} (need >= 0)")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} (need > 0: GRPO samples its rollouts)")
        if self.credit not in CREDITS:
            problems.append(f"credit={self.credit!r} (choose one of {CREDITS})")
        if self.scale_rewards not in SCALES:
            problems.append(f"scale_rewards={self.scale_rewards!r} (choose one of {SCALES})")
        if self.backend not in BACKEND_CHOICES:
            problems.append(f"backend={self.backend!r} (choose one of {', '.join(BACKEND_CHOICES)})")
        if not 0 < self.vllm_gpu_memory < 1 or self.vllm_tensor_parallel < 1:
            problems.append(f"vllm_gpu_memory={self.vllm_gpu_memory} (need 0 < share < 1), "
                            f"vllm_tensor_parallel={self.vllm_tensor_parallel} (need >= 1)")
        if problems:
            raise ValueError("RLStageConfig: " + "; ".join(problems))


# RLStageConfig fields that come from the preset's rl section (params.RlParams), under the same names.
FROM_PARAMS = ("steps", "batch_size", "num_generations", "learning_rate", "beta", "temperature",
               "max_completion_length", "gradient_checkpointing", "credit", "backend", "vllm_gpu_memory",
               "vllm_tensor_parallel")


def stage_config(rl_params, seed: int, **overrides) -> RLStageConfig:
    """The RLStageConfig of the preset's rl section (params.RlParams) and the run's seed (which also
    seeds the A-D shuffle of the prompts).

    overrides: RLStageConfig fields a caller sets on purpose (a variant's steps, progress=False, ...)."""
    fields = {name: getattr(rl_params, name) for name in FROM_PARAMS}
    return RLStageConfig(**{**fields, "seed": seed, "prompt_seed": seed, **overrides})


@dataclass
class RLResult:
    model: object  # the trained policy (the model passed in, trained in place, unless a path was given)
    log: pd.DataFrame  # one row per logged step; see LOG_COLUMNS
    scored: list[StepRewards]  # the scored rollouts (most recent cfg.keep_scored); meta["step"]: the step
    wall_time_s: float
    steps: int

    def reward_table(self) -> pd.DataFrame:
        return reward_table(self.scored)


# ---------------------------------------------------------------------------- data


def rl_dataset(questions, prompt_seed: int = 0):
    """The RL prompts: one row per question with `prompt` (ChatML text up to the assistant turn),
    `question_id` and `letter` (the correct letter after the seeded A-D shuffle)."""
    import datasets

    rows = []
    for qid, q in _question_dict(questions).items():
        user, letter = choice.format_prompt(q, seed=prompt_seed)
        rows.append({"prompt": modeling.chat_text(user), "question_id": qid, "letter": letter})
    if not rows:
        raise ValueError("rl_dataset got no questions: pass the training questions (dataset.load_countdown_questions)")
    return datasets.Dataset.from_list(rows)


def _question_dict(questions) -> dict:
    if isinstance(questions, dict):
        return dict(questions)
    return {q.question_id: q for q in questions}


# ---------------------------------------------------------------------------- scoring


class StepRewardScorer:
    """Scores rollouts with rewards.step_rewards: TRL's reward function (one number per
    completion, the episode return) and the per-token rewards StepGRPOTrainer uses.

    TRL decodes completions with skip_special_tokens=True, which deletes the 14 reasoning
    tokens, so the scorer decodes the token ids itself (completion_token_offsets). Scores are
    cached per batch (TRL's reward call and the trainer's advantages read the same ones).
    """

    __name__ = "step_reward"  # TRL names reward functions by __name__ in its logs

    def __init__(self, tokenizer, questions, graphs: dict, weights: RewardWeights | None = None):
        self.tokenizer = tokenizer
        self.questions = _question_dict(questions)
        self.graphs = graphs
        self.weights = weights or RewardWeights()
        missing = [q for q in self.questions if q not in graphs]
        if missing:
            raise ValueError(f"{len(missing)} question(s) have no DAG, e.g. {missing[:3]}: pass the graphs of "
                             f"dataset.load_dags for every RL question (or graphs[qid] = None for solver-only features)")
        self._cache: dict = {}

    def score(self, token_ids: Sequence[int], question_id: str, letter: str | None) -> tuple[StepRewards, list]:
        key = (question_id, letter, tuple(int(t) for t in token_ids))
        if key not in self._cache:
            if len(self._cache) > 4096:  # a batch is far smaller; never grow without bound
                self._cache.clear()
            text, offsets = completion_token_offsets(self.tokenizer, key[2])
            sr = step_rewards(text, self.questions[question_id], self.graphs[question_id], self.weights, letter)
            self._cache[key] = (sr, offsets)
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, prompts, completions, completion_ids, question_id, letter=None, **kwargs) -> list[float]:
        letters = letter if letter is not None else [None] * len(completion_ids)
        return [self.score(ids, q, l)[0].episode_return for ids, q, l in zip(completion_ids, question_id, letters)]


def group_token_advantages(segment_rewards: Sequence[Sequence[float]], token_segments: Sequence[Sequence[int]],
                           num_generations: int, scale_rewards: str = "group", credit: str = "step",
                           eps: float = 1e-4) -> list[list[float]]:
    """Per-token advantages for completions in consecutive groups of `num_generations` (see the
    module docstring). segment_rewards[i]: completion i's segment rewards; token_segments[i]: the
    segment index of each of its tokens."""
    if credit not in ("step", "return_to_go"):
        raise ValueError(f"group_token_advantages credit={credit!r}: 'step' or 'return_to_go' "
                         f"('sequence' is plain GRPO and needs no per-token advantages)")
    if scale_rewards not in SCALES:
        raise ValueError(f"scale_rewards={scale_rewards!r}: choose one of {SCALES}")
    n = len(segment_rewards)
    if n % num_generations or len(token_segments) != n:
        raise ValueError(f"{n} completions with {len(token_segments)} token lists do not form groups of "
                         f"{num_generations}")

    def std(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    batch_std = std([r for rs in segment_rewards for r in rs])
    out: list[list[float]] = []
    for g in range(0, n, num_generations):
        group = segment_rewards[g:g + num_generations]
        pool = [r for rs in group for r in rs]
        mean = statistics.fmean(pool) if pool else 0.0
        sigma = {"group": std(pool), "batch": batch_std, "none": None}[scale_rewards]
        scale = 1.0 if sigma is None or sigma + eps <= 0 else sigma + eps  # sigma = eps = 0: all equal, all 0
        for i, rs in enumerate(group):
            norm = [(r - mean) / scale for r in rs]
            if credit == "return_to_go":
                norm = [sum(norm[k:]) for k in range(len(norm))]
            out.append([norm[k] for k in token_segments[g + i]])
    return out


# ---------------------------------------------------------------------------- the trainer


class StepGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with step-level credit: advantages of shape (batch, completion tokens).

    scorer: a StepRewardScorer (also used as the only reward function); credit: see CREDITS.
    Every rollout's StepRewards is kept in `self.scored` (meta["step"] = the optimizer step).
    """

    def __init__(self, model, scorer: StepRewardScorer, args=None, credit: str = "step",
                 keep_scored: int = 5_000, lean_rollouts: bool = False, **kwargs):
        if credit not in CREDITS:
            raise ValueError(f"StepGRPOTrainer credit={credit!r}: choose one of {CREDITS}")
        if "reward_funcs" in kwargs:
            raise ValueError("StepGRPOTrainer's reward is its scorer: do not pass reward_funcs")
        super().__init__(model=model, reward_funcs=[scorer], args=args, **kwargs)
        self.scorer, self.credit = scorer, credit
        self.scored: deque[StepRewards] = deque(maxlen=keep_scored)
        self.lean_rollouts = lean_rollouts

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        from steiner_lib.generation import lean_decode

        if (not self.lean_rollouts or self.use_vllm or self.use_transformers_continuous_batching or multimodal_fields
                or has_tool_images or (images is not None and any(i is not None for i in images))
                or self.args.generation_kwargs or lean_decode.unsupported_reason(self.model) is not None):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        import torch
        from trl.models import unwrap_model_for_generation
        from trl.trainer.utils import pad

        prompts = [torch.tensor(ids) for ids in prompt_ids]
        padded = dict(input_ids=pad(prompts, padding_value=self._tokenizer.pad_token_id, padding_side="left",
                                    pad_to_multiple_of=self.pad_to_multiple_of),
                      attention_mask=pad([torch.ones_like(t) for t in prompts], padding_value=0, padding_side="left",
                                         pad_to_multiple_of=self.pad_to_multiple_of))
        padded = {k: v.to(self.accelerator.device) for k, v in padded.items()}
        with (unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                          gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                          generation_kwargs=self.generation_kwargs,
                                          gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
              as unwrapped, torch.no_grad(), self._dist.summon_full_params(self.model_wrapped, recurse=False)):
            out = lean_decode.generate_ids(
                unwrapped, padded["input_ids"], padded["attention_mask"], self.max_completion_length,
                self.eos_token_ids, self._tokenizer.pad_token_id, temperature=self.temperature, top_p=self.top_p,
                top_k=self.top_k, min_p=self.min_p, repetition_penalty=self.repetition_penalty)
        eos = set(self.eos_token_ids)
        completions = []
        for row in out[:, padded["input_ids"].size(1):].tolist():  # up to and including the first eos, as TRL's
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            completions.append(row[:cut])
        return completions, None

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)  # TRL's rollouts, scalar rewards, (B,) advantages
        ids, mask = output["completion_ids"], output["completion_mask"]
        scored = [self.scorer.score(row[m.bool()].tolist(), x["question_id"], x.get("letter"))
                  for row, m, x in zip(ids.cpu(), mask.cpu(), inputs)]
        self._record(scored)
        if self.credit != "sequence":
            output["advantages"] = self.token_advantages(scored, ids.size(1)).to(ids.device)
        self.scorer.clear()
        return output

    def token_advantages(self, scored: list[tuple[StepRewards, list]], n_tokens: int):
        """(len(scored), n_tokens) advantages; positions past a completion's end are 0."""
        import torch
        from accelerate.utils import gather_object

        local_segments = [[s.reward for s in sr.segments()] for sr, _ in scored]
        local_tokens = [token_segments(sr, offsets) for sr, offsets in scored]
        # Groups may span processes: normalise over the gathered batch, keep this process's rows.
        all_segments, all_tokens = gather_object(local_segments), gather_object(local_tokens)
        num_generations = self.num_generations if self.model.training else self.num_generations_eval
        adv = group_token_advantages(all_segments, all_tokens, num_generations, self.scale_rewards, self.credit)
        first = self.accelerator.process_index * len(scored)
        out = torch.zeros(len(scored), n_tokens, dtype=torch.float32)
        for i, row in enumerate(adv[first:first + len(scored)]):
            row = row[:n_tokens]
            out[i, :len(row)] = torch.tensor(row, dtype=torch.float32)
        return out

    def _record(self, scored: list[tuple[StepRewards, list]]) -> None:
        """Episode metrics, averaged by TRL over each logging window like its own."""
        mode = "train" if self.model.training else "eval"
        m = self._metrics[mode]
        srs = [sr for sr, _ in scored]
        steps = [s for sr in srs for s in sr.steps]
        m["episode/steps"].append(statistics.fmean(len(sr.steps) for sr in srs))
        m["episode/backtracks"].append(statistics.fmean(sr.n_backtracks for sr in srs))
        m["episode/format_valid"].append(statistics.fmean(sr.format_valid for sr in srs))
        m["episode/solved"].append(statistics.fmean(sr.outcome_correct for sr in srs))
        m["step_reward/mean"].append(statistics.fmean(s.reward for s in steps) if steps else math.nan)
        m["step/hallucinated_share"].append(statistics.fmean(s.status != "ok" for s in steps) if steps else math.nan)
        m["step/dead_end_share"].append(
            statistics.fmean(s.status == "ok" and not s.answer_reachable for s in steps) if steps else math.nan)
        for sr in srs:
            sr.meta["step"] = self.state.global_step
            self.scored.append(sr)


# ---------------------------------------------------------------------------- the stage

# TRL's log keys -> the log DataFrame's columns (first), in this order.
LOG_COLUMNS = {
    "step": "step",
    "reward": "mean_reward",  # mean episode return of the step's rollouts
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "episode/backtracks": "backtracks_per_episode",
    "episode/format_valid": "format_valid_share",
    "episode/solved": "solve_rate",
    "episode/steps": "steps_per_episode",
    "step_reward/mean": "mean_step_reward",
    "step/hallucinated_share": "hallucinated_step_share",
    "step/dead_end_share": "dead_end_step_share",
    "loss": "loss",
    "entropy": "entropy",
    "learning_rate": "learning_rate",
}


def log_frame(log_history: list[dict]) -> pd.DataFrame:
    """The Trainer's training logs as a DataFrame: LOG_COLUMNS first (renamed), then the rest."""
    rows = [dict(r) for r in log_history if "reward" in r]
    df = pd.DataFrame(rows)
    for key in LOG_COLUMNS:
        if key not in df.columns:
            df[key] = math.nan  # e.g. kl when beta = 0: the schema stays the same
    rest = [c for c in df.columns if c not in LOG_COLUMNS]
    df = df[list(LOG_COLUMNS) + rest].rename(columns=LOG_COLUMNS).reset_index(drop=True)
    # TRL logs None for a metric with no value in the window (no parsed step): make it NaN.
    return df.apply(lambda col: pd.to_numeric(col, errors="coerce") if col.dtype == object else col)


def grpo_config(cfg: RLStageConfig, output_dir: str):
    """The trl.GRPOConfig this stage runs with (no saving, no reporting). Rollouts by transformers, or by
    vLLM in TRL's colocate mode (one engine inside the training processes, sharing their GPUs)."""
    import torch
    from trl import GRPOConfig

    use_vllm = resolve_backend(cfg.backend, "RL rollouts") == "vllm"
    return GRPOConfig(
        output_dir=output_dir,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        temperature=cfg.temperature,
        top_p=1.0,
        max_completion_length=cfg.max_completion_length,
        scale_rewards=cfg.scale_rewards,
        loss_type=cfg.loss_type,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory,
        vllm_tensor_parallel_size=cfg.vllm_tensor_parallel,
        mask_truncated_completions=False,  # a cut completion is scored (format penalty), not dropped
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        push_to_hub=False,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,  # TRL's default is True: a waste for small models
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),  # GPUs when there are; on CPUs, torchrun's processes form a gloo group
        log_completions=False,
    )


def _save_local_copy(model, path: Path) -> None:
    """This process's own copy of the weights, in save_pretrained's layout. Not save_pretrained
    itself: once the process group is up it writes on rank 0 only, and every process loads its
    reference model from its own scratch directory."""
    from safetensors.torch import save_model

    path.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]  # what save_pretrained records; TRL loads by it
    config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    save_model(model, str(path / "model.safetensors"), metadata={"format": "pt"})  # tied rows stored once


@contextlib.contextmanager
def _reference_is_current_policy(model, beta: float, output_dir: str):
    """Make TRL's reference model a copy of the policy as passed in.

    With beta > 0, TRL loads the reference model from `model.config._name_or_path`, which for a
    model trained in memory (CPT, SFT) names the weights it started from, or nothing. The current
    weights are saved to output_dir/reference and named there while the trainer is built.
    """
    if beta == 0 or isinstance(model, str) or hasattr(model, "peft_config"):
        yield
        return
    ref_dir = Path(output_dir) / "reference"
    _save_local_copy(model, ref_dir)
    before = model.config._name_or_path
    model.config._name_or_path = str(ref_dir)
    try:
        yield
    finally:
        model.config._name_or_path = before


def train_rl(model, tokenizer, questions, graphs: dict, weights: RewardWeights, cfg: RLStageConfig) -> RLResult:
    """Train `model` (a causal LM, or a path to one) with StepGRPOTrainer on the questions' prompts.

    questions: {question_id: CountdownQuestion} (dataset.load_countdown_questions) or a list;
    graphs: {question_id: DAG} (dataset.load_dags). Returns the trained model, the per-step log
    (mean reward, KL, completion length, backtracks, format-valid share, solve rate, ...) and
    the scored rollouts.
    """
    questions = _question_dict(questions)
    data = rl_dataset(questions, cfg.prompt_seed)
    scorer = StepRewardScorer(tokenizer, questions, graphs, weights)
    scratch = cfg.output_dir is None
    output_dir = tempfile.mkdtemp(prefix="steiner-rl-") if scratch else cfg.output_dir
    t0 = time.time()
    try:
        with _reference_is_current_policy(model, cfg.beta, output_dir):
            trainer = StepGRPOTrainer(model=model, scorer=scorer, args=grpo_config(cfg, output_dir),
                                      train_dataset=data, processing_class=tokenizer, credit=cfg.credit,
                                      keep_scored=cfg.keep_scored,
                                      lean_rollouts=resolve_backend(cfg.backend, "RL rollouts") == "lean")
            if not cfg.progress:
                modeling.hide_log_printer(trainer)
        trainer.train()
    finally:
        if scratch:
            shutil.rmtree(output_dir, ignore_errors=True)
    result = RLResult(model=trainer.model, log=log_frame(trainer.state.log_history), scored=list(trainer.scored),
                      wall_time_s=time.time() - t0, steps=trainer.state.global_step)
    log.info("RL: %d steps in %.1f s", result.steps, result.wall_time_s)
    return result


__all__ = [
    "RLStageConfig", "FROM_PARAMS", "stage_config", "RLResult", "StepRewardScorer", "StepGRPOTrainer", "group_token_advantages", "rl_dataset",
    "grpo_config", "log_frame", "train_rl", "reward_table", "LOG_COLUMNS", "CREDITS",
]


def hacking_watch(log: pd.DataFrame, rise: float = 0.25) -> str:
    """A paragraph, computed from the RL log, on length and backtrack inflation.

    Compares the first and last third of the logged steps. Inflation is flagged when completion
    length, steps or backtracks per episode grow by more than `rise` (relative) while the solve
    rate does not grow: more reasoning bought no more correct answers.
    """
    if log is None or len(log) < 2:
        return "Too few logged RL steps to judge reward hacking."
    k = max(1, len(log) // 3)
    first, last = log.iloc[:k], log.iloc[-k:]

    def mean(frame, col):
        return float(frame[col].mean()) if col in frame and frame[col].notna().any() else float("nan")

    parts, flags, drops = [], [], []
    for col, label in (("completion_length", "completion length (tokens)"), ("steps_per_episode", "steps per episode"),
                       ("backtracks_per_episode", "backtracks per episode")):
        a, b = mean(first, col), mean(last, col)
        if a == a and b == b:  # not NaN
            change = (b - a) / abs(a) if a else (float("inf") if b > 0 else 0.0)
            parts.append(f"{label} went from {a:.2f} to {b:.2f} ({change:+.0%})")
            if change > rise:
                flags.append(label)
            elif change < -rise:
                drops.append(label)
    sa, sb = mean(first, "solve_rate"), mean(last, "solve_rate")
    ra, rb = mean(first, "mean_reward"), mean(last, "mean_reward")
    text = (f"Over the first and last {k} logged steps, mean return went from {ra:.3f} to {rb:.3f}; "
            + "; ".join(parts) + f"; the rollouts' solve rate went from {sa:.2f} to {sb:.2f}. ")
    if flags and not sb > sa:
        text += ("**Possible reward hacking:** " + ", ".join(flags) + " grew while the solve rate did not: the policy "
                 "is collecting step rewards without solving more questions.")
    elif flags:
        text += ("The growth in " + ", ".join(flags) + " came with a higher solve rate, so it is not counted as "
                 "hacking at this sample size.")
    else:
        text += f"No quantity grew by more than {rise:.0%}: no sign of length or backtrack inflation in this run."
    if drops:
        text += (" The opposite happened to " + ", ".join(drops) + f" (down by more than {rise:.0%}): when most "
                 "steps earn a negative reward, writing fewer of them is the cheapest way to a higher return"
                 + (", and the solve rate did not improve with it." if not sb > sa else "."))
    return text

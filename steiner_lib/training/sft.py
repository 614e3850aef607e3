"""Stage 2 of Steiner: supervised fine-tuning on the step template, with TRL's SFTTrainer.

The training text is one ChatML exchange (Qwen2.5's layout, `modeling.chat_text`):

    <|im_start|>user\\n{4-choice question}<|im_end|>\\n<|im_start|>assistant\\n      <- prompt
    <|reasoning_start|> ...steps: name, thought, summary, reflection; proceed or backtrack...
    <|reasoning_end|>\\n{visible answer, ending "Answer: X"}<|im_end|>                <- completion

The data set is in TRL's *prompt-completion* form (plain strings). TRL tokenizes the prompt
and prompt + completion, marks the tokens after their common prefix as the completion and
sets every other label to -100, so the loss falls on the assistant turn only, <|im_end|>
included (the model must learn to stop). We chose this form over the conversational one
with `assistant_only_loss`: that option needs `{% generation %}` markers in the chat
template, which a tokenizer trained here does not have, while the prompt-completion form
works with any tokenizer. The prompt ends in "\\n" and the completion starts with a special
token, so no BPE merge crosses the boundary (tests/training/test_sft.py checks the mask token by token).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

import pandas as pd

from steiner_lib.generation.backends import CPU_DEFAULT
from steiner_lib.training import modeling

log = logging.getLogger("steiner_lib.training.sft")


@dataclass
class SFTStageConfig:
    """Knobs of the SFT stage (TRL style). Set `epochs` to train by epochs instead of max_steps.

    The fields that come from the preset's sft section have no default: build the config with
    `stage_config`, so the schema (params.SftParams) is the one place their defaults live."""

    max_steps: int  # optimizer steps (ignored when epochs is set)
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    max_length: int  # tokens of prompt + completion; longer examples are dropped, not cut
    eval_share: float  # share of questions held out for the eval loss (split_by_question)
    gradient_checkpointing: bool  # GPU presets with long sequences
    seed: int
    epochs: float | None = None  # passes over the training set; None: use max_steps
    warmup_ratio: float = 0.05  # share of the steps with a linear warm-up
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    logging_steps: int = 10
    eval_steps: int | None = None  # None: evaluate about 5 times during the run
    eval_batch_size: int | None = None  # None: batch_size
    bf16: bool = False  # GPU presets; on CPU bf16 autocast is slower
    group_by_length: bool = True  # batches of similar length: less padding (paths vary 2-3x in length)
    progress: bool = True  # the Trainer's progress bar
    output_dir: str | None = None  # Trainer scratch directory; None: a temporary one, removed after

    def __post_init__(self) -> None:
        problems = []
        if self.epochs is None and self.max_steps < 1:
            problems.append(f"max_steps={self.max_steps} (need >= 1, or set epochs)")
        if self.epochs is not None and self.epochs <= 0:
            problems.append(f"epochs={self.epochs} (need > 0, or None to use max_steps)")
        for name in ("batch_size", "gradient_accumulation_steps", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (need >= 1)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio={self.warmup_ratio} (need 0 <= ratio < 1)")
        if not 0.0 <= self.eval_share < 1.0:
            problems.append(f"eval_share={self.eval_share} (need 0 <= share < 1)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate={self.learning_rate} (need > 0)")
        if problems:
            raise ValueError("SFTStageConfig: " + "; ".join(problems))


# SFTStageConfig field -> its key in the preset's sft section (params.SftParams).
FROM_PARAMS = {
    "max_steps": "steps",
    "batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation",
    "learning_rate": "learning_rate",
    "max_length": "max_length",
    "eval_share": "eval_share",
    "gradient_checkpointing": "gradient_checkpointing",
}


def stage_config(sft_params, seed: int, **overrides) -> SFTStageConfig:
    """The SFTStageConfig of the preset's sft section (params.SftParams) and the run's seed.

    overrides: SFTStageConfig fields a caller sets on purpose (a variant's max_steps, progress=False, ...)."""
    fields = {name: getattr(sft_params, key) for name, key in FROM_PARAMS.items()}
    return SFTStageConfig(**{**fields, "seed": seed, **overrides})


@dataclass
class SFTResult:
    history: pd.DataFrame  # one row per logged step: step, epoch, loss, eval_loss, learning_rate, grad_norm,
    #                        (eval_)mean_token_accuracy (share of completion tokens predicted exactly)
    wall_time_s: float  # the whole call: data preparation, training and the evaluations
    train_time_s: float  # training alone (the Trainer's runtime minus its evaluations)
    train_tokens: int  # non-padding tokens the model was trained on (prompt tokens included)
    tokens_per_s: float  # train_tokens / train_time_s
    steps: int
    n_train: int  # training examples after the length filter
    n_eval: int
    n_dropped_too_long: int  # examples longer than max_length (dropped rather than truncated)
    final_train_loss: float | None
    final_eval_loss: float | None


def sampling_curve(questions, seed: int, at_steps, max_new_tokens: int, temperature: float = 0.7,
                   batch_size: int = 64, backend: str = CPU_DEFAULT):
    """A TrainerCallback that samples `questions` (one output each) at the given optimizer steps and
    keeps their valid-step share, format-valid share and solve rate: the learning curve of the
    skills, not only of the loss. Its `.rows` (one dict per step) become a frame with `.frame()`."""
    from transformers import TrainerCallback

    from steiner_lib.evaluation import scoring

    steps = sorted({int(s) for s in at_steps if int(s) > 0})

    class SamplingCurve(TrainerCallback):
        def __init__(self):
            self.rows = []

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.global_step not in steps:
                return
            was_training = model.training
            model.eval()
            report = scoring.heldout_report(model, processing_class, questions, seed=seed, n_samples=1,
                                               max_new_tokens=max_new_tokens, temperature=temperature,
                                               batch_size=batch_size, n_boot=200, progress=False,
                                               backend=backend)
            model.train(was_training)
            value = report.summary["value"]
            self.rows.append({"step": state.global_step, "tokens_seen": int(state.num_input_tokens_seen),
                              **{k: float(value.get(k, float("nan")))
                                 for k in ("valid step share", "format valid share", "solve rate")}})

        def frame(self):
            return pd.DataFrame(self.rows)

    return SamplingCurve()


# --------------------------------------------------------------------------- data


def completion_text(reasoning: str, answer: str) -> str:
    """The assistant turn the model learns: reasoning, a newline, the visible answer, <|im_end|>."""
    return reasoning + "\n" + answer + modeling.IM_END


def sft_dataset(paths_dataset, only_kept: bool = True):
    """Notebook 02's `paths` as TRL prompt-completion rows: question_id, prompt, completion.

    prompt = modeling.chat_text(user question); completion = completion_text(reasoning, answer).
    With only_kept (default), rows that failed notebook 02's length filters (`kept` False) are left out.
    """
    import datasets

    needed = {"prompt", "reasoning", "answer"}
    missing = needed - set(paths_dataset.column_names)
    if missing:
        raise ValueError(f"sft_dataset needs the columns {sorted(needed)} of notebook 02's paths data set; "
                         f"missing {sorted(missing)}")
    if only_kept and "kept" in paths_dataset.column_names:
        paths_dataset = paths_dataset.filter(lambda kept: kept, input_columns="kept")
    n = len(paths_dataset)
    ids = paths_dataset["question_id"] if "question_id" in paths_dataset.column_names else [str(i) for i in range(n)]
    return datasets.Dataset.from_dict({
        "question_id": list(ids),
        "prompt": [modeling.chat_text(p) for p in paths_dataset["prompt"]],
        "completion": [completion_text(r, a) for r, a in zip(paths_dataset["reasoning"], paths_dataset["answer"])],
    })


def split_by_question(ds, eval_share: float, seed: int):
    """(train, eval) with every path of a question on one side; eval is None when eval_share is 0.

    Paths of one question share most of their text, so a random row split would leak the eval
    questions into training and flatter the eval loss.
    """
    if not 0.0 <= eval_share < 1.0:
        raise ValueError(f"eval_share={eval_share}: need 0 <= eval_share < 1")
    if eval_share == 0.0:
        return ds, None
    qids = sorted(set(ds["question_id"]))
    if len(qids) < 2:
        raise ValueError(f"eval_share={eval_share} needs at least 2 questions to split, got {len(qids)}; "
                         f"set eval_share=0 or add questions")
    n_eval = min(len(qids) - 1, max(1, round(eval_share * len(qids))))
    held_out = set(random.Random(f"{seed}-sft-split").sample(qids, n_eval))
    is_eval = [q in held_out for q in ds["question_id"]]
    train = ds.select([i for i, e in enumerate(is_eval) if not e])
    evaluation = ds.select([i for i, e in enumerate(is_eval) if e])
    return train, evaluation


def sft_splits(paths_dataset, cfg: SFTStageConfig):
    """(train, eval) prompt-completion rows from notebook 02's paths: sft_dataset, then split_by_question."""
    return split_by_question(sft_dataset(paths_dataset), cfg.eval_share, cfg.seed)


def drop_too_long(ds, tokenizer, max_length: int):
    """(rows whose prompt + completion fit in max_length tokens, number dropped).

    TRL would cut a long example at max_length, losing its answer and <|im_end|>: training on
    such rows teaches the model not to stop, so they are dropped instead.
    """
    lengths = modeling.count_tokens(tokenizer, [p + c for p, c in zip(ds["prompt"], ds["completion"])])
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    return ds.select(keep), len(ds) - len(keep)


# --------------------------------------------------------------------------- training


def _steps_per_epoch(n_examples: int, cfg: SFTStageConfig) -> int:
    return max(1, math.ceil(n_examples / cfg.batch_size) // cfg.gradient_accumulation_steps)


def trl_config(cfg: SFTStageConfig, n_train: int, has_eval: bool, output_dir: str):
    """The trl.SFTConfig this stage runs with (CPU-friendly defaults, no saving, no reporting)."""
    import torch
    from trl import SFTConfig

    total = cfg.max_steps if cfg.epochs is None else math.ceil(cfg.epochs * _steps_per_epoch(n_train, cfg))
    eval_steps = cfg.eval_steps or max(1, total // 5)
    return SFTConfig(
        output_dir=output_dir,
        max_steps=cfg.max_steps if cfg.epochs is None else -1,
        num_train_epochs=cfg.epochs if cfg.epochs is not None else 1.0,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,  # loss on the assistant turn only
        packing=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        save_strategy="no",
        report_to="none",
        push_to_hub=False,
        bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name for it
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # GPUs when there are; on CPUs, torchrun's processes form a gloo group
        dataset_num_proc=None,
    )


def make_trainer(model, tokenizer, train_ds, eval_ds, cfg: SFTStageConfig, output_dir: str, callbacks=None):
    """A TRL SFTTrainer over prompt-completion rows (its datasets are tokenized and labelled)."""
    from trl import SFTTrainer

    keep = ["prompt", "completion"]
    train_ds = train_ds.select_columns(keep)
    eval_ds = None if eval_ds is None or len(eval_ds) == 0 else eval_ds.select_columns(keep)
    args = trl_config(cfg, len(train_ds), eval_ds is not None, output_dir)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, callbacks=callbacks)
    if not cfg.progress:
        modeling.hide_log_printer(trainer)
    return trainer


def history_frame(log_history: list[dict]) -> pd.DataFrame:
    """The Trainer's log history as one row per step (train and eval logs merged)."""
    columns = ["step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm",
               "mean_token_accuracy", "eval_mean_token_accuracy"]
    rows = [{k: entry.get(k) for k in columns} for entry in log_history
            if "loss" in entry or "eval_loss" in entry]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows, columns=columns).astype({c: "float64" for c in columns[1:]})
    return frame.groupby("step", as_index=False).first()  # first non-null value per column


@contextlib.contextmanager
def _dataset_progress(show: bool):
    """Hide the datasets library's progress bars (TRL's preparation maps) unless asked for."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not show:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def train_sft(model, tokenizer, train_ds, eval_ds, cfg: SFTStageConfig, callbacks=None) -> SFTResult:
    """Fine-tune `model` in place on prompt-completion rows (`sft_dataset`), loss on the completion.

    eval_ds may be None. Rows longer than cfg.max_length tokens are dropped (see drop_too_long).
    callbacks: transformers TrainerCallbacks (e.g. `SamplingCurve`).
    """
    start = time.perf_counter()
    for name, ds in (("train_ds", train_ds), ("eval_ds", eval_ds)):
        if ds is not None and not {"prompt", "completion"} <= set(ds.column_names):
            raise ValueError(f"{name} needs 'prompt' and 'completion' columns (build it with sft.sft_dataset); "
                             f"got {ds.column_names}")
    train_ds, dropped = drop_too_long(train_ds, tokenizer, cfg.max_length)
    if eval_ds is not None:
        eval_ds, dropped_eval = drop_too_long(eval_ds, tokenizer, cfg.max_length)
        dropped += dropped_eval
    if dropped:
        log.warning("dropped %d example(s) longer than max_length=%d tokens", dropped, cfg.max_length)
    if len(train_ds) == 0:
        raise ValueError(f"no training example fits in max_length={cfg.max_length} tokens: raise max_length "
                         f"or lower notebook 02's length caps")
    output_dir = cfg.output_dir or tempfile.mkdtemp(prefix="steiner-sft-")
    try:
        with _dataset_progress(cfg.progress):
            trainer = make_trainer(model, tokenizer, train_ds, eval_ds, cfg, output_dir, callbacks)
        train_output = trainer.train()
        n_train_logs = len(trainer.state.log_history)
        last = trainer.state.global_step
        if trainer.eval_dataset is not None and not any(
                "eval_loss" in e and e.get("step") == last for e in trainer.state.log_history):
            trainer.evaluate()  # the eval loss at the last step (logged into the history)
    finally:
        if cfg.output_dir is None:
            shutil.rmtree(output_dir, ignore_errors=True)
    model.eval()
    logs = trainer.state.log_history
    eval_during_training = sum(e.get("eval_runtime", 0.0) for e in logs[:n_train_logs])
    train_time = max(train_output.metrics["train_runtime"] - eval_during_training, 1e-9)
    tokens = int(trainer.state.num_input_tokens_seen)
    history = history_frame(logs)
    losses = history["loss"].dropna()
    eval_losses = history["eval_loss"].dropna()
    return SFTResult(
        history=history,
        wall_time_s=time.perf_counter() - start,
        train_time_s=train_time,
        train_tokens=tokens,
        tokens_per_s=tokens / train_time,
        steps=int(trainer.state.global_step),
        n_train=len(train_ds),
        n_eval=0 if eval_ds is None else len(eval_ds),
        n_dropped_too_long=dropped,
        final_train_loss=float(losses.iloc[-1]) if len(losses) else None,
        final_eval_loss=float(eval_losses.iloc[-1]) if len(eval_losses) else None,
    )


__all__ = ["SFTStageConfig", "FROM_PARAMS", "stage_config", "SFTResult", "completion_text", "sft_dataset", "split_by_question", "sft_splits",
           "drop_too_long", "trl_config", "make_trainer", "history_frame", "train_sft"]

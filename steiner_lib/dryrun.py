"""Dry runs of the GPU presets on a CPU: every notebook, every code path the preset switches on.

`python -m steiner_lib dry-run --params params/gpu-small.yaml` takes the preset as it is and
changes only what a CPU without network cannot do, logging each change:

- every hub name (base model, tokenizer, LLM teacher) -> a tiny Qwen2 built and saved here
  (`build_hub_standin`): a ChatML tokenizer without Steiner's 14 tokens, as Qwen2.5's, so the
  hub-name path (load by name, add the 14 tokens, initialise their rows) really runs;
- the gated GPQA source (hub, or a CSV path not on this machine) -> a local CSV in GPQA's schema
  (`write_gpqa_standin`);
- vLLM backends (teacher, RL rollouts, evaluation) -> transformers;
- counts and steps -> 1-6 (`SHRINK`, `SHRINK_GRIDS`), so every notebook finishes in seconds.

Everything else (LoRA, the LLM teacher, the embedding clusterer, the hub tokenizer, the length
caps, the GRPO group shape, the logits-processor grid, reward weights, ...) stays as the preset
says. The run goes through the runner (Papermill) into its own run root, under run name
"dryrun-<preset run name>".
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from steiner_lib.generation.backends import CPU_DEFAULT
from steiner_lib.params import load_preset
from steiner_lib.training import modeling

log = logging.getLogger("steiner_lib.dryrun")

# Sizes only: how many questions, steps, tokens. No mode switch is in here.
SHRINK: dict[str, object] = {
    "task_n_train": 6, "task_n_validation": 3, "task_n_diamond": 3, "task_n_hard": 2, "task_n_control": 3,
    "teacher_max_new_tokens": 24,
    "synthesis_augmentations_per_question": 1,
    "dag_embedding_eval_questions": 3, "dag_paths_per_dag": 2, "dag_n_drawn": 2,
    "base_steps": 2, "base_batch_size": 2, "base_seq_len": 128,
    "cpt_steps": 2, "cpt_batch_size": 2, "cpt_seq_len": 128, "cpt_gradient_accumulation": 2,
    "sft_steps": 2, "sft_batch_size": 2, "sft_eval_questions": 2, "sft_max_new_tokens": 24,
    "sft_gradient_accumulation": 2,
    "rl_steps": 1, "rl_batch_size": 4, "rl_num_generations": 2, "rl_max_completion_length": 24,
    "rl_eval_questions": 2,
    "eval_max_questions": 3, "eval_max_new_tokens": 24, "eval_control_questions": 2, "eval_samples": 2,
    "scaling_questions": 3, "scaling_max_new_tokens": 40, "scaling_batch_size": 8, "scaling_samples": 2,
    "scaling_budget_grace": 8,  # room for budget 16 + grace + the tokens that close a step: 36 <= 40
    "scaling_vote_draws": 2, "scaling_length_bins": 2, "scaling_context_bins": 2,
    "scaling_variant_sft_steps": 2, "scaling_variant_rl_steps": 1,
}
# Grids of sizes, written as text: replaced when the preset's differ.
SHRINK_GRIDS: dict[str, str] = {"scaling_vote_ks": "1,2", "scaling_budgets": "8,16"}
HUB_NAME_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "teacher_model")
BACKEND_KEYS = ("teacher_backend", "rl_backend", "eval_backend")
# The notebooks' kernels inherit these: no hub access at all; and one torch thread, because on a
# shared CPU a 60 K-parameter model generates about 100x slower with 2 threads than with 1
# (measured here under load: 2.7 s against 0.03 s for 3 prompts x 24 tokens).
DRY_RUN_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1"}

# The stand-in: a 1-layer Qwen2 (about 60 K parameters), long enough context for the presets' caps.
STANDIN = modeling.ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                               max_position_embeddings=8192)


def build_hub_standin(path, vocab_size: int = 400, seed: int = 0) -> Path:
    """A tiny Qwen2 checkpoint shaped like a hub Qwen2.5 one, saved to `path`.

    Its byte-level BPE tokenizer knows the ChatML tokens (<|endoftext|> pad, <|im_start|>,
    <|im_end|> eos, Qwen2.5's chat template) but not Steiner's 14 reasoning tokens, so loading it
    by path goes through modeling.load_pretrained_model's token addition exactly as Qwen2.5 does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = modeling.qwen2_pre_tokenizer()  # one digit per piece, as Qwen2.5's
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(modeling.CHAT_TOKENS),
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(modeling.regular_text()[:40], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=modeling.IM_END, pad_token=modeling.ENDOFTEXT)
    tok.chat_template = modeling.CHATML_TEMPLATE
    model = modeling.build_model(tok, STANDIN, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# A few questions in GPQA's CSV layout (GPQA's own column names, extra columns included), written
# here: the real file is gated and never leaves its owners' terms.
STANDIN_QUESTIONS = [
    ("Which gas makes up most of Earth's atmosphere by volume?", "Nitrogen", "Oxygen", "Argon", "Carbon dioxide",
     "Chemistry", "Physical Chemistry"),
    ("What is the SI unit of electric charge?", "Coulomb", "Ampere", "Volt", "Ohm", "Physics", "Electromagnetism"),
    ("Which organelle makes most of a eukaryotic cell's ATP?", "Mitochondrion", "Ribosome", "Golgi apparatus",
     "Lysosome", "Biology", "Molecular Biology"),
    ("How many protons does a carbon-12 nucleus hold?", "6", "12", "8", "14", "Physics", "Nuclear Physics"),
    ("Which bond joins two amino acids in a protein?", "Peptide bond", "Glycosidic bond", "Phosphodiester bond",
     "Hydrogen bond", "Biology", "Biochemistry"),
]


def write_gpqa_standin(path) -> Path:
    """A GPQA-schema CSV (Record ID, Question, Correct Answer, Incorrect Answer 1-3, domains)."""
    import pandas as pd

    rows = [{"Record ID": f"standin-{i:03d}", "Question": q, "Correct Answer": c, "Incorrect Answer 1": w1,
             "Incorrect Answer 2": w2, "Incorrect Answer 3": w3, "High-level domain": dom, "Subdomain": sub}
            for i, (q, c, w1, w2, w3, dom, sub) in enumerate(STANDIN_QUESTIONS)]
    path = Path(path)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@dataclass
class Substitution:
    key: str
    preset_value: object
    dry_run_value: object
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {self.preset_value!r} -> {self.dry_run_value!r} ({self.why})"


def _is_hub_name(value) -> bool:
    return isinstance(value, str) and not Path(value).expanduser().exists()


def dry_run_values(preset, workdir) -> tuple[dict, list[Substitution]]:
    """The dry run's flat params from a preset file, and every change made to it (stand-ins built in workdir)."""
    params = load_preset(preset)  # the preset as it is must validate
    values, subs = dict(params.values), []
    workdir = Path(workdir)

    def change(key, new, why):
        if values[key] != new:
            subs.append(Substitution(key, values[key], new, why))
            values[key] = new

    standin = workdir / "tiny-qwen2"
    for key in HUB_NAME_KEYS:
        if _is_hub_name(values[key]):
            if not (standin / "config.json").exists():
                build_hub_standin(standin, seed=values["run_seed"])
            change(key, str(standin), "hub name -> tiny Qwen2 built here")
    benchmark = values["eval_benchmark"]
    if isinstance(benchmark, str) and (benchmark.startswith("hub:") or not Path(benchmark).expanduser().exists()):
        change("eval_benchmark", str(write_gpqa_standin(workdir / "gpqa_standin.csv")),
               "gated GPQA (hub, or a CSV not on this machine) -> local CSV in GPQA's schema")
    for key in BACKEND_KEYS:
        if values[key] in ("vllm", "auto"):
            change(key, "transformers" if key == "teacher_backend" else CPU_DEFAULT,
                   "vLLM needs a GPU: the in-process fallback")
    for key, small in SHRINK.items():  # keys of sections a notebook may not have yet are skipped
        if isinstance(values.get(key), (int, float)) and small < values[key]:
            change(key, small, "shrunk")
    for key, grid in SHRINK_GRIDS.items():
        if key in values:
            change(key, grid, "shrunk")
    if values["rl_batch_size"] % values["rl_num_generations"]:
        change("rl_batch_size", 2 * values["rl_num_generations"], "whole GRPO groups")
    change("run_name", f"dryrun-{values['run_name']}", "its own run")
    change("run_root", str(workdir / "runs"), "its own run root")
    return values, subs


@dataclass
class DryRunResult:
    params_path: Path
    substitutions: list[Substitution]
    outcomes: list = field(default_factory=list)  # runner.StageOutcome per notebook
    seconds: float = 0.0


def dry_run(preset, workdir=None, only: str | None = None, progress: bool = False) -> DryRunResult:
    """Run notebooks 01-06 (or `only`) on the dry-run version of `preset`, offline, into workdir."""
    from steiner_lib.runner import run

    workdir = Path(workdir or tempfile.mkdtemp(prefix="steiner-dryrun-"))
    workdir.mkdir(parents=True, exist_ok=True)
    before = {k: os.environ.get(k) for k in DRY_RUN_ENV}
    os.environ.update(DRY_RUN_ENV)
    try:
        t0 = time.time()
        values, subs = dry_run_values(preset, workdir)
        path = workdir / f"dryrun-{Path(preset).stem}.yaml"
        path.write_text(f"# Dry run of {preset}; changes:\n" + "".join(f"#   {s}\n" for s in subs)
                        + yaml.safe_dump(values, sort_keys=False))
        for s in subs:
            log.info("dry run: %s", s)
        outcomes = run(path, only=only, force=True, progress=progress)
        return DryRunResult(path, subs, outcomes, time.time() - t0)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["SHRINK", "STANDIN", "build_hub_standin", "write_gpqa_standin", "Substitution", "dry_run_values",
           "DryRunResult", "dry_run"]

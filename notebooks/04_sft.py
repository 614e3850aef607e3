# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Supervised fine-tuning on Steiner's step template
#
# **In the paper.** After CPT, Steiner is fine-tuned with a chat template on the sampled
# paths: name each step, write the full thought, summarise it, reflect, then proceed,
# backtrack or end; then the visible answer.
#
# **Here.** The same template in Qwen2.5's ChatML layout, TRL's `SFTTrainer` on
# prompt-completion pairs so that the loss falls on the assistant turn only (a test in
# `tests/training/test_sft.py` proves the mask). Paths of one question stay on one side of the
# train / eval split. Afterwards the model is sampled on held-out *validation* questions
# (start states it never saw): how many outputs follow the format, how many steps and
# backtracks they take, and how often they pick the right option.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
sft_steps = 1400
sft_batch_size = 8
sft_gradient_accumulation = 1
sft_gradient_checkpointing = False
sft_learning_rate = 0.003
sft_max_length = 1024
sft_eval_share = 0.1
sft_eval_questions = 60
sft_temperature = 0.7
sft_eval_samples = 4
sft_eval_batch_size = 64
sft_eval_backend = "lean"
sft_max_new_tokens = 1024
sft_curve_points = 4
sft_curve_questions = 24

# %%
# Setup: validate the params, open this stage, load the CPT model, the paths and the validation questions.
import datasets
from IPython.display import display

from steiner_lib import stages
from steiner_lib.data import dataset
from steiner_lib.evaluation import scoring, stage_table
from steiner_lib.format import pretty
from steiner_lib.report import plots
from steiner_lib.training import checkpoints, sft

cfg, stage, figures = stages.open_notebook_stage("04_sft", globals(), inputs=("01_synthesis", "02_dag", "03_cpt"))
model, tokenizer = checkpoints.load_stage_model(cfg, "03_cpt", "cpt")
paths = datasets.load_from_disk(str(stage.input_dirs["02_dag"] / "paths"))
validation = list(dataset.load_countdown_questions(stage.input_dirs["01_synthesis"] / "validation.csv").values())
validation = validation[:cfg.sft.eval_questions]

# %% [markdown]
# ## Training
#
# At `sft_curve_points` evenly spaced steps the model is sampled on `sft_curve_questions`
# validation questions (one output each), so the learning curve of the skills (valid steps,
# format, solve rate) is drawn beside the loss.

# %%
sft_cfg = sft.stage_config(cfg.sft, seed=cfg.run.seed)
train_ds, eval_ds = sft.sft_splits(paths, sft_cfg)
k = cfg.sft.curve_points
curve = sft.sampling_curve(validation[:cfg.sft.curve_questions], cfg.run.seed,
                           [round(cfg.sft.steps * (i + 1) / k) for i in range(k)],
                           max_new_tokens=cfg.sft.max_new_tokens, temperature=cfg.sft.temperature,
                           batch_size=cfg.sft.eval_batch_size, backend=cfg.sft.eval_backend)
result = sft.train_sft(model, tokenizer, train_ds, eval_ds, sft_cfg, callbacks=[curve])
curve.frame().to_csv(stage.path("sampling_curve.csv"), index=False)
checkpoints.save_checkpoint(model, tokenizer, stage.path("sft"))
print(f"{result.n_train} training examples ({result.n_dropped_too_long} too long, dropped), "
      f"{result.steps} steps, {result.tokens_per_s:,.0f} tokens/s")

# %%
#| label: fig-sft-loss
#| fig-cap: "SFT loss on the assistant turn (cross-entropy per completion token): training, and held-out paths of questions kept out of training."
fig = plots.loss_curves({"SFT": result.history})
fig.savefig(figures / "sft-loss.png", dpi=120, bbox_inches="tight")

# %%
#| label: fig-sft-skills
#| fig-cap: "What SFT teaches, step by step: valid-step share, format-valid share and solve rate of one sampled output per validation question, against the training tokens seen (dashed: chance for the solve rate)."
fig = plots.skill_curve(curve.frame())
fig.savefig(figures / "sft-skills.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Sampling held-out questions
#
# `sft_eval_samples` samples per validation question at temperature `sft_temperature`, each
# up to `sft_max_new_tokens` tokens (room for the longest path the length filter of 02 keeps).
# The answer letter is read from the visible answer after `<|reasoning_end|>` (the last
# "Answer: X"); an output with no letter is scored wrong. A solve needs two skills: reaching
# the target, and naming the letter the prompt gave it. "Target reached" measures the first alone
# (the replayed final state holds the target, whatever letter follows). "Letter holds the written
# value" measures the second alone: of the answers whose written value ("... = 41") is one of the options, the
# share whose letter is that option's. Means come with 95% bootstrap intervals over questions (a
# question's samples are averaged first).

# %%
report = scoring.heldout_report(model, tokenizer, validation, seed=cfg.run.seed, n_samples=cfg.sft.eval_samples,
                                   max_new_tokens=cfg.sft.max_new_tokens, temperature=cfg.sft.temperature,
                                   batch_size=cfg.sft.eval_batch_size, backend=cfg.sft.eval_backend)

# %% [markdown]
# Beside the model, the search teacher (at the error rates of `teacher_*`; it wrote the training data
# unless the preset uses an LLM teacher) answers the same questions
# without being told the answer, within the same step budget (`sft_max_new_tokens` over the mean
# tokens per step of the training paths); when it ends without reaching an option it guesses.

# %%
teacher_ref = stage_table.references_for(validation, stage.input_params("01_synthesis").teacher, paths,
                                        cfg.sft.max_new_tokens, seed=cfg.run.seed)
summary_table = report.summary.copy()
summary_table.loc["search teacher, no answer: solve rate"] = (
    teacher_ref.loc["search teacher, no answer", ["accuracy", "acc_ci_low", "acc_ci_high"]].to_numpy() / 100)

# %%
#| label: tbl-sft-heldout
#| tbl-cap: "The SFT model sampled on held-out validation questions: format validity, steps and backtracks per output, valid-step share and solve rate (chance: 0.25), with 95% bootstrap intervals; last row: the search teacher without the answer on the same questions."
display(summary_table.round(3))

# %% [markdown]
# How the sampled steps replay against the exact rules (@tbl-step-status):

# %%
#| label: tbl-step-status
#| tbl-cap: "Every step of the held-out outputs, by how it replays: valid (legal operation on the numbers held, right result), wrong result, numbers not held (an operation is written, but a number it uses is not held), unreadable (no operation written), lost (starts from an unknown state)."
display(scoring.step_status_table(report.scores).round(3))

# %% [markdown]
# Which format errors the invalid outputs show (@tbl-sft-errors; one output can show several), and
# one sampled output:

# %%
#| label: tbl-sft-errors
#| tbl-cap: "Format errors of the SFT model's held-out outputs: how many outputs show each kind (the parser's error kinds; an output with none parses)."
display(scoring.error_counts(report.scores).to_frame().T)
print(scoring.format_paragraph(report, cfg.sft.max_new_tokens))

# %% [markdown]
# How much of the step error is the sampling? The same questions decoded greedily (one output each,
# temperature 0) beside the sampled outputs above (@tbl-sft-greedy). A model that knows its
# arithmetic but spreads some probability over near misses gains valid steps under greedy decoding;
# one that does not know it gains nothing. The reported figures stay the sampled ones.

# %%
#| label: tbl-sft-greedy
#| tbl-cap: "Greedy against sampled decoding on the same validation questions: per-question means of the sampled outputs and of the greedy output, the change and its paired-bootstrap 95% CI."
greedy = scoring.heldout_report(model, tokenizer, validation, seed=cfg.run.seed, n_samples=1,
                                max_new_tokens=cfg.sft.max_new_tokens, temperature=0.0,
                                batch_size=cfg.sft.eval_batch_size, backend=cfg.sft.eval_backend)
display(scoring.paired_change(greedy.scores, report.scores, seed=cfg.run.seed,
                              metrics=scoring.DECODING_METRICS)
        .rename(columns={"before": "sampled", "after": "greedy"}).round(3))

# %% [markdown]
# How the defaults of this preset were chosen, seed by seed: the rows that `benchmarks/learnability.py`
# recorded (notebooks 01-04 per seed, `benchmarks/results/learnability.csv`), shown as the file holds
# them. They are development runs, not this run; the numbers of this run are the ones above.

# %%
#| label: tbl-learnability
#| tbl-cap: "Development runs recorded by benchmarks/learnability.py: per label (a setting) and seed, the base model's accuracy on arithmetic facts and copying, and the SFT model's held-out valid-step share, format-valid share and solve rate."
display(dataset.recorded_benchmark("learnability.csv"))

# %% [markdown]
# Whether the development checkpoints read the option list at all: `benchmarks/letter_lookup.py`
# hands each checkpoint a correct solution that already writes the value, then "Answer:", and
# reads the next-token probabilities of the four letters (teacher forcing; options re-shuffled so
# the letter cannot be remembered). Chance is 0.25. A letter at chance caps the solve rate at
# chance, whatever the search reaches ("target reached" above).

# %%
#| label: tbl-letter-lookup
#| tbl-cap: "Development checkpoints recorded by benchmarks/letter_lookup.py: the share of prompts whose most likely next letter is the option holding the written value (95% bootstrap CI), and the mean probability of that letter (chance: 0.25)."
display(dataset.recorded_benchmark("letter_lookup.csv"))

# %% [markdown]
# Which visible answer a small base model can learn to end with the right letter
# (`task_answer_format`, chapter 2): a development base model trained further on option drills
# alone, in each answer format, and probed on fresh drills (`benchmarks/answer_format.py`; the
# letter read from the model's own continuation after the value).

# %%
#| label: tbl-answer-format
#| tbl-cap: "Development runs recorded by benchmarks/answer_format.py: letter accuracy on fresh option drills after training a base model on drills in each answer format, by step and base (seed), with 95% bootstrap CIs (chance: 0.25)."
display(dataset.recorded_benchmark("answer_format.csv"))

# %% [markdown]
# The same development runs' learning curves (`benchmarks/results/learning_curve.csv`): the held-out
# valid-step share at evenly spaced SFT steps, against the SFT tokens seen, one line per setting and
# seed. Each point samples one output on each of `sft_curve_questions` validation questions, so a
# single point is noisy; the slope says how far a setting is from the competence target.

# %%
#| label: fig-learning-curves
#| fig-cap: "Held-out valid-step share against SFT training tokens, per development setting (colour) and seed (line style), from benchmarks/results/learning_curve.csv."
fig = plots.recorded_learning_curves(dataset.recorded_benchmark("learning_curve.csv"))

# %% [markdown]
#
# One sampled output:

# %%
print(pretty(report.scores["completion"].iloc[0]))

# %% [markdown]
# ## Save

# %%
manifest = stage.finish(metrics={
    "sft_steps": result.steps, "sft_train_examples": result.n_train, "sft_tokens_per_s": result.tokens_per_s,
    "sft_train_tokens": result.train_tokens,
    "sft_final_train_loss": result.final_train_loss, "sft_final_eval_loss": result.final_eval_loss,
    **scoring.manifest_metrics(report.summary, "heldout_"),
    **scoring.manifest_metrics(greedy.summary, "heldout_greedy_"), "teacher_step_budget": teacher_ref.attrs["step_budget"],
    "teacher_solve_rate": float(teacher_ref.loc["search teacher, no answer", "accuracy"]) / 100,
})
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1 (`cp -r runs/cpu runs/ex` once), then
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/04_sft.py
# papermill notebooks/04_sft.ipynb runs/ex/executed/04_sft.ipynb -f params/cpu.yaml -p run_name ex -p sft_steps 2800
# ```
#
# 1. **Train longer.** Run with `-p sft_steps 2800`, then `-p sft_steps 700`. Does the held-out
#    loss keep falling (@fig-sft-loss), and do the valid-step and format-valid shares follow?
# 2. **How much is one seed worth?** Run with `-p run_seed 1`, then `-p run_seed 2`, and write
#    down the held-out solve rate each time. Is the spread across seeds smaller or larger than
#    the 95% interval of one run? (The evaluation's intervals are over questions only.)
# 3. **Forward-only training data, in the library.** In `steiner_lib.training.sft.sft_dataset`,
#    keep only the rows whose path has no backtrack (the paths data set has an `n_backtracks`
#    column; filter on `n_backtracks == 0` next to the `kept` filter). Re-run: does the
#    fine-tuned model still backtrack on held-out questions?
# 4. **Cite whole names.** Re-run 02 and this notebook with `-p dag_backtrack_by name` (the
#    paper's wording: a backtrack copies the whole step name). How do the format-valid share and
#    the backtrack citations in the paragraph above change?

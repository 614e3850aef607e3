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
# # Evaluation: what each stage adds
#
# **In the paper.** Steiner reports GPQA-Diamond accuracy across its training stages, with
# +3.53 points from RL and +5.56 more from the logits processor
# (`reasoning_constraints(min_steps, max_steps)`) at inference, and MMLU, which needs little
# search, as a control. The numbers are single runs, reported without confidence intervals.
#
# **Here.** Every checkpoint of this run (base, CPT, SFT, RL, and RL with the logits processor)
# answers the same questions with the same decoding: `eval_samples` outputs per question at
# `eval_temperature` (each question scored by the mean of its samples), or greedy at temperature 0.
# The default preset samples 4 outputs at 0.7, because greedy decoding is chaotic for models this
# small: in two runs of the same code, seed and package versions (two sessions of this project),
# the SFT checkpoint's greedy outputs on the diamond split parsed 92% and 0% of the time (the
# second looping "proceed" to the token cap every time), while their sampled format validity
# differed by 8 points; a mean over samples moves by its sampling error instead. Accuracy gets a
# 95% bootstrap interval over questions. Each row is set against chance (25%), and compared with the
# base row and with the row above it **on the same questions** by a paired bootstrap (difference,
# interval, two-sided p). Where the paper reports a change, the verdict follows one rule
# (`steiner_lib/evaluation/verdicts.py`): *reproduced* when the interval lies on the paper's side of zero,
# *contradicted* when it excludes the paper's effect, *inconclusive* when it holds both zero and
# the paper's effect. The processor's setting is chosen on the
# validation split and only then reported on the diamond split. The base model never learned the
# 14 reasoning tokens, so it never writes `<|reasoning_end|>`: it is scored like every model, except
# that its letter is read from the last "Answer: X" anywhere in its output (the other models' letter
# must follow `<|reasoning_end|>`). The control split holds problems that need no search; the hard
# split, problems whose search the data's own teacher rarely finishes (notebook 01 gives the rules).
#
# Before any delta is read, every row is set beside references computed on the same questions:
# chance (25%), the greedy shortcut, the search teacher (the training data's teacher unless an LLM wrote it), searching
# without the answer within the models' step budget, and the exact solver. A searcher that ends
# without reaching an option guesses, so it scores 25% on that question.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
eval_benchmark = None
eval_max_questions = 64
eval_max_new_tokens = 640
eval_temperature = 0.7
eval_samples = 4
eval_lp_min_steps_grid = "0,2"
eval_lp_max_steps_grid = "6,10"
eval_control_questions = 48
eval_hard_questions = 48
eval_backend = "lean"
eval_tensor_parallel = 1

# %%
# Setup: validate the params, open this stage, load the evaluation splits.
import datasets
from IPython.display import Markdown, display

from steiner_lib import stages
from steiner_lib.data import dataset
from steiner_lib.evaluation import scoring, stage_table
from steiner_lib.generation import backends
from steiner_lib.tasks import gpqa

cfg, stage, figures = stages.open_notebook_stage("06_evaluation", globals(),
                                                 inputs=("01_synthesis", "02_dag", "03_cpt", "04_sft", "05_rl"))
e = cfg.eval
synthesis = stage.input_dirs["01_synthesis"]
benchmark = e.benchmark or str(synthesis / "diamond.csv")
diamond = gpqa.load_choice_questions(benchmark)[:e.max_questions]
validation = gpqa.load_choice_questions(str(synthesis / "validation.csv"))[:e.max_questions]
control = gpqa.load_choice_questions(str(synthesis / "control.csv"))[:e.control_questions]
hard = gpqa.load_choice_questions(str(synthesis / "hard.csv"))[:e.hard_questions]
load = backends.stage_loader(cfg, e.backend, e.tensor_parallel)  # in this process (lean), or vLLM on GPUs
decoding = stage_table.Decoding(max_new_tokens=e.max_new_tokens, temperature=e.temperature, seed=cfg.run.seed,
                               samples=e.samples, backend=e.backend)
print(f"diamond: {len(diamond)} questions from {benchmark}; validation: {len(validation)}; "
      f"hard: {len(hard)}; control: {len(control)}")

# %% [markdown]
# ## Choosing the logits processor on the validation split
#
# The RL model answers the validation questions under every (min_steps, max_steps) of the grid;
# the most accurate setting wins, ties going to the least forcing (lower min_steps, then higher
# max_steps). @tbl-lp-grid shows the grid.

# %%
rl_model, rl_tokenizer = load("05_rl", "rl")
settings = stage_table.lp_settings(e.lp_min_steps_grid, e.lp_max_steps_grid)
grid = stage_table.validation_grid(rl_model, rl_tokenizer, validation, settings, decoding)
lp_setting = stage_table.choose_setting(grid)
grid.to_csv(stage.path("lp_grid.csv"), index=False)
print(f"chosen on validation: min_steps={lp_setting[0]}, max_steps={lp_setting[1]}")

# %%
#| label: tbl-lp-grid
#| tbl-cap: "The RL model with each logits-processor setting on the validation split: accuracy (%, 95% bootstrap CI over questions), format-error rate (%) and steps per output."
display(grid.round(2))

# %% [markdown]
# ## The references
#
# On our own benchmark the exact solver knows every answer, so each split gets its references
# (none for a real GPQA file). The teacher's step budget is the models' token budget
# `eval_max_new_tokens` over the mean tokens per step of the training paths.

# %%
splits = {"diamond": diamond, "hard": hard, "control": control}
references = {}
if e.benchmark is None:
    paths = datasets.load_from_disk(str(stage.input_dirs["02_dag"] / "paths"))
    teacher_params = stage.input_params("01_synthesis").teacher
    for split, questions in splits.items():
        problems = dataset.load_countdown_questions(synthesis / f"{split}.csv")
        references[split] = stage_table.references_for([problems[scoring.question_id(q)] for q in questions],
                                                      teacher_params, paths, e.max_new_tokens, seed=cfg.run.seed)
        references[split].to_csv(stage.path(f"references_{split}.csv"))
    print(f"step budget of the teacher: {references[split].attrs['step_budget']} steps ({e.max_new_tokens} tokens)")

# %% [markdown]
# ## The stage table
#
# Every row answers the diamond, hard and control questions (same decoding); the last row uses the
# setting chosen above.

# %%
scores = stage_table.evaluate_stages(load, splits, lp_setting, decoding)
stage_table.all_scores(scores).to_parquet(stage.path("scores.parquet"))
tables = stage_table.split_tables(scores, seed=cfg.run.seed)  # the paper's deltas on the diamond split only
table, hard_table, control_table = tables["diamond"], tables["hard"], tables["control"]
table.to_csv(stage.path("stage_table.csv"))
hard_table.to_csv(stage.path("hard_table.csv"))
control_table.to_csv(stage.path("control_table.csv"))

# %%
#| label: tbl-stage-table
#| tbl-cap: "Diamond split, one row per stage: accuracy (%, 95% bootstrap CI), change from the row above (points; paired bootstrap CI and two-sided p on the same questions), change from the base row (paired CI), format-error rate (%), mean reasoning tokens, the paper's reported change on GPQA-Diamond and the verdict against it; below, the references on the same questions."
display(stage_table.readable_table(table, references.get("diamond")))

# %%
display(Markdown(stage_table.reproduction_paragraph(table, "the diamond split", decoding.describe())))

# %% [markdown]
# ### How many questions the headline comparisons need
#
# An interval wider than the effect it is meant to detect settles nothing. @tbl-sample-sizes takes every
# comparison read above (each row against chance, against the base row and against the row above, the
# logits processor's change, and the control's RL change), with each question's samples averaged first
# and deltas as per-question paired differences, and gives the half-width of its 95% interval now and the
# questions it would need for the target half-width (`scoring.questions_needed`, the normal
# approximation from the spread measured now; the target is printed below the table).

# %%
#| label: tbl-sample-sizes
#| tbl-cap: "Diamond split (and the control's RL change): each headline comparison's questions, outputs per question, standard deviation of its per-question values (points), 95% half-width now (points), the questions needed for the target half-width, and whether it is met."
sizes = stage_table.sample_sizes(scores)
sizes.to_csv(stage.path("sample_sizes.csv"))
display(sizes.round(1))
print(scoring.power_sentence(sizes, len(diamond)))

# %% [markdown]
# ## The control: problems that need no search
#
# The paper's MMLU control asks whether the gains are specific to questions that need search. Here
# the control split holds Countdown problems a greedy forward search solves (@tbl-control-table).

# %%
#| label: tbl-control-table
#| tbl-cap: "Control split (no search needed), the same rows and columns as the stage table, with its references."
display(stage_table.readable_table(control_table, references.get("control")))

# %%
display(Markdown(stage_table.reproduction_paragraph(control_table, "the control split", decoding.describe())))

# %% [markdown]
# ## The hard split
#
# Questions whose reference search needs many backtracks (@tbl-hard-table): the search teacher
# without the answer, within the same step budget, is the reference to read first.

# %%
#| label: tbl-hard-table
#| tbl-cap: "Hard split, the same rows and columns as the stage table, with its references."
display(stage_table.readable_table(hard_table, references.get("hard")))

# %% [markdown]
# @fig-tiers sets the three tiers side by side, with the teacher's line and the chance line.

# %%
#| label: fig-tiers
#| fig-cap: "Accuracy by difficulty tier (control: greedy solves; diamond: greedy fails, a short search suffices; hard: a long search is needed), each stage with its 95% bootstrap interval; dotted: the search teacher without the answer and the greedy shortcut on the same questions; dashed: chance."
fig = stage_table.plot_tiers({"control": control_table, "diamond": table, "hard": hard_table}, references)
fig.savefig(figures / "tiers.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# @fig-stage-accuracy puts the two splits side by side.

# %%
#| label: fig-stage-accuracy
#| fig-cap: "Accuracy of each stage on the diamond and control splits (eval_samples outputs per question at eval_temperature), with 95% bootstrap intervals over questions; the dashed line is chance."
fig = stage_table.plot_stage_tables({"diamond": table, "control": control_table})
fig.savefig(figures / "stage-accuracy.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Save

# %%
manifest = stage.finish(metrics=stage_table.stage_metrics(tables, references, lp_setting, sizes))
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1 (`cp -r runs/cpu runs/ex` once), then
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/06_evaluation.py
# papermill notebooks/06_evaluation.ipynb runs/ex/executed/06_evaluation.ipynb -f params/cpu.yaml -p run_name ex -p eval_max_questions 200
# ```
#
# 1. **Narrower intervals.** Run with `-p eval_max_questions 200` (the whole diamond split of the
#    default preset). How much narrower are the intervals of @tbl-stage-table, and does any
#    verdict change? How many questions would resolve a +3.53-point gain?
# 2. **More forcing.** Run with `-p eval_lp_min_steps_grid "0,2,4,8" -p eval_lp_max_steps_grid "4,6,10,16"`.
#    Does the setting chosen on validation (@tbl-lp-grid) still win on the diamond split?
# 3. **The letter rule, in the library.** The base model's letter is read anywhere in its output
#    (`steiner_lib.evaluation.stage_table.extract_letter_anywhere`). Make it return None (every
#    model must write `<|reasoning_end|>` first), re-run, and see how the base row and the first
#    delta change.

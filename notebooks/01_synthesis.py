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
# # Data synthesis: shortcut traces and backtracking by truncation augmentation
#
# **In the paper.** Most reasoning data sets hold only forward chain-of-thought: every step
# is right, nothing is ever undone. Steiner makes backtracking data from them: it cuts a
# *shortcut* (forward) solution at a random step, hides the answer, lets a strong LLM
# continue from that prefix, where it explores and makes mistakes, and then gives it the
# correct answer so it backtracks to where it went wrong and reaches the answer.
#
# **Here.** The domain is Countdown-style arithmetic search posed as a 4-choice question
# ("which of these values can be made from these numbers?"), in GPQA-Diamond's CSV schema.
# An exact solver gives every shortcut solution and proves each question has exactly one
# reachable option. The default teacher is a noisy heuristic search that errs in measured
# ways (its error rates are params); an LLM teacher does the same job at GPU scale.
# This notebook writes the question splits (the "diamond" split is the benchmark the
# evaluation reads exactly as it would read the real GPQA-Diamond CSV), the shortcut traces
# and the backtracking traces.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
task_n_numbers = 4
task_max_number = 15
task_min_steps = 2
task_max_steps = 3
task_max_result = 60
task_n_train = 3000
task_n_validation = 100
task_n_diamond = 200
task_n_hard = 100
task_n_control = 100
task_diamond_max_backtracks = 5
task_hard_min_backtracks = 100
task_answer_format = "scan"
teacher_kind = "search"
teacher_error_rate = 0.35
teacher_arithmetic_error_rate = 0.05
teacher_branching = 3
teacher_max_explore_steps = 16
teacher_self_backtracks = 16
teacher_model = None
teacher_backend = "transformers"
teacher_max_new_tokens = 512
teacher_temperature = 0.7
teacher_tensor_parallel = 1
synthesis_augmentations_per_question = 4
synthesis_workers = 2

# %%
# Setup: validate the params (a clear error before any compute) and open the stage's directory.
import pandas as pd
from IPython.display import Markdown, display

from steiner_lib import stages
from steiner_lib.data import synthesis, teachers
from steiner_lib.format import pretty
from steiner_lib.report import plots
from steiner_lib.tasks import choice

cfg, stage, figures = stages.open_notebook_stage("01_synthesis", globals())

# %% [markdown]
# ## The questions and their splits
#
# Every question is a multiset of start numbers and four candidate values; exactly one can be
# made (+ − × ÷, positive whole intermediate results of at most `task_max_result`, each number
# at most once; the question states the cap). The three distractors are the unreachable values
# nearest to the answer (under the cap), so they are close but wrong. The cap keeps every value
# in a range whose arithmetic a small model can learn: without it, three operations on numbers
# up to `task_max_number` reach products in the thousands.
#
# Difficulty is measured by the exact solver, never by a model. The greedy shortcut always
# takes the operation whose result is closest to the target; the reference depth-first search
# tries operations in the same order and backtracks. The *diamond* split (the reported
# benchmark) keeps questions where greedy fails **and** the reference search finds the answer
# within `task_diamond_max_backtracks` backtracks: search is needed, and a searcher without the
# answer can finish it. The *hard* split keeps questions where greedy fails and the reference
# search needs at least `task_hard_min_backtracks` backtracks: the data's own teacher rarely
# solves those unaided, so they are reported beside diamond, not instead of it. The
# *validation* split follows the diamond rule (the evaluation chooses its settings there, never
# on diamond); the *control* split holds questions that need no search at all. No start
# multiset of an evaluation split appears in training, not even with another target.

# %%
splits = choice.splits_for(cfg.task, cfg.run.seed)
choice.check_disjoint(splits)
for name, questions in splits.items():
    choice.write_gpqa_csv([q.to_choice() for q in questions], stage.path(f"{name}.csv"))
split_table = choice.split_summary(splits)

# %%
#| label: tbl-split-sizes
#| tbl-cap: "Question splits. Difficulty columns are means over the split: operations of the shortest solution, share the greedy shortcut solves, backtracks of the reference search."
display(split_table)

# %% [markdown]
# One diamond question, exactly as the evaluation will see it (choices shuffled by a seeded
# permutation per question, as OpenAI's simple-evals does for GPQA; no chain-of-thought
# instruction, as in the paper):

# %%
prompt, letter = choice.format_prompt(splits["diamond"][0].to_choice(), seed=cfg.run.seed)
print(prompt, f"\n\n(correct: {letter})")

# %% [markdown]
# ## Shortcut traces
#
# The forward-only data the paper starts from: the shortest solution, written in Steiner's
# step template (a name, a full thought, a summary, a reflection), every step followed by
# *proceed*.

# %%
train = splits["train"]
letters = [choice.format_prompt(q.to_choice(), seed=cfg.run.seed)[1] for q in train]
print(pretty(synthesis.shortcut_trajectory(train[0], letters[0]).trace()))

# %% [markdown]
# ## Truncation augmentation
#
# For each training question: one shortcut trace plus `synthesis_augmentations_per_question`
# augmented ones. Each augmented trace cuts the shortcut at a random step, lets the teacher
# continue with the answer hidden, then tells it the answer so it backtracks to the deepest
# state from which the answer is still reachable and proceeds to it. With the answer hidden
# the search teacher writes at most `teacher_max_explore_steps` steps, stops on a state that
# holds an option, and at a dead end backtracks on its own up to `teacher_self_backtracks`
# times: how much successful unaided search the traces show ("solved before being told the answer" below).

# %%
teacher = teachers.make_teacher(cfg.teacher, prompt_seed=cfg.run.seed)
trajectories = synthesis.synthesize(
    train, letters, teacher, augmentations_per_question=cfg.synthesis.augmentations_per_question,
    seed=cfg.run.seed, workers=cfg.synthesis.workers)
synthesis.save_trajectories(trajectories, stage.path("trajectories.jsonl"))
augmented = [tr for tr in trajectories if tr.source == "augmented"]
print(f"{len(trajectories)} trajectories: {len(trajectories) - len(augmented)} shortcut, {len(augmented)} augmented")

# %% [markdown]
# One backtracking trace. The prefix is the cut shortcut; after it the teacher explores
# without the answer; the backtrack names the step it returns to.

# %%
example = max(augmented[:50], key=lambda tr: (tr.n_backtracks > 0, tr.meta.get("wrong_branch_steps", 0)))
print(pretty(example.trace()))

# %% [markdown]
# ## How often, and how far, the teacher errs
#
# A *wrong-branch* step is arithmetically right but leaves a state from which the answer can
# no longer be made (the solver decides); an *arithmetic slip* is a step whose claimed
# result is wrong (a hallucinated step). The backtrack distance is how many steps the
# recovery undoes.

# %%
errors = synthesis.teacher_error_table(trajectories)
error_summary = synthesis.teacher_error_summary(errors)

# %%
#| label: tbl-teacher-errors
#| tbl-cap: "The teacher's errors over all augmented traces (rates per trace unless stated)."
display(error_summary)

# %%
#| label: fig-teacher-errors
#| fig-cap: "How the teacher errs. Left: wrong-branch steps per augmented trace. Middle: the step (counted from the cut) of its first error. Right: how many steps each recovery backtrack undoes."
fig = plots.teacher_error_figure(errors)
fig.savefig(figures / "teacher-errors.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Save
#
# The stage manifest records the params, the package versions and the figures above.

# %%
manifest = stage.finish(metrics={
    "n_trajectories": len(trajectories),
    "n_augmented": len(augmented),
    "split_sizes": {k: len(v) for k, v in splits.items()},
    **{k: float(v) for k, v in synthesis.teacher_error_rates(errors).items()},
})
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# Each exercise re-runs this notebook with Papermill on a copy of the default run, so the
# default run stays as it is. Once, from the repository root: `cp -r runs/cpu runs/ex`. Then,
# per exercise, convert the script and run it with the default preset plus the change (`-p`
# overrides `-f`; editing a copy of `params/cpu.yaml` with `run_name: ex` does the same):
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/01_synthesis.py
# papermill notebooks/01_synthesis.ipynb runs/ex/executed/01_synthesis.ipynb -f params/cpu.yaml -p run_name ex -p teacher_error_rate 0.0
# ```
#
# 1. **A teacher that never errs.** Run with `-p teacher_error_rate 0.0`, then `0.7`. How do
#    @tbl-teacher-errors and @fig-teacher-errors change? With no wrong branches, where would
#    the backtracking data of notebook 02 come from?
# 2. **Harder questions.** Run with `-p task_n_numbers 5 -p task_max_steps 4`. Does the share of
#    traces with an error grow with the depth of the search? How many questions reach the
#    diamond and hard splits (@tbl-split-sizes)?
# 3. **Hallucinated steps, edited in the library.** `steiner_lib.data.teachers.slip` decides
#    how wrong a hallucinated result is (off by 1 or 2). Make it off by 10 to 20 instead, re-run
#    with `-p teacher_arithmetic_error_rate 0.2`, and read one augmented trace above: would a
#    model find such slips easier to catch in its reflection?

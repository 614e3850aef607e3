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
# # Inference-time scaling: why more thinking does not help
#
# **In the paper.** Steiner was meant to scale at inference like o1: more reasoning tokens, higher
# accuracy. It did not. Forcing more steps with `reasoning_constraints(min_steps, ...)` gave no gain on
# almost every benchmark and a loss on some (GPQA among them). The author names four suspects: CPT and
# SFT never showed the model long outputs; the RL reward balances breadth and depth badly; the
# backtracking context leads the model to confirm wrong answers or reject right ones; forcing logits is
# too blunt. None was tested.
#
# **Here.** Each checkpoint answers the diamond questions of notebook 06 (the first `scaling_questions`
# of them) while three knobs spend more tokens: forced steps (min_steps), s1-style budget forcing
# (reasoning_end refused before B tokens; from B on the reasoning ends where a step is complete, and
# `scaling_budget_grace` tokens later the open step is closed for the model and the reasoning ended)
# and majority votes over k sampled outputs.
# All three go on one plot against the tokens they spend per question. Then each suspect gets a
# measurement, a figure and a conclusion computed from the numbers. Intervals are 95% bootstraps over
# questions; comparisons are paired on the same questions.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
scaling_questions = 24
scaling_stages = "SFT,RL"
scaling_max_new_tokens = 640
scaling_batch_size = 16
scaling_backend = "lean"
scaling_min_steps_grid = "0,2,6"
scaling_budgets = "128,384"
scaling_budget_grace = 64
scaling_samples = 4
scaling_vote_ks = "1,2,4"
scaling_vote_draws = 32
scaling_temperature = 0.7
scaling_length_bins = 4
scaling_context_bins = 4
scaling_soft_bias = 4.0
scaling_retrain_variants = False
scaling_long_paths_share = 0.5
scaling_variant_sft_steps = 100
scaling_reward_variants = "depth-heavy,breadth-heavy"
scaling_reward_factor = 3.0
scaling_variant_rl_steps = 15

# %%
# Setup: validate the params, open this stage, load the diamond questions and the plan of settings.
import datasets
import pandas as pd
from IPython.display import Markdown, display

from steiner_lib import stages
from steiner_lib.data import dataset
from steiner_lib.evaluation import scoring, scaling, stage_table
from steiner_lib.generation import backends
from steiner_lib.report import plots
from steiner_lib.tasks import gpqa
from steiner_lib.training import rewards

cfg, stage, figures = stages.open_notebook_stage(
    "07_inference_scaling", globals(), inputs=("01_synthesis", "02_dag", "03_cpt", "04_sft", "05_rl"))
s, seed = cfg.scaling, cfg.run.seed
diamond_csv = stage.input_dirs["01_synthesis"] / "diamond.csv"
questions = gpqa.load_choice_questions(str(diamond_csv))[:s.questions]  # as notebook 06 reads them
problems = dataset.load_countdown_questions(diamond_csv)  # the same questions, for the exact solver
plan = scaling.plan_from_params(s)
models = scaling.parse_names(s.stages, ("base", "CPT", "SFT", "RL"), "scaling_stages")
# One output per question and setting, sampled at scaling_temperature like the vote pool (greedy
# outputs of these small models loop to the token cap: see notebook 06).
single = stage_table.Decoding(max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=seed,
                             batch_size=s.batch_size, progress=False, backend=s.backend)
load = backends.stage_loader(cfg, s.backend)  # in this process: budget forcing and the soft bias are transformers processors
print(f"{len(questions)} diamond questions; models {models}; plan {plan}")

# %% [markdown]
# ## Accuracy against reasoning tokens
#
# For each checkpoint: one output per question (sampled at `scaling_temperature`) under every min_steps
# of the grid (no step cap) and every token budget, and one pool of `scaling_samples` sampled outputs per question from which every vote of k
# samples is drawn (k-subsets of the pool, so the k's share samples). A vote spends the tokens of all k
# samples. The last model of the list also runs the soft-bias variant, used in cause 4.

# %%
outputs, curves = scaling.measure_models(load, models, questions, plan, single)

# %% [markdown]
# @fig-scaling-curves is the main result: every way of spending more tokens, for every checkpoint, at
# matched token budgets; @tbl-scaling-curves gives the numbers.

# %%
#| label: fig-scaling-curves
#| fig-cap: "Accuracy on the diamond questions (95% bootstrap CI over questions) against mean reasoning tokens spent per question (log scale). Colour: checkpoint; circles: forced steps (min_steps grid), squares: budget forcing, triangles: majority vote over k samples (scaling_vote_ks) (tokens of all k). A curve that rose to the right would be inference-time scaling; the dashed line is chance."
main = curves[curves["method"] != "soft_bias"]
fig = plots.scaling_curves(main, labels=scaling.METHOD_LABELS)
fig.savefig(figures / "scaling-curves.png", dpi=120, bbox_inches="tight")

# %%
#| label: tbl-scaling-curves
#| tbl-cap: "Every point of the scaling plot: setting (min_steps, token budget, or k), accuracy (%, 95% CI), mean reasoning tokens per question, format-error rate (%)."
display(main.round(1))

# %%
display(Markdown(scaling.scaling_paragraph(main)))

# %% [markdown]
# ### How many questions each curve's end points need
#
# A curve rises or falls only if its end points can be told apart. @tbl-scaling-sample-sizes takes each
# curve's accuracy at its least and most forcing and the paired change between them (votes: the smallest
# and largest k over the pool), per-question values as in the intervals above, and gives the 95%
# half-width now and the questions needed for the target half-width (`scoring.questions_needed`;
# the target is printed below). The cause tests at the end of the chapter get the same columns.

# %%
#| label: tbl-scaling-sample-sizes
#| tbl-cap: "Each scaling curve's end points (accuracy at the least and the most forcing, and their paired change): questions, outputs per question, standard deviation of the per-question values (points), 95% half-width now (points), questions needed for the target half-width, and whether it is met."
sizes = scaling.sample_sizes(outputs, plan.ks, plan.draws, seed)
display(sizes.round(1))
print(scoring.power_sentence(sizes, len(questions)))

# %% [markdown]
# ### The format errors budget forcing leaves
#
# Forcing `<|reasoning_end|>` mid-step would break every output it cuts (an unterminated step). Here
# the reasoning ends only on a complete step: the model may finish its step for
# `scaling_budget_grace` tokens, then the open field is closed, the missing fields are written
# empty, and the step ended before the reasoning is (`constraints.closing_token`). @tbl-budget-errors
# sorts the format errors left in the budget rows by cause (`scoring.error_causes`).

# %%
#| label: tbl-budget-errors
#| tbl-cap: "Budget-forcing outputs per checkpoint and budget: the share with any format error, and how many outputs show each cause: the reasoning ended mid-step (what forcing the end mid-step does), no reasoning_end (the output stopped first), a step or move the model wrote breaks the format, special tokens in the answer."
budget_errors = scaling.budget_errors(outputs)
display(budget_errors.round(1))

# %%
display(Markdown(scaling.budget_errors_paragraph(budget_errors)))

# %% [markdown]
# ## Cause 1: training never showed long outputs
#
# If the model only learned lengths it saw, accuracy should drop for outputs longer than the training
# paths. @fig-accuracy-by-length bins each checkpoint's sampled pool (natural lengths, no forcing) by
# reasoning tokens, with the lengths of the training paths behind. With `scaling_retrain_variants`, a
# variant is SFT-trained from the CPT checkpoint on the longest `scaling_long_paths_share` of the paths and
# run on the same sequential grid.

# %%
paths = datasets.load_from_disk(str(stage.input_dirs["02_dag"] / "paths")).filter(lambda k: k, input_columns="kept")
bins = scaling.pool_length_bins(outputs, models, s.length_bins, seed=seed)
long_variant = None
if s.retrain_variants:
    model, tokenizer = load("03_cpt", "cpt")
    sft_params = stage.input_params("04_sft").sft  # the sft section notebook 04 trained with
    info = scaling.train_long_path_variant(model, tokenizer, paths, s.long_paths_share, s.variant_sft_steps, sft_params, seed)
    long_variant = "SFT (long paths)"
    outputs, curves = scaling.stacked((outputs, curves),
                                      scaling.measure(model, tokenizer, long_variant, questions, plan, single))
    print(f"long-path variant: {info}")

# %%
#| label: fig-accuracy-by-length
#| fig-cap: "Accuracy (95% CI) of sampled outputs binned by their reasoning tokens (quantile bins, each point at the bin's mean length), per checkpoint; grey bars: reasoning tokens of the SFT training paths. Points right of the grey mass are lengths training never showed."
fig = plots.accuracy_by_length(bins, paths["reasoning_tokens"])
fig.savefig(figures / "accuracy-by-length.png", dpi=120, bbox_inches="tight")

# %%
display(Markdown(scaling.length_paragraph(bins, paths["reasoning_tokens"], curves, long_variant,
                                          reference="SFT" if "SFT" in models else models[0])))

# %% [markdown]
# ## Cause 2: the RL reward balances breadth and depth badly
#
# The step reward of notebook 05 mixes breadth terms (node in- and out-degree) and depth terms (distance
# from the question, progress to the answer). With `scaling_retrain_variants`, RL restarts from the SFT
# checkpoint with each reweighting of @tbl-reward-variants for `scaling_variant_rl_steps` steps (notebook
# 05's other settings), and runs the same grid (@fig-reward-variants).

# %%
rl_params = stage.input_params("05_rl").rl  # the rl section notebook 05 trained with
weights = rewards.RewardWeights.from_params(rl_params)
variants = {f"RL {n}": w for n, w in scaling.reward_variants(weights, scaling.parse_names(
    s.reward_variants, ("depth-heavy", "breadth-heavy"), "scaling_reward_variants"), s.reward_factor).items()}
if s.retrain_variants:
    train_questions = dataset.load_countdown_questions(stage.input_dirs["01_synthesis"] / "train.csv")
    graphs = dataset.load_dags(stage.input_dirs["02_dag"] / "dags.jsonl")
    outputs, curves = scaling.stacked((outputs, curves), scaling.measure_reward_variants(
        load, variants, train_questions, graphs, rl_params, s.variant_rl_steps, questions, plan, single, seed))

# %%
#| label: tbl-reward-variants
#| tbl-cap: "Reward weights: notebook 05's (RL) and the reweighted variants (see steiner_lib/training/rewards.py for the formula)."
display(scaling.weights_table({"RL": weights, **variants}))

# %%
#| label: fig-reward-variants
#| fig-cap: "Forced steps and budget forcing for the RL checkpoint and each reward-weight variant (95% CIs over questions), against mean reasoning tokens per question. Without scaling_retrain_variants only the RL curve is drawn."
fig = plots.scaling_curves(curves[curves["model"].isin(["RL", *variants]) & curves["method"].isin(["min_steps", "budget"])],
                           labels=scaling.METHOD_LABELS)
fig.savefig(figures / "reward-variants.png", dpi=120, bbox_inches="tight")

# %%
if s.retrain_variants and "RL" in models:
    display(Markdown(scaling.variant_paragraph(curves, list(variants))))
else:
    display(Markdown("The reward variants were not retrained in this preset (`scaling_retrain_variants: false`, "
                     "to keep notebooks 06 and 07 within their time budget); `params/cpu-full.yaml` runs them."))

# %% [markdown]
# ## Cause 3: the backtracking context misleads
#
# Every output of every checkpoint above is replayed step by step. A backtrack is *wrong* when the
# branch it abandons can still reach the correct option (the exact solver's `reachable_values` on the
# state after the last step); an end is *wrong* when it confirms a wrong answer. @fig-context-rates plots
# both shares against the context the decision was made in (tokens generated so far).

# %%
last = models[-1]  # the checkpoint the causes are asked of; its tokenizer (every checkpoint's) replays the outputs
model, tokenizer = load(*stage_table.ROW_CHECKPOINTS[last])
events = scaling.backtrack_events_by_model(outputs, problems, tokenizer)
edges = scaling.context_edges(events, s.context_bins)
rates = scaling.event_rates(events, edges, seed=seed)

# %%
#| label: fig-context-rates
#| fig-cap: "Left: share of backtracks that abandon a branch from which the correct option is still reachable; right: share of ends (reasoning_end) that confirm a wrong answer. Both against the tokens generated before the decision (quantile bins, all outputs of all checkpoints; 95% CIs over questions; n: events per bin)."
fig = plots.context_rates(rates, {"backtrack": "backtracks that abandon a solvable branch",
                                  "end": "ends that confirm a wrong answer"})
fig.savefig(figures / "context-rates.png", dpi=120, bbox_inches="tight")

# %%
display(Markdown(scaling.context_paragraph(events, rates)))

# %% [markdown]
# ## Cause 4: forcing logits is too blunt
#
# The same rule as `reasoning_constraints(min_steps)`, but as a nudge: `SoftReasoningBias` adds
# `scaling_soft_bias` to the favoured token's logit instead of masking every other token.
# @fig-soft-vs-hard compares the two at each min_steps > 0, on the same questions.
#
# A trained model writes a newline after every step_end, as the format does, and chooses its move
# one token later; the bias is applied at both positions (`constraints` module docstring), where a
# bias at the first alone would never reach the choice. @tbl-soft-decisions replays each soft-bias
# output through the model and counts how often the bias changed the choice at a step end.

# %%
comparison = scaling.soft_against_hard(outputs, last, seed=seed)

# %%
#| label: fig-soft-vs-hard
#| fig-cap: "The last checkpoint with hard step forcing (circles) and the soft logit bias (diamonds) at the same min_steps settings: accuracy (95% CI) against mean reasoning tokens per question."
fig = plots.scaling_curves(curves[(curves["model"] == last) & curves["method"].isin(["min_steps", "soft_bias"])],
                           labels=scaling.METHOD_LABELS)
fig.savefig(figures / "soft-vs-hard.png", dpi=120, bbox_inches="tight")

# %%
#| label: tbl-soft-decisions
#| tbl-cap: "The soft bias at the step ends of the last checkpoint's soft-bias outputs, per min_steps: step ends with fewer than min_steps steps done, mean P(proceed) without and with the bias where the move is chosen (at scaling_temperature), the choices it changed (expected: the sum of the probability it moved onto proceed), positions where it made proceed the most likely token, proceeds written, and mean steps of the free (min_steps 0), soft and hard outputs."
decisions = scaling.soft_decisions(model, tokenizer, outputs, questions, seed, last, s.soft_bias, s.temperature)
display(decisions.round(2))

# %%
display(Markdown(scaling.soft_paragraph(curves, comparison, last, s.soft_bias, decisions)
                 if comparison else "The min_steps grid holds no value above 0: no soft-bias comparison."))

# %% [markdown]
# ## The four causes, tested
#
# Each cause above becomes a prediction with a sign, measured per question on the last checkpoint (its
# SFT checkpoint and the retrained variants where a test compares models), with a 95% bootstrap interval
# over questions (@tbl-cause-tests). The rule (`scaling.cause_verdict`) could give any answer: *supported*
# when the interval lies on the predicted side of 0 and still holds an effect as large as the smallest
# the paper reports (`verdicts.MARGIN`); *not supported* when it leaves out every effect of the predicted
# sign that large (the other sign, around 0, or too small to matter); *inconclusive* when it holds both
# no effect and one that matters, so the interval is too wide; the sample-size columns say how many
# questions would narrow it to the target. The variants' tests are *not run* without
# `scaling_retrain_variants`.

# %%
#| label: tbl-cause-tests
#| tbl-cap: "One row per test of a suspected cause: the prediction (with the sign it expects), what was measured, the estimate (points) and its 95% bootstrap CI over questions, the verdict, and the questions used, the 95% half-width now (points), the questions needed for the target half-width and whether it is met."
tests = scaling.cause_tests(outputs, problems, paths["reasoning_tokens"], last, "SFT", long_variant,
                            list(variants))
causes = scaling.cause_table(tests, seed=seed)
display(causes.round(1))

# %%
display(Markdown(scaling.cause_paragraph(causes)))

# %% [markdown]
# ## Save

# %%
curves.to_csv(stage.path("scaling_curves.csv"), index=False)
outputs.assign(error_kinds=outputs["error_kinds"].astype(str)).to_parquet(stage.path("outputs.parquet"))
events.to_parquet(stage.path("backtrack_events.parquet"))
rates.to_csv(stage.path("context_rates.csv"), index=False)
budget_errors.to_csv(stage.path("budget_errors.csv"), index=False)
decisions.to_csv(stage.path("soft_decisions.csv"), index=False)
sizes.to_csv(stage.path("sample_sizes.csv"))
causes.to_csv(stage.path("cause_tests.csv"))
pd.concat(bins, names=["model"]).to_csv(stage.path("length_bins.csv"))
manifest = stage.finish(metrics=scaling.stage_metrics(curves, events, comparison, decisions, sizes, causes))
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1 (`cp -r runs/cpu runs/ex` once), then
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/07_inference_scaling.py
# papermill notebooks/07_inference_scaling.ipynb runs/ex/executed/07_inference_scaling.ipynb -f params/cpu.yaml -p run_name ex -p scaling_retrain_variants true
# ```
#
# 1. **The retrained variants.** Run with `-p scaling_retrain_variants true` (what
#    `params/cpu-full.yaml` does). Does the SFT variant trained on the longest paths keep its accuracy
#    on long outputs better (@fig-accuracy-by-length), and does either reward variant bend its curve
#    upward (@fig-reward-variants)?
# 2. **A bigger vote.** Run with `-p scaling_samples 16 -p scaling_vote_ks "1,2,4,8,16"`. Where on
#    @fig-scaling-curves does majority voting stop paying for its tokens, and is it above or below
#    budget forcing at the same token count?
# 3. **A softer nudge, in the library.** `steiner_lib.generation.constraints.SoftReasoningBias`
#    adds a fixed bias; change it to grow with the number of steps still missing, re-run, and
#    compare with hard forcing (@fig-soft-vs-hard). Does any soft schedule beat the hard rule on
#    these checkpoints?

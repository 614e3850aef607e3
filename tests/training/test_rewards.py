"""Tests for steiner_lib.training.rewards: step rewards on a hand-built DAG, checked against the formula by hand."""

from __future__ import annotations

import math

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steiner_lib import format as fmt
from steiner_lib.data import dag
from steiner_lib.data.traces import StepRecord, Trajectory
from steiner_lib.format import QUESTION, Backtrack, Trace
from steiner_lib.tasks import text as task_text
from steiner_lib.tasks.choice import CountdownQuestion
from steiner_lib.tasks.countdown import Problem, apply, distance_to_value, make_operation
from steiner_lib.training import modeling, rewards
from steiner_lib.training.rewards import RewardWeights, step_rewards

START, TARGET = (2, 3, 4, 5), 26
OPTIONS = (26, 25, 27, 28)  # the reward never reads the distractors
QUESTION_OBJ = CountdownQuestion(Problem(START, TARGET), OPTIONS[1:], "q1")
D = 3  # four numbers allow three operations
W = RewardWeights()  # defaults: w_in .1, w_out .1, w_dq .2, w_da 1, outcome 1, halluc 1, format .5, unreachable -.5
LN2 = math.log(2)
LN3 = math.log(3)


def step(parent, a, op, b, claimed=None, name=None):
    """A step in the SFT template: a op b from `parent`, stating `claimed` (default: the true result)."""
    o = make_operation(a, op, b)
    s = task_text.step_texts(parent, o, o.result if claimed is None else claimed, OPTIONS)
    return s if name is None else fmt.Step(name, s.thought, s.summary, s.reflection)


def record(parent, a, op, b):
    o = make_operation(a, op, b)
    return StepRecord(parent, apply(parent, o), o, True, step(parent, a, op, b))


@pytest.fixture(scope="module")
def graph():
    """The DAG of tests/data/test_dag.py's hand trajectories, with node features.

    0 Q (2,3,4,5) -> 1 (4,5,6) -> 2 (6,20) -> 3 (26,) answer
    0 -> 4 (2,3,20) -> 5 (5,20) dead end;  4 -> 2
    degrees (in, out): 1 (1,1)  2 (2,1)  3 (1,0)  4 (1,2)  5 (1,0)
    """
    a1 = record(START, 2, "*", 3)
    a2 = record(a1.state, 4, "*", 5)
    a3 = record(a2.state, 6, "+", 20)
    b1 = record(START, 4, "*", 5)
    b2 = record(b1.state, 2, "+", 3)
    b3 = record(b1.state, 2, "*", 3)
    trajs = [Trajectory("q1", "shortcut", (a1, a2, a3), ("proceed", "proceed"), "", True),
             Trajectory("q1", "augmented", (b1, b2, b3, a3), ("proceed", Backtrack(b1.step.name), "proceed"), "", True)]
    G = dag.build_dag("q1", START, TARGET, trajs, dag.cluster_trajectories(trajs))
    dag.node_features(G)
    return G


def completion(steps, moves, answer="6 + 20 = 26\n\nAnswer: A", end=True) -> str:
    text = fmt.render(Trace(tuple(steps), tuple(moves), answer)) if end else fmt.render_reasoning(
        Trace(tuple(steps), tuple(moves), ""))
    return text + modeling.IM_END


def r(in_deg, out_deg, dq, da):
    """The formula of the module docstring, written out with the default weights."""
    progress = W.unreachable_value if da is None else 1 - da / D
    return 0.1 * math.log(1 + in_deg) + 0.1 * math.log(1 + out_deg) - 0.2 * dq / D + 1.0 * progress


# ---------------------------------------------------------------------------- the DAG as built


def test_hand_dag_is_the_documented_one(graph):
    states = {tuple(d["state"]): n for n, d in graph.nodes(data=True)}
    n = {k: states[s] for k, s in {1: (4, 5, 6), 2: (6, 20), 3: (26,), 4: (2, 3, 20), 5: (5, 20)}.items()}
    assert [(graph.in_degree(n[k]), graph.out_degree(n[k])) for k in range(1, 6)] == [(1, 1), (2, 1), (1, 0), (1, 2), (1, 0)]
    assert graph.nodes[n[5]]["answer_reachable"] is False
    assert [graph.nodes[n[k]]["dist_to_answer"] for k in (1, 2, 3, 4)] == [2, 1, 0, 2]


# ---------------------------------------------------------------------------- step rewards by hand


def test_good_path_rewards_match_the_formula(graph):
    s1 = step(START, 2, "*", 3)
    s2 = step((4, 5, 6), 4, "*", 5)
    s3 = step((6, 20), 6, "+", 20)
    sr = step_rewards(completion([s1, s2, s3], ["proceed", "proceed"]), QUESTION_OBJ, graph, W, letter="A")
    assert [s.status for s in sr.steps] == ["ok"] * 3
    assert all(s.in_dag for s in sr.steps)
    assert [s.state for s in sr.steps] == [(4, 5, 6), (6, 20), (26,)]
    expected = [r(1, 1, 1, 2), r(2, 1, 2, 1), r(1, 0, 3, 0)]
    assert [s.reward for s in sr.steps] == pytest.approx(expected)
    assert sr.steps[1].terms == pytest.approx({"in_degree": 0.1 * LN3, "out_degree": 0.1 * LN2,
                                               "dist_question": -0.2 * 2 / 3, "dist_answer": 1 - 1 / 3})
    assert [s.decision for s in sr.steps] == ["proceed", "proceed", "end"]
    assert sr.steps[2].is_answer and sr.outcome_correct and sr.outcome_reward == 1.0
    assert sr.format_valid and sr.format_penalty == 0 and sr.parse_errors == []
    assert sr.episode_return == pytest.approx(sum(expected) + 1.0)


def test_dead_end_and_backtrack(graph):
    """4×5, then 2+3 into the dead end (5, 20), back to '4 × 5', then 2×3 and 6+20."""
    s1 = step(START, 4, "*", 5)
    s2 = step((2, 3, 20), 3, "+", 2)
    s3 = step((2, 3, 20), 2, "*", 3)
    s4 = step((6, 20), 6, "+", 20)
    moves = ["proceed", Backtrack(s1.name), "proceed"]
    sr = step_rewards(completion([s1, s2, s3, s4], moves), QUESTION_OBJ, graph, W, letter="A")
    assert [s.parent for s in sr.steps] == [START, (2, 3, 20), (2, 3, 20), (6, 20)]  # the backtrack resolved
    assert [s.decision for s in sr.steps] == ["proceed", "backtrack", "proceed", "end"]
    assert sr.steps[1].backtrack_to == s1.name and sr.n_backtracks == 1
    dead = sr.steps[1]
    assert dead.answer_reachable is False and math.isnan(dead.dist_to_answer)
    assert dead.terms["dist_answer"] == W.w_dist_answer * W.unreachable_value
    expected = [r(1, 2, 1, 2), r(1, 0, 2, None), r(2, 1, 2, 1), r(1, 0, 3, 0)]
    assert [s.reward for s in sr.steps] == pytest.approx(expected)
    assert sr.steps[1].reward < 0 < sr.steps[2].reward


def test_a_backtrack_to_a_label_resumes_from_the_latest_step_with_it(graph):
    """As test_dead_end_and_backtrack, with depth-labelled names and a backtrack citing `Step 1`."""
    s1 = step(START, 4, "*", 5, name=fmt.labelled_name(1, "4 × 5"))
    s2 = step((2, 3, 20), 3, "+", 2, name=fmt.labelled_name(2, "3 + 2"))
    s3 = step((2, 3, 20), 2, "*", 3, name=fmt.labelled_name(2, "2 × 3"))
    s4 = step((6, 20), 6, "+", 20, name=fmt.labelled_name(3, "6 + 20"))
    sr = step_rewards(completion([s1, s2, s3, s4], ["proceed", Backtrack("Step 1"), "proceed"]),
                      QUESTION_OBJ, graph, W, letter="A")
    assert sr.format_valid and [s.parent for s in sr.steps] == [START, (2, 3, 20), (2, 3, 20), (6, 20)]
    assert [s.decision for s in sr.steps] == ["proceed", "backtrack", "proceed", "end"]


def test_hallucinated_step_and_what_builds_on_it(graph):
    """2×3 stated as 7 (hallucinated), 4×5 on top of it (built on it), back to the question, then correct."""
    bad = step(START, 2, "*", 3, claimed=7)
    on_top = step((4, 5, 7), 4, "*", 5)
    good = step(START, 2, "*", 3, name="2 × 3 again")
    steps = [bad, on_top, good, step((4, 5, 6), 4, "*", 5, name="4 × 5 again"), step((6, 20), 6, "+", 20)]
    moves = ["proceed", Backtrack(QUESTION), "proceed", "proceed"]
    sr = step_rewards(completion(steps, moves), QUESTION_OBJ, graph, W, letter="A")
    assert [s.status for s in sr.steps] == ["hallucinated", "after_hallucination", "ok", "ok", "ok"]
    assert sr.steps[0].state == (4, 5, 7) and sr.steps[0].operation == "3 × 2 = 7"  # the claimed result
    assert sr.steps[1].state == (7, 20) and not sr.steps[1].is_answer
    assert [s.reward for s in sr.steps[:2]] == [-W.hallucination_penalty] * 2
    assert sr.steps[0].terms == {"hallucination": -1.0}
    assert math.isnan(sr.steps[0].in_degree)
    assert sr.steps[2].parent == START  # QUESTION reset the state and the taint
    assert [s.reward for s in sr.steps[2:]] == pytest.approx([r(1, 1, 1, 2), r(2, 1, 2, 1), r(1, 0, 3, 0)])
    assert sr.format_valid


def test_step_with_numbers_it_does_not_have_is_not_held_and_one_without_operation_unreadable(graph):
    held_not = fmt.Step("9 + 9", "Combine 9 and 9: 9 + 9 = 18.", "Numbers left: 18.", "Hmm.")
    vague = fmt.Step("Think", "Something will work.", "Numbers left: unknown.", "Hmm.")
    sr = step_rewards(completion([held_not, vague], ["proceed"]), QUESTION_OBJ, graph, W, letter="A")
    assert [s.status for s in sr.steps] == ["not_held", "unreadable"]
    assert [s.reward for s in sr.steps] == [-W.hallucination_penalty] * 2
    assert sr.steps[0].state is None and sr.steps[1].state is None
    assert sr.steps[1].parent == START  # an unknown state leaves the next step on the last known one


def test_unknown_but_legal_state_gets_solver_features(graph):
    """5×2 reaches (3, 4, 10), which no trajectory visited: 10×3 - 4 = 26 is two operations away."""
    s1 = step(START, 5, "*", 2)
    assert (3, 4, 10) not in {tuple(d["state"]) for _, d in graph.nodes(data=True)}
    sr = step_rewards(completion([s1], [], answer="Answer: A", end=True), QUESTION_OBJ, graph, W, letter="A")
    got = sr.steps[0]
    assert got.status == "ok" and not got.in_dag and got.node is None
    # in: one DAG state (the question) is one legal operation before it; out: no DAG state
    # (the two-number states (6, 20), (5, 20)) is one operation after it; dq = 4 - 3.
    assert (got.in_degree, got.out_degree, got.dist_from_question, got.dist_to_answer) == (1, 0, 1, 2)
    assert distance_to_value((3, 4, 10), TARGET) == 2  # the solver agrees with the hand count
    assert got.reward == pytest.approx(0.1 * LN2 + 0 - 0.2 / 3 + (1 - 2 / 3))


def test_unknown_dead_end_and_out_degree_from_the_solver(graph):
    """2+3 reaches (4, 5, 5): 26 cannot be made from it; 4×5 from it reaches the DAG's (5, 20)."""
    sr = step_rewards(completion([step(START, 3, "+", 2)], [], answer="Answer: A"), QUESTION_OBJ, graph, W, "A")
    got = sr.steps[0]
    assert distance_to_value((4, 5, 5), TARGET) is None
    assert (got.in_degree, got.out_degree, got.answer_reachable) == (1, 1, False)
    assert got.reward == pytest.approx(r(1, 1, 1, None))


def test_graph_none_takes_every_feature_from_the_solver():
    sr = step_rewards(completion([step(START, 2, "*", 3)], [], answer="Answer: A"), QUESTION_OBJ, None, W, "A")
    got = sr.steps[0]
    assert (got.in_degree, got.out_degree, got.dist_from_question, got.dist_to_answer) == (0, 0, 1, 2)


def test_graph_without_features_and_after_a_json_round_trip(graph, tmp_path):
    from steiner_lib.data import dataset

    dataset.save_dags({"q1": graph}, tmp_path / "dags.jsonl")
    loaded = dataset.load_dags(tmp_path / "dags.jsonl")["q1"]  # states come back as lists
    bare = nx.DiGraph(graph)
    for _, d in bare.nodes(data=True):
        for k in ("in_degree", "out_degree", "dist_from_question", "dist_to_answer", "answer_reachable"):
            d.pop(k, None)
    text = completion([step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5)], ["proceed"], answer="Answer: A")
    want = [s.reward for s in step_rewards(text, QUESTION_OBJ, graph, W, "A").steps]
    for g in (loaded, bare):
        assert [s.reward for s in step_rewards(text, QUESTION_OBJ, g, W, "A").steps] == pytest.approx(want)


# ---------------------------------------------------------------------------- outcome and format


def test_wrong_letter_and_missing_letter(graph):
    steps = [step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5), step((6, 20), 6, "+", 20)]
    wrong = step_rewards(completion(steps, ["proceed"] * 2, answer="26\n\nAnswer: B"), QUESTION_OBJ, graph, W, "A")
    assert wrong.answer_letter == "B" and not wrong.outcome_correct and wrong.outcome_reward == 0
    assert wrong.format_valid
    none = step_rewards(completion(steps, ["proceed"] * 2, answer="it is 26"), QUESTION_OBJ, graph, W, "A")
    assert none.answer_letter is None and "missing_answer_letter" in none.parse_errors
    assert not none.format_valid and none.format_penalty == W.format_penalty


def test_outcome_without_a_letter_checks_the_expression(graph):
    steps = [step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5), step((6, 20), 6, "+", 20)]
    ok = step_rewards(completion(steps, ["proceed"] * 2, answer="(2 × 3) + (4 × 5) = 26\n\nAnswer: C"),
                      QUESTION_OBJ, graph, W)
    bad = step_rewards(completion(steps, ["proceed"] * 2, answer="2 × 3 + 4 = 26\n\nAnswer: C"),
                       QUESTION_OBJ, graph, W)
    assert ok.outcome_correct and not bad.outcome_correct


@pytest.mark.parametrize("text", ["", "hello world", "<|reasoning_start|><|reasoning_step_start|>",
                                  "Answer: A", "<|reasoning_end|><|reasoning_end|>" * 3, "\ufffd" * 5])
def test_malformed_completion_never_raises_and_is_penalised(graph, text):
    sr = step_rewards(text, QUESTION_OBJ, graph, W, letter="A")
    assert not sr.format_valid and sr.format_penalty == W.format_penalty
    segs = sr.segments()
    assert segs[-1].kind == "answer" and segs[0].start == 0 and segs[-1].end == len(text)
    assert sr.outcome_reward == 0 and segs[-1].reward == -W.format_penalty


def test_truncated_completion_keeps_its_complete_steps(graph):
    full = completion([step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5)], ["proceed"], end=False)
    cut = full[:full.rfind(fmt.STEP_END) - 5]  # the second step loses its end
    sr = step_rewards(cut, QUESTION_OBJ, graph, W, letter="A")
    assert len(sr.steps) == 1 and sr.steps[0].decision == "proceed"
    assert {"unterminated_step", "missing_reasoning_end"} <= set(sr.parse_errors)
    assert sr.steps[0].reward == pytest.approx(r(1, 1, 1, 2))  # the step reward itself is kept
    assert sr.segments()[0].reward == pytest.approx(r(1, 1, 1, 2) - W.format_penalty)  # ... minus the penalty
    stops = full[:full.find(fmt.STEP_END) + len(fmt.STEP_END)]  # nothing after the first step
    assert step_rewards(stops, QUESTION_OBJ, graph, W, letter="A").steps[0].decision == "truncated"


def test_unknown_backtrack_target_is_read_as_proceed(graph):
    s1, s2 = step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5)
    sr = step_rewards(completion([s1, s2], [Backtrack("nowhere")]), QUESTION_OBJ, graph, W, letter="A")
    assert sr.steps[1].parent == (4, 5, 6) and "unknown_backtrack_target" in sr.parse_errors


def test_weights_are_knobs(graph):
    text = completion([step(START, 3, "+", 2)], [], answer="Answer: A")
    w = RewardWeights(w_in_degree=0, w_out_degree=2.0, w_dist_question=0, w_dist_answer=3.0, unreachable_value=-2.0)
    got = step_rewards(text, QUESTION_OBJ, graph, w, "A").steps[0]
    assert got.reward == pytest.approx(2.0 * LN2 + 3.0 * -2.0)
    with pytest.raises(ValueError, match="format_penalty"):
        RewardWeights(format_penalty=-1)
    with pytest.raises(ValueError, match="finite"):
        RewardWeights(outcome=float("nan"))


# ---------------------------------------------------------------------------- spans, segments, tokens


def test_step_spans_cover_exactly_each_step(graph):
    steps = [step(START, 4, "*", 5), step((2, 3, 20), 3, "+", 2), step((2, 3, 20), 2, "*", 3)]
    text = completion(steps, ["proceed", Backtrack(steps[0].name)])
    sr = step_rewards(text, QUESTION_OBJ, graph, W, "A")
    for s, orig in zip(sr.steps, steps):
        start, end = s.span
        assert text[start:end] == fmt.render_step(orig)
    segs = sr.segments()
    assert [g.kind for g in segs] == ["step"] * 3 + ["answer"]
    assert all(a.end == b.start for a, b in zip(segs, segs[1:])) and segs[-1].end == len(text)
    assert text[segs[1].start:segs[1].end].startswith("\n" + fmt.PROCEED)  # the move goes with the next step
    assert text[segs[-1].start:].startswith("\n" + fmt.REASONING_END)


def test_spans_with_stray_text_between_fields_and_a_broken_step(graph):
    good = fmt.render_step(step(START, 2, "*", 3))
    stray = good.replace(fmt.NAME_END, fmt.NAME_END + " junk ")  # kept by the parser, with an error
    broken = fmt.STEP_START + fmt.NAME_START + "x" + fmt.NAME_END + fmt.STEP_END  # dropped by the parser
    text = fmt.REASONING_START + "\n" + broken + "\n" + fmt.PROCEED + "\n" + stray + "\n" + fmt.REASONING_END + "\nAnswer: A"
    sr = step_rewards(text, QUESTION_OBJ, graph, W, "A")
    assert len(sr.steps) == 1
    start, end = sr.steps[0].span
    assert text[start:end] == stray


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [completion([step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5), step((6, 20), 6, "+", 20)],
                         ["proceed"] * 2)] * 3 + modeling.regular_text()[:5]
    return modeling.train_bpe_tokenizer(corpus, vocab_size=320)


def test_token_offsets_reproduce_the_text(tokenizer):
    text = completion([step(START, 2, "*", 3), step((4, 5, 6), 4, "*", 5)], ["proceed"]) + "× ÷ − é 😀"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = rewards.completion_token_offsets(tokenizer, ids)
    assert decoded == text and len(offsets) == len(ids)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(s <= e for s, e in offsets) and all(a[1] <= b[0] or a == b for a, b in zip(offsets, offsets[1:]))
    assert any(a == b for a, b in zip(offsets, offsets[1:]))  # multi-byte characters share a span


def test_token_rewards_follow_the_steps(graph, tokenizer):
    steps = [step(START, 4, "*", 5), step((2, 3, 20), 3, "+", 2), step((2, 3, 20), 2, "*", 3), step((6, 20), 6, "+", 20)]
    text = completion(steps, ["proceed", Backtrack(steps[0].name), "proceed"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = rewards.completion_token_offsets(tokenizer, ids)
    sr = step_rewards(decoded, QUESTION_OBJ, graph, W, "A")
    per_token = rewards.token_rewards(sr, offsets)
    assert len(per_token) == len(ids)
    for s in sr.steps:  # every token inside a step's span carries that step's reward
        inside = [t for t, (a, b) in zip(per_token, offsets) if s.span[0] <= a < s.span[1]]
        assert inside and all(t == pytest.approx(s.reward) for t in inside)
    answer_tokens = [t for t, (a, _) in zip(per_token, offsets) if a >= sr.answer_span[0]]
    assert answer_tokens and all(t == sr.outcome_reward == 1.0 for t in answer_tokens)
    assert ids[-1] == tokenizer.convert_tokens_to_ids(modeling.IM_END)  # the end-of-turn token is an answer token
    assert len(set(round(t, 9) for t in per_token)) == 5  # four distinct step rewards and the outcome


def test_reward_table(graph):
    a = step_rewards(completion([step(START, 2, "*", 3)], [], answer="Answer: A"), QUESTION_OBJ, graph, W, "A")
    b = step_rewards("garbage", QUESTION_OBJ, graph, W, "A")
    table = rewards.reward_table([a, b, a])
    assert list(table.columns) == list(rewards.REWARD_TABLE_COLUMNS)
    assert len(table) == 2 and list(table["completion"]) == [0, 2]
    assert table["reward"].iloc[0] == pytest.approx(a.steps[0].reward)
    assert table["term_dist_answer"].iloc[0] == pytest.approx(a.steps[0].terms["dist_answer"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from([fmt.REASONING_START, fmt.REASONING_END, fmt.STEP_START, fmt.STEP_END,
                                 fmt.PROCEED, fmt.BACKTRACK, fmt.NAME_START, fmt.NAME_END, "2 × 3 = 6",
                                 "4 × 5 = 20", "QUESTION", "Answer: A", "\n", "x"]), max_size=40))
def test_any_text_scores_without_raising(graph, pieces):
    text = "".join(pieces)
    sr = step_rewards(text, QUESTION_OBJ, graph, W, "A")
    segs = sr.segments()
    assert segs[0].start == 0 and segs[-1].end == len(text)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    assert all(math.isfinite(s.reward) for s in segs)


def test_status_paragraph_counts_each_status_and_says_when_one_penalty_dominates():
    import pandas as pd

    from steiner_lib.training.rewards import status_paragraph

    table = pd.DataFrame({"status": ["unreadable"] * 19 + ["ok"], "reward": [-1.0] * 19 + [0.4]})
    text = status_paragraph(table)
    assert "Of 20 scored rollout steps" in text and "**unreadable** 19 (95.0%, mean reward -1.00)" in text
    assert "**ok** 1 (5.0%, mean reward +0.40)" in text and "applied to 5.0% of the steps" in text
    assert "close to a constant per step" in text
    mixed = status_paragraph(pd.DataFrame({"status": ["ok", "ok", "hallucinated"], "reward": [0.5, 0.1, -1.0]}))
    assert "constant" not in mixed and "applied to 66.7% of the steps." in mixed
    assert status_paragraph(table.iloc[:0]) == "No rollout step was scored."
    from steiner_lib.training.rewards import ok_step_share

    assert ok_step_share(table) == 0.05 and ok_step_share(pd.DataFrame({"status": ["ok", "ok", "lost", "ok"]})) == 0.75
    assert ok_step_share(table.iloc[:0]) != ok_step_share(table.iloc[:0])  # NaN without a step


def test_term_contributions_show_which_term_moves_the_reward():
    import pandas as pd

    from steiner_lib.training.rewards import term_contributions

    t = pd.DataFrame({"term_in_degree": [0.1, 0.2, None], "term_out_degree": [0.1, 0.1, None],
                      "term_dist_question": [-0.1, -0.2, None], "term_dist_answer": [0.5, 1.0, None],
                      "term_hallucination": [0.0, 0.0, -1.0]})
    c = term_contributions(t)
    assert list(c.index) == ["in_degree", "out_degree", "dist_question", "dist_answer", "hallucination"]
    assert c.loc["dist_answer", "steps"] == 2 and c.loc["dist_answer", "mean"] == pytest.approx(0.75)
    assert c.loc["hallucination", "steps"] == 1  # only the step it penalised
    assert c.loc["out_degree", "std"] == 0.0  # a term that never varies
    assert c["share of |reward|"].sum() == pytest.approx(1.0)

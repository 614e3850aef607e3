"""Truncation augmentation: shortcut and augmented trajectories, determinism, workers, save/load."""

from __future__ import annotations

import json
import random

import pytest

from steiner_lib import format as fmt
from steiner_lib.data.synthesis import (
    augment, load_trajectories, save_trajectories, shortcut_trajectory, shortest_records, synthesize,
    teacher_error_table,
)
from steiner_lib.data.teachers import LLMTeacher, SearchTeacher
from steiner_lib.format import Backtrack
from steiner_lib.tasks.choice import format_prompt
from steiner_lib.tasks.countdown import apply, solve, verify_expression
from helpers import make_questions


QUESTIONS = make_questions(60, prefix="s") + make_questions(20, seed=1, n_numbers=5, max_number=50,
                                                  max_steps=4, prefix="s")
LETTERS = [format_prompt(q, 0)[1] for q in QUESTIONS]
TEACHER = SearchTeacher(error_rate=0.5, arithmetic_error_rate=0.1, branching=3, max_explore_steps=4)


def current_path_states(t, q):
    """Walk a trajectory resolving backtracks by name; returns the states of the final path."""
    names = [r.step.name for r in t.records]
    stack: list[int] = []  # record indices of the current path
    for i, r in enumerate(t.records):
        if i > 0:
            move = t.moves[i - 1]
            if isinstance(move, Backtrack):
                if move.to == fmt.QUESTION:
                    stack = []
                else:
                    j = names.index(move.to)
                    assert j < i and j in stack, "backtrack to a step that is not on the current path"
                    stack = stack[: stack.index(j) + 1]
        parent = t.records[stack[-1]].state if stack else q.problem.numbers
        assert r.parent == parent
        if r.arithmetic_ok:
            assert apply(r.parent, r.operation) == r.state
        stack.append(i)
    return [t.records[i] for i in stack]


def test_shortcut_is_forward_only_solved_and_chained():
    for q, letter in zip(QUESTIONS, LETTERS):
        t = shortcut_trajectory(q, letter)
        assert t.source == "shortcut" and t.solved and t.n_backtracks == 0
        assert all(m == "proceed" for m in t.moves) and len(t.moves) == len(t.records) - 1
        assert [r.operation for r in t.records] == solve(q.problem)
        state = q.problem.numbers
        for r in t.records:
            assert r.arithmetic_ok and r.parent == state and apply(state, r.operation) == r.state
            state = r.state
        assert q.problem.target in state
        expr, _, tail = t.answer.partition(" = ")
        assert verify_expression(q.problem, expr) and t.answer.endswith(f"Answer: {letter}")
        assert not fmt.parse(fmt.render(t.trace())).errors


def test_augmented_trajectories_are_valid_traces():
    rng = random.Random(0)
    cuts = set()
    for q, letter in zip(QUESTIONS, LETTERS):
        shortest = shortest_records(q)
        for _ in range(3):
            t = augment(q, letter, TEACHER, rng)
            parsed = fmt.parse(fmt.render(t.trace()))
            assert not parsed.errors and parsed.trace == t.trace()
            final = current_path_states(t, q)
            assert q.problem.target in final[-1].state and all(r.arithmetic_ok for r in final)
            k = t.meta["cut_at"]
            cuts.add((len(shortest), k))
            assert 0 <= k < len(shortest)
            assert [r.operation for r in t.records[:k]] == [r.operation for r in shortest[:k]]
            assert t.moves[:k] == ("proceed",) * k
            expr = t.answer.partition(" = ")[0]
            assert verify_expression(q.problem, expr) and t.answer.endswith(f"Answer: {letter}")
            assert t.source == "augmented" and t.solved and t.meta["teacher"] == "SearchTeacher"
    lengths = {n for n, _ in cuts}
    assert cuts == {(n, k) for n in lengths for k in range(n)}  # every cut point is used


def test_cut_at_out_of_range_is_refused():
    q = QUESTIONS[0]
    with pytest.raises(ValueError, match="cut_at"):
        augment(q, "A", TEACHER, random.Random(0), cut_at=len(solve(q.problem)))


def test_synthesize_is_deterministic_and_order_free():
    a = synthesize(QUESTIONS, LETTERS, TEACHER, 3, seed=7, progress=False)
    b = synthesize(QUESTIONS, LETTERS, TEACHER, 3, seed=7, progress=False)
    assert len(a) == 4 * len(QUESTIONS)
    assert a == b and [t.meta for t in a] == [t.meta for t in b]
    assert [t.source for t in a[:4]] == ["shortcut", "augmented", "augmented", "augmented"]
    c = synthesize(QUESTIONS, LETTERS, TEACHER, 3, seed=8, progress=False)
    assert a != c
    rev = synthesize(QUESTIONS[::-1], LETTERS[::-1], TEACHER, 3, seed=7, progress=False)
    by_question = lambda ts: sorted(ts, key=lambda t: t.question_id)  # noqa: E731 (stable sort)
    assert by_question(rev) == by_question(a)


def test_workers_do_not_change_the_output():
    one = synthesize(QUESTIONS, LETTERS, TEACHER, 2, seed=3, progress=False, workers=1)
    two = synthesize(QUESTIONS, LETTERS, TEACHER, 2, seed=3, progress=False, workers=2)
    assert one == two and [t.meta for t in one] == [t.meta for t in two]


def test_synthesize_checks_its_arguments():
    with pytest.raises(ValueError, match="letters"):
        synthesize(QUESTIONS, LETTERS[:-1], TEACHER, 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="workers=1"):
        synthesize(QUESTIONS, LETTERS, LLMTeacher("unused"), 1, seed=0, progress=False, workers=2)


def test_teacher_error_table_has_one_row_per_augmented_trajectory():
    ts = synthesize(QUESTIONS[:20], LETTERS[:20], TEACHER, 2, seed=0, progress=False)
    df = teacher_error_table(ts)
    augmented = [t for t in ts if t.source == "augmented"]
    assert len(df) == len(augmented) == 40
    for column in ("question_id", "cut_at", "explore_steps", "wrong_branch_steps", "arithmetic_slips",
                   "first_error_step", "solved_unaided", "backtracks", "backtrack_distance",
                   "answer_reached", "format_errors", "fallback_recovery", "n_steps"):
        assert column in df.columns
    assert df["wrong_branch_steps"].sum() == sum(t.meta["wrong_branch_steps"] for t in augmented)
    assert list(df["question_id"]) == [t.question_id for t in augmented]
    assert (df["format_errors"] == 0).all() and df["answer_reached"].all()


def test_save_and_load_round_trip(tmp_path):
    ts = synthesize(QUESTIONS[:15], LETTERS[:15], TEACHER, 2, seed=5, progress=False)
    path = save_trajectories(ts, tmp_path / "sub" / "trajectories.jsonl")
    assert sorted(p.name for p in path.parent.iterdir()) == ["trajectories.jsonl"]  # no temp file left
    lines = path.read_text().splitlines()
    assert len(lines) == len(ts)
    first = json.loads(lines[1])
    assert isinstance(first["records"][0]["parent"], list)
    assert all(m == "proceed" or set(m) == {"backtrack"} for m in first["moves"])
    back = load_trajectories(path)
    assert back == ts and [t.meta for t in back] == [t.meta for t in ts]
    assert any(t.n_backtracks for t in back)


def test_load_names_a_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthesis"):
        load_trajectories(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_trajectories(bad)

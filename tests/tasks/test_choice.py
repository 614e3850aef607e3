"""Four-choice questions: GPQA's CSV schema, simple-evals' shuffling, the Countdown benchmark splits."""

from __future__ import annotations

import csv
import random
from collections import Counter

import pytest

from steiner_lib.tasks.choice import (
    GPQA_COLUMNS, ChoiceQuestion, CountdownQuestion, check_disjoint, difficulty, format_prompt,
    is_diamond, is_evaluation_state, is_hard, make_countdown_question, make_splits, needs_no_search,
    parse_question_cap, parse_question_text, question_text, read_gpqa_csv, shuffle_choices, write_gpqa_csv,
)
from steiner_lib.tasks.countdown import Problem, generate_problem, greedy_solve, reachable_values, solve

SMALL = dict(n_train=60, n_validation=10, n_diamond=20, n_hard=5, n_control=10, n_numbers=4, max_number=25,
             min_steps=2, max_steps=3, diamond_max_backtracks=20, hard_min_backtracks=40)
CAPPED = dict(SMALL, max_result=60)


@pytest.fixture(scope="module")
def splits():
    return make_splits(0, **SMALL)


# --- question text ----------------------------------------------------------------------------


def test_question_text_and_its_inverse():
    text = question_text((50, 3, 25, 7))
    assert text == ("Using some of the numbers 3, 7, 25, 50 (each at most once) and + − × ÷, with "
                    "every intermediate result a positive whole number, exactly one of the following "
                    "values can be made. Which one?")
    assert parse_question_text(text) == (3, 7, 25, 50)
    assert parse_question_text("Use the numbers 3, 7, 25 and 50 to make 182.") == (3, 7, 25, 50)
    assert parse_question_text("Numbers: 9 2 2") == (2, 2, 9)
    assert parse_question_text("What is the capital of France?") is None
    assert parse_question_text("") is None


# --- distractors ------------------------------------------------------------------------------


def test_exactly_one_option_is_reachable_and_distractors_are_nearest():
    rng = random.Random(0)
    made, ranks = 0, []
    for i in range(400):
        problem = generate_problem(rng, 4, 25, 2, 3)
        q = make_countdown_question(problem, rng, f"q-{i}")
        if q is None:
            continue
        made += 1
        reachable = reachable_values(problem.numbers)
        assert [v in reachable for v in q.options] == [True, False, False, False]
        assert q.options[0] == problem.target and len(set(q.options)) == 4
        t = problem.target
        assert all(t / 2 <= d <= 2 * t and d > 0 for d in q.distractors)
        # Nearest on each side: below the target, no unreachable value between the lowest
        # chosen distractor and the target is skipped; likewise above.
        below = [d for d in q.distractors if d < t]
        above = [d for d in q.distractors if d > t]
        if below:
            assert {v for v in range(min(below), t) if v not in reachable} == set(below)
        if above:
            assert {v for v in range(t + 1, max(above) + 1) if v not in reachable} == set(above)
        ranks.append(sorted(q.options).index(t))
    assert made > 350
    # The correct value's rank among the options is near uniform: no position bias to exploit.
    shares = [ranks.count(k) / len(ranks) for k in range(4)]
    assert all(0.15 < share < 0.35 for share in shares), shares


def test_the_correct_rank_is_drawn_by_the_rng_reproducibly():
    problem = Problem((3, 7, 25, 50), 182)  # unreachable near 182: 180, 181, 183, 184
    below, above = [181, 180, 177], [183, 184, 185]
    picks = {make_countdown_question(problem, random.Random(s), "q").distractors for s in range(40)}
    assert picks <= {tuple(below[:k] + above[:3 - k]) for k in range(4)}
    assert len(picks) >= 2  # the rank varies with the rng
    a = make_countdown_question(problem, random.Random(1), "q")
    assert a == make_countdown_question(problem, random.Random(1), "q")


def test_no_question_without_three_close_unreachable_values():
    assert make_countdown_question(Problem((1, 1), 2), random.Random(0), "q") is None  # only 3, 4 left
    with pytest.raises(ValueError, match="cannot be made"):
        make_countdown_question(Problem((1, 1), 5), random.Random(0), "q")


def test_to_choice():
    q = CountdownQuestion(Problem((3, 7, 25, 50), 182), (181, 183, 184), "diamond-00007")
    c = q.to_choice()
    assert c == ChoiceQuestion(question_text((3, 7, 25, 50)), "182", ("181", "183", "184"), "diamond-00007")
    assert q.options == (182, 181, 183, 184)


# --- the GPQA CSV schema -------------------------------------------------------------------------


def test_csv_round_trip_is_exact_and_atomic(tmp_path, splits):
    questions = [q.to_choice() for q in splits["diamond"]]
    questions.append(ChoiceQuestion('Which, "exactly"?\nSecond line', " 07 ", ("NA", "None", "1,000"), "x"))
    path = tmp_path / "sub" / "diamond.csv"
    write_gpqa_csv(questions, path)
    back = read_gpqa_csv(path)
    assert back[:-1] == questions[:-1]
    assert back[-1] == ChoiceQuestion('Which, "exactly"?\nSecond line', "07", ("NA", "None", "1,000"), "x")
    assert sorted(p.name for p in path.parent.iterdir()) == ["diamond.csv"]  # no temp file left
    with open(path, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["Record ID", *GPQA_COLUMNS]


def test_a_csv_in_the_real_gpqa_schema_loads(tmp_path):
    # The real gpqa_diamond.csv has many more columns, in another order, and free text with
    # commas, quotes, newlines and stray whitespace.
    columns = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1",
               "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Record ID",
               "High-level domain", "Subdomain", "Writer's Difficulty Estimate"]
    rows = [
        ["old", 'A particle of mass "m", charge q\nmoves in a field. What is its period?',
         " 2πm/(qB) ", "πm/(qB)", "4πm/(qB)", "m/(qB)", "Cyclotron, \"classic\".", "recA1b2C3",
         "Physics", "Electromagnetism", "Hard graduate level"],
        ["", "Which compound is aromatic?", "Benzene", "Cyclohexane", "Cyclohexene", "Hexane",
         "", "recZ9", "Chemistry", "Organic Chemistry", ""],
    ]
    path = tmp_path / "gpqa_diamond.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    qs = read_gpqa_csv(path)
    assert qs == [
        ChoiceQuestion('A particle of mass "m", charge q\nmoves in a field. What is its period?',
                       "2πm/(qB)", ("πm/(qB)", "4πm/(qB)", "m/(qB)"), "recA1b2C3"),
        ChoiceQuestion("Which compound is aromatic?", "Benzene", ("Cyclohexane", "Cyclohexene", "Hexane"), "recZ9"),
    ]
    prompt, letter = format_prompt(qs[1], seed=0)
    assert prompt.startswith("Which compound is aromatic?\n\nA) ")
    assert f"{letter}) Benzene" in prompt


def test_record_id_falls_back_to_the_row_index(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"
                    "q0,a,b,c,d\nq1,e,f,g,h\n", encoding="utf-8")
    assert [q.record_id for q in read_gpqa_csv(path)] == ["0", "1"]


def test_a_csv_missing_columns_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Question,Correct Answer,Incorrect Answer 1\nq,a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv.*Incorrect Answer 2.*Incorrect Answer 3"):
        read_gpqa_csv(path)


# --- shuffled prompts, as in simple-evals ------------------------------------------------------


def test_shuffle_choices_is_a_seeded_per_question_permutation():
    qs = [ChoiceQuestion(f"Q{i}?", f"right{i}", (f"w{i}a", f"w{i}b", f"w{i}c"), f"rec{i}") for i in range(400)]
    letters = Counter()
    for q in qs:
        choices, letter = shuffle_choices(q, seed=0)
        assert sorted(choices) == sorted([q.correct, *q.incorrect])
        assert choices["ABCD".index(letter)] == q.correct
        assert shuffle_choices(q, seed=0) == (choices, letter)  # reproducible
        letters[letter] += 1
    assert set(letters) == set("ABCD") and min(letters.values()) > 60  # about 100 each
    # The permutation depends on the seed and on the question, not on the question's position.
    assert any(shuffle_choices(q, 0) != shuffle_choices(q, 1) for q in qs[:20])
    same_id_other_text = ChoiceQuestion("other", "right0", ("w0a", "w0b", "w0c"), "rec0")
    assert shuffle_choices(same_id_other_text, 0) == shuffle_choices(qs[0], 0)
    # simple-evals' own recipe: rng.sample(range(4), 4) indexes [correct, incorrect 1..3].
    perm = random.Random("0-rec3").sample(range(4), 4)
    texts = [qs[3].correct, *qs[3].incorrect]
    assert shuffle_choices(qs[3], 0)[0] == [texts[i] for i in perm]


def test_format_prompt():
    q = CountdownQuestion(Problem((3, 7, 25, 50), 182), (181, 183, 184), "diamond-00000")
    prompt, letter = format_prompt(q, seed=0)
    choices, same_letter = shuffle_choices(q.to_choice(), 0)
    assert letter == same_letter
    assert prompt == (question_text((3, 7, 25, 50)) + "\n\n"
                      + "\n".join(f"{L}) {c}" for L, c in zip("ABCD", choices)))
    assert "step by step" not in prompt.lower()  # no chain-of-thought instruction


# --- difficulty and splits -----------------------------------------------------------------------


def test_difficulty_rules():
    assert is_diamond({"greedy_solves": False, "search_backtracks": 5, "shortest_steps": 2}, 5)
    assert not is_diamond({"greedy_solves": False, "search_backtracks": 6, "shortest_steps": 2}, 5)
    assert not is_diamond({"greedy_solves": True, "search_backtracks": 9, "shortest_steps": 2}, 20)
    assert is_diamond({"greedy_solves": False, "search_backtracks": 20, "shortest_steps": 2}, 20)
    assert not is_diamond({"greedy_solves": False, "search_backtracks": 21, "shortest_steps": 2}, 20)
    assert is_hard({"greedy_solves": False, "search_backtracks": 100, "shortest_steps": 2}, 100)
    assert not is_hard({"greedy_solves": True, "search_backtracks": 100, "shortest_steps": 2}, 100)
    assert needs_no_search({"greedy_solves": True, "search_backtracks": 0, "shortest_steps": 3})
    assert not needs_no_search({"greedy_solves": True, "search_backtracks": 1, "shortest_steps": 3})
    d = difficulty(Problem((1, 2, 2), 6))
    assert d == {"greedy_solves": False, "search_backtracks": 4, "shortest_steps": 2}
    assert difficulty(Problem((2, 3, 4), 14)) == {"greedy_solves": True, "search_backtracks": 0,
                                                 "shortest_steps": 2}


def test_splits_sizes_ids_and_rules(splits):
    for name, qs in splits.items():
        assert len(qs) == SMALL[f"n_{name}"]
        assert [q.question_id for q in qs] == [f"{name}-{i:05d}" for i in range(len(qs))]
        for q in qs:
            reachable = reachable_values(q.problem.numbers)
            assert [v in reachable for v in q.options] == [True, False, False, False]
            assert 2 <= difficulty(q.problem)["shortest_steps"] <= 3
    for q in splits["diamond"] + splits["validation"]:
        assert is_diamond(difficulty(q.problem), SMALL["diamond_max_backtracks"])
        assert greedy_solve(q.problem) is None
    for q in splits["hard"]:
        assert is_hard(difficulty(q.problem), SMALL["hard_min_backtracks"])
        assert greedy_solve(q.problem) is None
    for q in splits["control"]:
        assert needs_no_search(difficulty(q.problem))
    assert len({q.problem for q in splits["train"]}) == len(splits["train"])


def test_splits_are_disjoint_by_start_state(splits):
    check_disjoint(splits)
    states = {name: [q.problem.numbers for q in qs] for name, qs in splits.items()}
    for name in ("validation", "diamond", "hard", "control"):
        assert len(set(states[name])) == len(states[name])  # one question per evaluation state
        assert all(is_evaluation_state(s) for s in states[name])
        for other in states:
            if other != name:
                assert not set(states[name]) & set(states[other]), (name, other)
    assert not any(is_evaluation_state(s) for s in states["train"])
    # The side of a state does not depend on the seed: another seed's train never meets these.
    other_train = {q.problem.numbers for q in make_splits(1, **SMALL)["train"]}
    assert not other_train & set(states["diamond"] + states["validation"] + states["control"])


def test_check_disjoint_names_the_overlap(splits):
    numbers = splits["diamond"][3].problem.numbers
    leaked = dict(splits)  # a training question on a diamond question's numbers, another target
    leaked["train"] = splits["train"] + [CountdownQuestion(Problem(numbers, 999), (1, 2, 3), "train-leak")]
    with pytest.raises(ValueError, match=rf"train and diamond share 1 start state.*{numbers[0]}, {numbers[1]}"):
        check_disjoint(leaked)


def test_splits_are_deterministic(splits):
    assert make_splits(0, **SMALL) == splits
    assert make_splits(2, **SMALL) != splits


def test_splits_that_cannot_be_filled_say_which_knob():
    knobs = dict(SMALL, n_numbers=3, max_number=6, min_steps=1, max_steps=2, n_train=5,
                 n_validation=0, n_control=0, n_diamond=500)
    with pytest.raises(ValueError, match=r"diamond: \d+ of 500 \(raise diamond_max_backtracks or lower n_diamond"):
        make_splits(0, **knobs)
    with pytest.raises(ValueError, match="diamond_max_backtracks=40 must be below hard_min_backtracks=40"):
        make_splits(0, **dict(SMALL, diamond_max_backtracks=40))
    with pytest.raises(ValueError, match="max_result=20 must be above max_number=25"):
        make_splits(0, **dict(SMALL, max_result=20))
    with pytest.raises(ValueError, match="lower max_steps or raise n_numbers"):
        make_splits(0, **dict(SMALL, n_numbers=3, max_steps=3))


# --- a cap on results ---------------------------------------------------------------------------


def test_capped_splits_state_the_cap_and_keep_every_value_under_it():
    splits = make_splits(0, **CAPPED)
    for name, qs in splits.items():
        for q in qs:
            p = q.problem
            assert p.max_result == 60
            text = q.to_choice().question
            assert "of at most 60" in text and parse_question_cap(text) == 60
            assert parse_question_text(text) == p.numbers
            assert all(v <= 60 for v in q.options)  # a distractor above the cap would be ruled out by the text
            reachable = reachable_values(p.numbers, 60)
            assert [v in reachable for v in q.options] == [True, False, False, False]
            for op in solve(p):
                assert op.result <= 60
    assert parse_question_cap(question_text((3, 7, 25))) is None  # an uncapped question states no cap

"""The Countdown domain against an outside reference: a brute-force enumerator written here.

The brute force shares no code with the library: it re-states the rules (any ordered pair,
+ - * /, keep a result only if it is a positive integer), enumerates every operation
sequence with no memoisation and no pruning, and records the fewest operations after which
each value appears. The library's memoised solver must agree with it exactly.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steiner_lib.format import Step
from steiner_lib.tasks.countdown import (
    Operation, Problem, apply, canonical, combine, distance_to_value, draw_target, expression,
    generate_problem, greedy_solve, legal_operations, make_operation, reachable_values,
    reference_search, solve, successors, verify_expression,
)
from steiner_lib.tasks.text import answer_text, claimed_state, read_step_operation, step_texts


# --- the outside reference -------------------------------------------------------------------


def brute_force_depths(numbers, cap: int | None = None) -> dict[int, int]:
    """value -> fewest operations after which it is among the numbers, by full enumeration
    (every result at most `cap` when one is given)."""
    best: dict[int, int] = {}

    def walk(nums: list[int], depth: int) -> None:
        for v in nums:
            if depth < best.get(v, 99):
                best[v] = depth
        for i in range(len(nums)):
            for j in range(len(nums)):
                if i == j:
                    continue
                x, y = nums[i], nums[j]
                rest = [nums[k] for k in range(len(nums)) if k != i and k != j]
                results = [x + y, x - y, x * y]
                if x % y == 0:
                    results.append(x // y)
                for r in results:
                    if r > 0 and (cap is None or r <= cap):
                        walk(rest + [r], depth + 1)

    walk(list(numbers), 0)
    return best


def random_small_numbers(rng: random.Random, n: int, max_number: int = 12) -> tuple[int, ...]:
    return tuple(rng.randint(1, max_number) for _ in range(n))


def replay(numbers, operations) -> tuple[int, ...]:
    """Apply operations one by one (apply raises on an illegal one); the final state."""
    state = canonical(numbers)
    for o in operations:
        state = apply(state, o)
    return state


def small_problems(n_three: int = 200, n_four: int = 100, seed: int = 0):
    rng = random.Random(seed)
    for n, count in ((3, n_three), (4, n_four)):
        for _ in range(count):
            yield random_small_numbers(rng, n), rng


# --- search: against brute force -------------------------------------------------------------


def test_successors_are_legal_operations_with_their_states():
    rng = random.Random(1)
    for _ in range(300):
        state = canonical(random_small_numbers(rng, rng.randint(1, 5), 30))
        expected = tuple((o, apply(state, o)) for o in legal_operations(state))
        assert successors(state) == expected


def test_reachable_values_and_distances_match_brute_force():
    for numbers, rng in small_problems():
        best = brute_force_depths(numbers)
        assert reachable_values(numbers) == frozenset(best), numbers
        state = canonical(numbers)
        for value, depth in best.items():
            assert distance_to_value(state, value) == depth, (numbers, value)
        for value in range(1, max(best) + 2):
            if value not in best:
                assert distance_to_value(state, value) is None, (numbers, value)
        # Distances from a state part-way down, too (a random reachable child).
        if len(state) > 2:
            _, child = rng.choice(successors(state))
            child_best = brute_force_depths(child)
            for value in rng.sample(sorted(child_best), min(10, len(child_best))):
                assert distance_to_value(child, value) == child_best[value]


def test_a_cap_on_results_matches_brute_force():
    for numbers, rng in small_problems(n_three=100, n_four=60, seed=7):
        cap = rng.choice((15, 30, 60))
        best = brute_force_depths(numbers, cap)
        assert reachable_values(numbers, cap) == frozenset(best), (numbers, cap)
        state = canonical(numbers)
        for value, depth in best.items():
            assert distance_to_value(state, value, cap) == depth, (numbers, value, cap)
        assert all(op.result <= cap for op, _ in successors(state, cap))
        assert [op for op, _ in successors(state, cap)] == legal_operations(state, cap)
        target = rng.choice(sorted(best))
        problem = Problem(numbers, target, cap)
        ops = solve(problem)
        assert ops is not None and len(ops) == best[target] and all(o.result <= cap for o in ops)
        search = reference_search(problem)
        assert search.solved and all(o.result <= cap for o in search.operations)
        if ops:
            assert verify_expression(problem, expression(ops))
    over = make_operation(12, "*", 10)  # 120 > 100
    assert combine(12, "*", 10, 100) is None and make_operation(12, "*", 10, 100) is None
    with pytest.raises(ValueError, match="results at most 100"):
        apply((10, 12), over, 100)
    assert not verify_expression(Problem((10, 12, 20), 100, 100), "12 × 10 − 20")  # 120 on the way
    assert verify_expression(Problem((10, 12, 20), 100), "12 × 10 − 20")  # fine without the cap
    with pytest.raises(ValueError, match="max_result=10 must be above max_number=25"):
        generate_problem(random.Random(0), 4, 25, 2, 3, max_result=10)
    p = generate_problem(random.Random(0), 4, 25, 2, 3, max_result=100)
    assert p.max_result == 100 and 2 <= distance_to_value(p.numbers, p.target, 100) <= 3


def test_solve_and_searches_match_brute_force():
    for numbers, rng in small_problems(seed=2):
        best = brute_force_depths(numbers)
        target = rng.choice(sorted(best))
        problem = Problem(numbers, target)
        ops = solve(problem)
        assert ops is not None and len(ops) == best[target], (numbers, target)
        assert target in replay(numbers, ops)
        search = reference_search(problem)
        assert search.solved and target in replay(numbers, search.operations)
        greedy = greedy_solve(problem)
        if greedy is not None:
            assert target in replay(numbers, greedy)
            assert search.operations == greedy  # the search's first path is the greedy path
        # Greedy needs no search, and a search without backtracks is the greedy path.
        assert (greedy is not None) == (search.backtracks == 0)

        unreachable = next(v for v in range(1, 10**6) if v not in best)
        hopeless = Problem(numbers, unreachable)
        assert solve(hopeless) is None and greedy_solve(hopeless) is None
        stats = reference_search(hopeless)
        assert not stats.solved and stats.operations == []


def test_solve_breaks_ties_by_legal_order():
    rng = random.Random(3)
    for _ in range(200):
        problem = generate_problem(rng, 4, 25, 2, 3)
        ops = solve(problem)
        assert ops == solve(problem)
        state, d = problem.numbers, len(ops)
        for o in ops:  # each step is the FIRST legal operation that gets one closer
            first = next(op for op, child in successors(state)
                         if distance_to_value(child, problem.target) == d - 1)
            assert o == first
            state, d = apply(state, o), d - 1


def test_greedy_and_reference_search_by_hand():
    # (2, 3, 4) -> 14: 4 × 3 = 12 is closest to 14, then 12 + 2 = 14.
    assert greedy_solve(Problem((2, 3, 4), 14)) == [make_operation(4, "*", 3), make_operation(12, "+", 2)]
    # (1, 2, 2) -> 6: greedy takes 2 + 2 = 4 (2 away), and (1, 4) cannot make 6.
    problem = Problem((1, 2, 2), 6)
    assert greedy_solve(problem) is None
    stats = reference_search(problem)
    # The search tries (1, 4): its leaves (5), (4), (3) fail (3 backtracks) and so does (1, 4)
    # itself (1 more); 2 × 2 = 4 reaches the visited (1, 4) again and is skipped; 2 + 1 = 3 then
    # 3 × 2 = 6 solves. Expanded: root, (1, 4), three leaves, (2, 3).
    assert stats.solved and stats.backtracks == 4 and stats.expansions == 6
    assert stats.operations == [make_operation(2, "+", 1), make_operation(3, "*", 2)]


def test_reference_search_stops_at_its_budget():
    problem = Problem((1, 2, 2), 6)
    stats = reference_search(problem, max_expansions=2)
    assert not stats.solved and stats.operations == [] and stats.expansions == 2
    assert reference_search(Problem((3, 5), 5)).expansions == 0  # already solved


# --- expressions and the verifier ------------------------------------------------------------


@pytest.mark.parametrize("numbers, ops, text", [
    ((3, 7, 25, 50), [(50, "*", 3), (150, "+", 25), (175, "+", 7)], "(50 × 3) + 25 + 7"),
    ((3, 7, 50), [(7, "+", 3), (50, "-", 10)], "50 - (7 + 3)"),
    ((3, 7, 50), [(7, "+", 3), (50, "/", 10)], "50 ÷ (7 + 3)"),
    ((2, 3, 4), [(4, "*", 3), (12, "*", 2)], "4 × 3 × 2"),
    ((2, 3, 4, 5), [(4, "+", 3), (5, "+", 2), (7, "*", 7)], "(4 + 3) × (5 + 2)"),
    ((2, 4, 6), [(4, "+", 2), (6, "+", 6)], "4 + 2 + 6"),  # a made 6 and a start 6
    ((2, 12, 20), [(12, "/", 2), (20, "-", 6)], "20 - (12 ÷ 2)"),
])
def test_expression_examples(numbers, ops, text):
    operations = [make_operation(*o) for o in ops]
    assert expression(operations) == text
    assert verify_expression(Problem(numbers, operations[-1].result), text)
    assert not verify_expression(Problem(numbers, operations[-1].result + 1), text)


def test_expression_of_every_solution_verifies():
    rng = random.Random(4)
    for _ in range(300):
        problem = generate_problem(rng, 4, 25, 1, 3)
        for ops in (solve(problem), reference_search(problem).operations, greedy_solve(problem)):
            if ops:
                assert verify_expression(problem, expression(ops)), (problem, ops)
    with pytest.raises(ValueError, match="at least one operation"):
        expression([])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=5), st.randoms(use_true_random=False))
def test_expression_of_any_operation_sequence_verifies(numbers, rnd):
    """A random walk of legal operations: its expression reaches its last result."""
    state, ops = canonical(numbers), []
    for _ in range(rnd.randint(1, len(state) - 1)):
        o = rnd.choice(legal_operations(state))
        ops.append(o)
        state = apply(state, o)
    assert verify_expression(Problem(numbers, ops[-1].result), expression(ops))


@pytest.mark.parametrize("expr, ok", [
    ("(50 × 3) + 25 + 7", True),
    ("(50 * 3) + 25 + 7", True),
    ("7 + 25 + 3 * 50", True),
    ("  ((50×3)+(25+7))  ", True),
    ("50 × 3 + 32", False),  # 32 is not a start number
    ("50 × 3 + 25 + 7 + 3 - 3", False),  # 3 used twice
    ("7 ÷ 2 × 52", False),  # 7 ÷ 2 is not whole
    ("-3 + 185", False),  # unary minus
    ("3 ** 2", False),
    ("3.0 + 179", False),
    ("50 × 3 + 25 + 7 = 182", False),
    ("__import__('os').system('true')", False),
    ("", False),
    ("(", False),
    ("((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((", False),
    ("1" * 20000, False),
    (None, False),
])
def test_verify_expression_cases(expr, ok):
    assert verify_expression(Problem((3, 7, 25, 50), 182), expr) is ok


def test_verify_expression_intermediate_results():
    assert verify_expression(Problem((3, 7, 50), 46), "50 + 3 − 7")
    assert not verify_expression(Problem((3, 7, 50), 46), "3 − 7 + 50")  # 3 - 7 is negative
    assert verify_expression(Problem((3, 3, 7), 7), "7")  # no operation at all: legal, if trivial
    assert not verify_expression(Problem((3, 3, 7), 7), "(3 - 3) + 7")  # a zero result
    assert verify_expression(Problem((2, 2, 9), 9), "9 × 2 ÷ 2")
    assert not verify_expression(Problem((2, 2, 9), 18), "9 × 2 ÷ 2 × 2")  # three 2s
    assert verify_expression(Problem((4, 6, 8), 3), "(8 + 4) / (6 - 2)") is False  # 2 not available
    assert verify_expression(Problem((4, 6, 8), 12), "8 / 4 * 6")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789 +-*/×÷()−.xe_=")) | st.characters(), max_size=40))
def test_verify_expression_never_raises(text):
    assert verify_expression(Problem((3, 7, 25, 50), 182), text) in (True, False)


# --- generation -------------------------------------------------------------------------------


def test_generate_problem_properties_and_determinism():
    a = [generate_problem(random.Random(5), 4, 25, 2, 3) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(6)
    for _ in range(300):
        p = generate_problem(rng, 4, 25, 2, 3)
        assert len(p.numbers) == 4 and all(1 <= n <= 25 for n in p.numbers)
        assert p.target not in p.numbers
        assert 2 <= distance_to_value(p.numbers, p.target) <= 3


def test_targets_are_uniform_over_the_allowed_values():
    numbers = (1, 2, 3, 5)
    best = brute_force_depths(numbers)
    allowed = {v for v, d in best.items() if 2 <= d <= 3}
    rng = random.Random(7)
    counts = Counter(draw_target(rng, numbers, 2, 3) for _ in range(200 * len(allowed)))
    assert set(counts) == allowed
    assert min(counts.values()) > 120 and max(counts.values()) < 280  # 200 expected each


@pytest.mark.parametrize("knobs, message", [
    ((1, 25, 1, 1), "at least 2 numbers"),
    ((4, 0, 1, 2), "max_number"),
    ((4, 25, 3, 2), "min_steps <= max_steps"),
    ((4, 25, 0, 2), "min_steps"),
    ((3, 25, 1, 3), "lower max_steps or raise n_numbers"),
])
def test_generate_problem_rejects_impossible_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        generate_problem(random.Random(0), *knobs)


def test_generate_problem_gives_up_with_advice():
    with pytest.raises(ValueError, match="raise max_number or n_numbers"):
        generate_problem(random.Random(0), 4, 25, 2, 3, max_attempts=0)


# --- step texts (text.py) ----------------------------------------------------------------------


def test_step_texts_example():
    op = make_operation(50, "*", 3)
    step = step_texts((3, 7, 25, 50), op, 150, (182, 181, 183, 184))
    assert step == Step(
        name="50 × 3",
        thought="Combine 50 and 3: 50 × 3 = 150. That leaves 7, 25, 150.",
        summary="Numbers left: 7, 25, 150.",
        reflection="Nearest option is 181, 31 away.",
    )
    hit = step_texts((7, 25, 150), make_operation(150, "+", 25), 175, (175, 170, 180, 185))
    assert hit.reflection == "175 is one of the options."
    assert hit.thought == "Combine 150 and 25: 150 + 25 = 175. That leaves 7, 175."
    assert hit.summary == "Numbers left: 7, 175."


def test_a_hallucinated_step_states_the_wrong_number_as_right():
    op = make_operation(25, "-", 7)  # 18
    step = step_texts((3, 7, 25), op, 19, (57, 58, 59, 60))
    assert "25 - 7 = 19" in step.thought and step.summary == "Numbers left: 3, 19."
    assert step.reflection == "Nearest option is 57, 38 away."
    read = read_step_operation(step, (3, 7, 25))
    assert read == Operation(25, "-", 7, 19) and combine(read.a, read.op, read.b) != read.result
    assert claimed_state((3, 7, 25), read) == (3, 19)
    # An option claimed by mistake is "one of the options", as a hallucination would say.
    assert step_texts((3, 7, 25), op, 57, (57, 58, 59, 60)).reflection == "57 is one of the options."


def test_step_texts_round_trip_on_every_legal_operation():
    rng = random.Random(8)
    for _ in range(150):
        parent = canonical(random_small_numbers(rng, rng.randint(2, 5), 50))
        options = tuple(rng.sample(range(1, 200), 4))
        for o in legal_operations(parent):
            step = step_texts(parent, o, o.result, options)
            assert read_step_operation(step, parent) == o
            assert claimed_state(parent, o) == apply(parent, o)
            assert step.summary == "Numbers left: " + ", ".join(map(str, apply(parent, o))) + "."
            assert step_texts(parent, o, o.result, options) == step  # no hidden randomness


@pytest.mark.parametrize("thought, expected", [
    ("I think 25*4 = 100 now.", Operation(25, "*", 4, 100)),
    ("25 x 4=100", Operation(25, "*", 4, 100)),
    ("4 × 25 = 100", Operation(25, "*", 4, 100)),  # commutative: written either way
    ("Try 25 − 4 = 21.", Operation(25, "-", 4, 21)),
    ("25 ÷ 5 = 5", Operation(25, "/", 5, 5)),
    ("99 + 1 = 100, no: 25 + 5 = 30", Operation(25, "+", 5, 30)),  # 99 is not available
    ("4 - 25 = 21", None),  # not a legal way to write a subtraction
    ("no arithmetic here", None),
    ("", None),
])
def test_read_step_operation_is_forgiving(thought, expected):
    step = Step(name="", thought=thought, summary="", reflection="")
    assert read_step_operation(step, (4, 5, 25)) == expected


def test_read_step_operation_from_a_name_alone():
    step = Step(name="25 × 4", thought="(lost)", summary="", reflection="")
    assert read_step_operation(step, (4, 5, 25)) == Operation(25, "*", 4, 100)
    assert read_step_operation(Step("25 × 25", "", "", ""), (4, 5, 25)) is None  # only one 25


def test_step_texts_rejects_bad_input():
    with pytest.raises(ValueError, match="not in the state"):
        step_texts((3, 7), make_operation(50, "*", 3), 150, (1, 2, 3, 4))
    with pytest.raises(ValueError, match="options"):
        step_texts((3, 50), make_operation(50, "*", 3), 150, ())


def test_answer_text():
    ops = [make_operation(50, "*", 3), make_operation(150, "+", 25), make_operation(175, "+", 7)]
    text = answer_text(ops, 182, "C")
    assert text == "(50 × 3) + 25 + 7 = 182\n\nAnswer: C"
    scan = answer_text(ops, 182, "C", ["180", "185", "182", "179"])
    assert scan == "(50 × 3) + 25 + 7 = 182\n\nA) 180 no\nB) 185 no\nC) 182 yes\n\nAnswer: C"
    assert answer_text(ops, 182, "A", ["182", "185", "180", "179"]).endswith("\n\nA) 182 yes\n\nAnswer: A")
    with pytest.raises(ValueError, match="4 choices"):
        answer_text(ops, 182, "C", ["180", "182"])
    assert verify_expression(Problem((3, 7, 25, 50), 182), text.split(" = ")[0])

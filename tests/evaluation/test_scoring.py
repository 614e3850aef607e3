"""Scoring outputs: the answer rule, score_output on crafted completions, bootstrap CIs, the held-out report."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pandas as pd
import pytest
from helpers import ONE_LAYER, tiny_qwen2

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.evaluation import scoring as ev  # noqa: E402
from steiner_lib.tasks import choice, text  # noqa: E402
from steiner_lib.tasks.countdown import Problem, make_operation  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402

# 82 = 25 × 3 + 7, from 3, 5, 7, 25.
QUESTION = choice.make_countdown_question(Problem((3, 5, 7, 25), 82), random.Random(0), "q-test")
USER, LETTER = choice.format_prompt(QUESTION, seed=0)
WRONG = next(x for x in "ABCD" if x != LETTER)


def step(parent, a, op, b, claimed=None):
    """A template step from `parent` and the state its text claims to reach."""
    o = make_operation(a, op, b)
    r = o.result if claimed is None else claimed
    return text.step_texts(parent, o, r, QUESTION.options), text.claimed_state(parent, o, r)


def completion(steps, moves, answer):
    return fmt.render(fmt.Trace(tuple(steps), tuple(moves), answer))


def valid_completion(letter=LETTER):
    s1, st = step(QUESTION.problem.numbers, 25, "*", 3)
    s2, _ = step(st, 75, "+", 7)
    answer = text.answer_text([make_operation(25, "*", 3), make_operation(75, "+", 7)], 82, letter)
    return completion([s1, s2], ["proceed"], answer)


# --------------------------------------------------------------------------- answer rule


@pytest.mark.parametrize("answer, letter", [
    ("25 × 3 + 7 = 82\n\nAnswer: B", "B"),
    ("Answer:D.", "D"),
    ("answer : (C)", "C"),
    ("**Answer: A**", "A"),
    ("Answer: A\nOn reflection... Answer: C", "C"),  # the last match wins
    ("Answer: Because 82 is reachable", None),  # a word, not a letter
    ("Answer: E", None),
    ("The answer is B", None),  # no "Answer:" marker
    ("", None),
])
def test_extract_answer_letter(answer, letter):
    assert ev.extract_answer_letter(answer) == letter


def test_extract_answer_letter_reads_only_after_reasoning_end():
    reasoning_says = "<|reasoning_start|>Answer: A<|reasoning_end|>"
    assert ev.extract_answer_letter(reasoning_says + "\nAnswer: C") == "C"
    assert ev.extract_answer_letter(reasoning_says + "\nno letter here") is None
    with pytest.raises(TypeError):
        ev.extract_answer_letter(None)


# --------------------------------------------------------------------------- score_output


def test_valid_completion_scores_right():
    s = ev.score_output(valid_completion(), LETTER, QUESTION)
    assert s["format_ok"] and s["n_errors"] == 0 and s["error_kinds"] == {}
    assert (s["n_steps"], s["n_backtracks"]) == (2, 0)
    assert s["letter"] == LETTER and s["correct"] is True
    assert s["steps_valid"] == 1.0 and s["n_valid_steps"] == 2 and s["reached_target"] is True
    assert s["reasoning_tokens"] is None  # no tokenizer given


def test_letter_holds_value_reads_the_option_the_answer_writes():
    shown, letter = choice.shuffle_choices(QUESTION, seed=0)
    assert ev.answer_value("25 × 3 + 7 = 82\n\nAnswer: B") == 82 and ev.answer_value("Answer: B") is None
    # the value goes with the letter that is read: the last "Answer: X", in any of ANSWER_RE's spellings
    assert ev.answer_value("= 5\nAnswer: A\nOn reflection = 82\nanswer : (C)") == 82
    assert ev.score_output(valid_completion(), LETTER, QUESTION, choices=shown)["letter_holds_value"] is True
    # the right value with another letter: the lookup failed (and the output is wrong)
    s = ev.score_output(valid_completion(WRONG), LETTER, QUESTION, choices=shown)
    assert s["letter_holds_value"] is False and s["correct"] is False
    # a distractor's value with that distractor's letter: the lookup worked (the search did not)
    d = QUESTION.distractors[0]
    answer = f"25 × 3 = {d}\n\nAnswer: {choice.LETTERS[shown.index(str(d))]}"
    assert ev.score_output(completion([], [], answer), LETTER, QUESTION, choices=shown)["letter_holds_value"] is True
    # a value that is no option, no letter, or no choices given: not counted
    assert ev.letter_holds_value("A", 999, shown) is None and ev.letter_holds_value(None, 82, shown) is None
    assert "letter_holds_value" not in ev.score_output(valid_completion(), LETTER, QUESTION)


def test_wrong_letter_and_no_question():
    s = ev.score_output(valid_completion(WRONG), LETTER)
    assert s["format_ok"] and s["letter"] == WRONG and s["correct"] is False
    assert "steps_valid" not in s  # arithmetic is only checked against a question


def test_no_letter_is_wrong():
    s = ev.score_output(valid_completion().replace(f"Answer: {LETTER}", "I am not sure."), LETTER, QUESTION)
    assert s["format_ok"] and s["letter"] is None and s["correct"] is False


def test_malformed_outputs_are_scored_wrong():
    truncated = valid_completion()[:150]  # cut inside the first step: no reasoning_end, no answer
    s = ev.score_output(truncated, LETTER, QUESTION)
    assert not s["format_ok"]
    assert {"missing_reasoning_end", "unterminated_step", "empty_reasoning"} <= set(s["error_kinds"])
    assert s["letter"] is None and s["correct"] is False and s["steps_valid"] is None
    # An "Answer: X" inside unfinished reasoning is not an answer.
    s = ev.score_output(f"{fmt.REASONING_START}\nAnswer: {LETTER}", LETTER, QUESTION)
    assert s["letter"] is None and s["correct"] is False


def test_broken_step_counts_as_a_format_error():
    text_ = valid_completion().replace(fmt.STEP_END, "", 1)  # the first step never ends
    s = ev.score_output(text_, LETTER, QUESTION)
    assert not s["format_ok"] and s["n_errors"] >= 1
    assert s["n_steps"] == 1  # the broken step is dropped, the second one kept
    assert s["correct"] is True  # the letter is still read: format and answer are scored apart


def test_hallucinated_step():
    s1, st = step(QUESTION.problem.numbers, 25, "*", 3, claimed=76)  # 25 × 3 = 76: a slip
    s2, st = step(st, 76, "+", 7)  # right arithmetic from the claimed (false) state
    s = ev.score_output(completion([s1, s2], ["proceed"], f"83\n\nAnswer: {LETTER}"), LETTER, QUESTION)
    assert s["format_ok"]
    assert s["n_hallucinated_steps"] == 1 and s["n_valid_steps"] == 1 and s["steps_valid"] == 0.5
    assert s["reached_target"] is False


def test_backtracks_replay_to_the_named_state():
    start = QUESTION.problem.numbers
    a, _ = step(start, 25, "+", 7)  # 32: a dead end
    b, st_b = step(start, 25, "*", 3)  # back at the question
    c, _ = step(st_b, 75, "+", 5)  # 80: not it
    d, _ = step(st_b, 75, "+", 7)  # back to the state after b: 82
    moves = [fmt.Backtrack(fmt.QUESTION), "proceed", fmt.Backtrack(b.name)]
    s = ev.score_output(completion([a, b, c, d], moves, f"82\n\nAnswer: {LETTER}"), LETTER, QUESTION)
    assert s["format_ok"] and s["n_backtracks"] == 2
    assert s["steps_valid"] == 1.0 and s["reached_target"] is True
    # Without the backtrack to b, step d would use numbers (75, 7) the state after c does not hold.
    s = ev.score_output(completion([a, b, c, d], [fmt.Backtrack(fmt.QUESTION), "proceed", "proceed"],
                                   f"82\n\nAnswer: {LETTER}"), LETTER, QUESTION)
    assert s["n_valid_steps"] == 3 and s["n_not_held_steps"] == 1 and s["reached_target"] is False


def test_backtracks_replay_to_the_latest_step_with_the_cited_label():
    start = QUESTION.problem.numbers
    label = lambda depth, s: fmt.Step(fmt.labelled_name(depth, s.name), s.thought, s.summary, s.reflection)
    a, st_a = step(start, 25, "*", 3)  # 75, depth 1
    b, _ = step(st_a, 75, "+", 5)  # 80: not it, depth 2
    c, _ = step(st_a, 75, "+", 7)  # back to Step 1: 82, depth 2 again
    steps = [label(1, a), label(2, b), label(2, c)]
    s = ev.score_output(completion(steps, ["proceed", fmt.Backtrack("Step 1")], f"82\n\nAnswer: {LETTER}"),
                        LETTER, QUESTION)
    assert s["format_ok"] and s["steps_valid"] == 1.0 and s["reached_target"] is True
    statuses, states = ev.replay_states(fmt.parse(completion(steps, ["proceed", fmt.Backtrack("Step 1")], "")).trace,
                                        start)
    assert statuses == ["valid"] * 3 and states[0] == st_a and 82 in states[2]
    assert ev.replay_steps(fmt.Trace((), (), ""), start) == ([], tuple(sorted(start)))


def test_backtrack_citations_and_the_format_paragraph():
    start = QUESTION.problem.numbers
    a, st_a = step(start, 25, "*", 3)
    b, _ = step(st_a, 75, "+", 5)
    c, _ = step(st_a, 75, "+", 7)
    a = fmt.Step(fmt.labelled_name(1, a.name), a.thought, a.summary, a.reflection)
    answer = f"82\n\nAnswer: {LETTER}"
    outputs = [completion([a, b, c], [fmt.Backtrack("Step 1"), fmt.Backtrack(fmt.QUESTION)], answer),
               completion([a, b, c], [fmt.Backtrack(a.name), fmt.Backtrack(b.name)], answer),
               completion([a, b], [fmt.Backtrack("Step 2")], answer),
               completion([a, b], ["proceed"], answer)[:-40]]  # cut before reasoning_end
    assert ev.backtrack_citations(outputs) == {"question": 1, "label": 1, "name": 2, "unknown": 1}
    scores = ev.score_outputs([outputs], [LETTER], [QUESTION])
    report = ev.HeldoutReport(scores, ev.summarize(scores, n_boot=100))
    text_ = ev.format_paragraph(report, max_new_tokens=1024)
    assert text_.startswith("50.0% of 4 sampled outputs (1 questions) parse with no format error")
    assert "unknown_backtrack_target 1" in text_ and "missing_reasoning_end 1" in text_
    assert "1 output(s) never write <|reasoning_end|>, 0 of them cut off" in text_
    assert "5 in all, 1 to the question, 1 citing a step label, 2 a whole step name, 1 to an unknown target" in text_
    assert "short of the 95% target" in ev.format_paragraph(ev.HeldoutReport(
        scores, pd.DataFrame({"value": [0.5], "ci_low": [0.4], "ci_high": [0.6]}, index=["format valid share"])), 1024)


def test_backtrack_to_an_unknown_step_loses_the_state():
    s1, st = step(QUESTION.problem.numbers, 25, "*", 3)
    s2, _ = step(st, 75, "+", 7)
    s = ev.score_output(completion([s1, s2], [fmt.Backtrack("no such step")], f"82\n\nAnswer: {LETTER}"),
                        LETTER, QUESTION)
    assert "unknown_backtrack_target" in s["error_kinds"]
    assert s["n_valid_steps"] == 1 and s["n_lost_steps"] == 1 and s["n_unreadable_steps"] == 0
    assert s["steps_valid"] == 0.5


def test_unreadable_step():
    s1, st = step(QUESTION.problem.numbers, 25, "*", 3)
    vague = fmt.Step("think", "Maybe something works.", "Not sure.", "Keep going.")
    s = ev.score_output(completion([vague, s1], ["proceed"], f"Answer: {LETTER}"), LETTER, QUESTION)
    # After an unreadable step the state is unknown, so the next step cannot be checked either.
    assert s["n_unreadable_steps"] == 1 and s["n_lost_steps"] == 1 and s["steps_valid"] == 0.0
    table = ev.step_status_table(ev.score_outputs([[completion([vague, s1], ["proceed"], f"Answer: {LETTER}")]],
                                                  [LETTER], [QUESTION]))
    assert table["steps"].to_dict() == {"valid": 0, "wrong result": 0, "numbers not held": 0, "unreadable": 1,
                                        "lost": 1}
    assert table["share"].sum() == 1.0


def test_step_on_numbers_not_held_is_told_from_one_without_an_operation():
    held = max(QUESTION.problem.numbers)
    stranger = held + 1000  # a number the question does not hold
    invented = fmt.Step(f"{stranger} + {held}", f"Combine {stranger} and {held}: {stranger} + {held} = "
                        f"{stranger + held}.", "Numbers left: 1.", "Keep going.")
    s1, _ = step(QUESTION.problem.numbers, 25, "*", 3)
    s = ev.score_output(completion([invented, s1], ["proceed"], f"Answer: {LETTER}"), LETTER, QUESTION)
    assert s["n_not_held_steps"] == 1 and s["n_unreadable_steps"] == 0 and s["n_lost_steps"] == 1
    assert s["steps_valid"] == 0.0
    # An illegal order on numbers that are held ("3 - 25") writes an operation too, but no legal one.
    small, big = sorted(QUESTION.problem.numbers)[:2][0], max(QUESTION.problem.numbers)
    reversed_ = fmt.Step(f"{small} - {big}", f"Combine: {small} - {big} = 1.", "Numbers left: 1.", "Hm.")
    assert ev.replay_states(fmt.Trace((reversed_,), (), ""), QUESTION.problem.numbers)[0] == ["not_held"]
    vague = fmt.Step("think", "Maybe something works.", "Not sure.", "Keep going.")
    assert ev.replay_states(fmt.Trace((vague,), (), ""), QUESTION.problem.numbers)[0] == ["unreadable"]


def test_reasoning_tokens_with_a_tokenizer():
    tok = modeling.train_bpe_tokenizer([valid_completion(), USER], vocab_size=300)
    out = valid_completion()
    s = ev.score_output(out, LETTER, QUESTION, tokenizer=tok)
    reasoning = out[:out.index(fmt.REASONING_END) + len(fmt.REASONING_END)]
    assert s["reasoning_tokens"] == len(tok(reasoning, add_special_tokens=False)["input_ids"])
    assert s["reasoning_tokens"] >= 2 + 2 * 10  # each structural token counts as one


def test_score_output_rejects_a_bad_letter():
    with pytest.raises(ValueError, match="correct_letter"):
        ev.score_output(valid_completion(), "E")


def test_score_outputs_frame_and_error_counts():
    outs = [[valid_completion(), valid_completion(WRONG)], "garbage"]
    df = ev.score_outputs(outs, [LETTER, LETTER], [QUESTION, QUESTION])
    assert list(df["sample"]) == [0, 1, 0] and list(df["correct"]) == [True, False, False]
    assert set(df["question_id"]) == {"q-test"}
    counts = ev.error_counts(df)
    assert counts["missing_reasoning_end"] == 1 and counts["unknown_backtrack_target"] == 0
    assert list(counts.index) == list(fmt.ERROR_KINDS)
    with pytest.raises(ValueError, match="correct letters"):
        ev.score_outputs(outs, [LETTER])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_the_true_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.random(400) < 0.3
    mean, lo, hi = ev.bootstrap_ci(x, seed=0)
    assert mean == pytest.approx(x.mean()) and lo < 0.3 < hi
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / 400)  # the normal approximation
    assert hi - lo == pytest.approx(2 * half_width, rel=0.2)
    assert ev.bootstrap_ci(x, seed=0) == (mean, lo, hi)
    assert ev.bootstrap_ci(x, seed=1) != (mean, lo, hi)


def test_bootstrap_ci_coverage_is_near_nominal():
    rng = np.random.default_rng(2)
    covered = 0
    for i in range(200):
        x = rng.random(100) < 0.6
        _, lo, hi = ev.bootstrap_ci(x, n_boot=500, seed=i)
        covered += lo <= 0.6 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_resamples_questions_not_samples():
    rng = np.random.default_rng(3)
    per_question = (rng.random(50) < 0.5).astype(float)
    nested = [[v] * 8 for v in per_question]  # 8 identical samples per question: no extra information
    assert ev.bootstrap_ci(nested, seed=0) == ev.bootstrap_ci(per_question, seed=0)
    flat = [v for vs in nested for v in vs]
    groups = [i for i, vs in enumerate(nested) for _ in vs]
    assert ev.bootstrap_ci(flat, seed=0, groups=groups) == ev.bootstrap_ci(per_question, seed=0)
    _, lo_naive, hi_naive = ev.bootstrap_ci(flat, seed=0)  # samples treated as independent: too narrow
    _, lo, hi = ev.bootstrap_ci(nested, seed=0)
    assert hi_naive - lo_naive < 0.5 * (hi - lo)


def test_bootstrap_ci_ignores_missing_values_and_rejects_empty_input():
    assert ev.bootstrap_ci([1.0, None, 0.0, float("nan")])[0] == 0.5
    with pytest.raises(ValueError, match="no finite value"):
        ev.bootstrap_ci([None, None])
    with pytest.raises(ValueError, match="alpha"):
        ev.bootstrap_ci([1, 0], alpha=1.5)


def test_paired_diff_of_a_system_with_itself_is_zero():
    rng = np.random.default_rng(4)
    a = [list(rng.random(4) < 0.4) for _ in range(60)]
    diff, lo, hi, p = ev.paired_bootstrap_diff(a, a)
    assert (diff, lo, hi) == (0.0, 0.0, 0.0) and p == 1.0


def test_paired_diff_detects_a_real_difference_and_keeps_the_pairing():
    rng = np.random.default_rng(5)
    difficulty = rng.random(200)
    a = (difficulty < 0.7).astype(float)  # system a solves the easier 70%
    b = (difficulty < 0.5).astype(float)  # system b the easier 50%: always a subset of a
    diff, lo, hi, p = ev.paired_bootstrap_diff(a, b, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean()) and 0 < lo < diff < hi and p < 0.01
    # Pairing: the same difference computed as if the systems were independent has a wider interval.
    _, lo_a, hi_a = ev.bootstrap_ci(a, seed=0)
    _, lo_b, hi_b = ev.bootstrap_ci(b, seed=0)
    assert hi - lo < (hi_a - lo_a) + (hi_b - lo_b)
    with pytest.raises(ValueError, match="same questions"):
        ev.paired_bootstrap_diff(a, b[:-1])


def test_summarize_means_over_questions():
    outs = [[valid_completion(), valid_completion(WRONG)], [valid_completion()]]
    q2 = choice.CountdownQuestion(QUESTION.problem, QUESTION.distractors, "q-two")
    df = ev.score_outputs(outs, [LETTER, LETTER], [QUESTION, q2])
    table = ev.summarize(df, n_boot=200)
    # Per question: 0.5 and 1.0, so 0.75 (not the 2/3 of pooled samples).
    assert table.loc["solve rate", "value"] == pytest.approx(0.75)
    assert table.loc["format valid share", "value"] == 1.0
    assert table.loc["steps per output", "value"] == 2.0
    reached = df["reached_target"].astype(float).groupby(df["question_id"]).mean().mean()
    assert table.loc["target reached", "value"] == pytest.approx(reached)
    assert "reasoning tokens per output" not in table.index  # no tokenizer: no counts
    assert list(table.columns) == ["value", "ci_low", "ci_high"]


# --------------------------------------------------------------------------- held-out report


def test_heldout_report_on_a_tiny_model():
    questions = {q.question_id: q for q in (QUESTION, choice.CountdownQuestion(QUESTION.problem, QUESTION.distractors,
                                                                               "q-two"))}
    tok = modeling.train_bpe_tokenizer([valid_completion(), USER], vocab_size=300)
    model = tiny_qwen2(tok, **ONE_LAYER, max_position_embeddings=256)
    report = ev.heldout_report(model, tok, questions, seed=0, n_samples=2, max_new_tokens=6, temperature=1.0,
                               n_boot=100, progress=False)
    assert len(report.scores) == 4 and set(report.scores["question_id"]) == set(questions)
    prompts, letters = ev.heldout_prompts(list(questions.values()), seed=0)
    assert list(report.scores.drop_duplicates("question_id")["correct_letter"]) == letters
    assert prompts[0] == modeling.chat_text(USER)
    # An untrained model writes no valid reasoning: wrong on every output, and the report says so.
    assert not report.scores["format_ok"].any() and not report.scores["correct"].any()
    assert report.summary.loc["solve rate", "value"] == 0.0
    with pytest.raises(ValueError, match="identical samples"):
        ev.heldout_report(model, tok, questions, seed=0, n_samples=2, temperature=0.0)
    # Counted by re-tokenizing the text (the whole output here: no reasoning_end was written).
    assert (report.scores["reasoning_tokens"] > 0).all()


def test_p_values_are_written_to_what_the_bootstrap_resolves():
    assert ev.format_p(0.0004997) == "< 0.001" and ev.p_phrase(0.0004997) == "< 0.001"
    assert ev.format_p(0.944) == "0.944" and ev.p_phrase(0.944) == "= 0.944"
    assert ev.format_p(float("nan")) == ""


def test_manifest_metrics_flattens_a_summary_with_its_intervals():
    import pandas as pd

    summary = pd.DataFrame({"value": [0.5, 0.25], "ci_low": [0.4, 0.1], "ci_high": [0.6, 0.3]},
                           index=["valid step share", "solve rate"])
    m = ev.manifest_metrics(summary, "heldout_greedy_")
    assert m == {"heldout_greedy_valid_step_share": 0.5, "heldout_greedy_valid_step_share_ci_low": 0.4,
                 "heldout_greedy_valid_step_share_ci_high": 0.6, "heldout_greedy_solve_rate": 0.25,
                 "heldout_greedy_solve_rate_ci_low": 0.1, "heldout_greedy_solve_rate_ci_high": 0.3}
    assert all(isinstance(v, float) for v in m.values())
    change = pd.DataFrame({"change": [0.1], "ci_low": [-0.2], "ci_high": [0.3]}, index=["solve rate"])
    assert ev.manifest_metrics(change, "rl_change_", value="change") == {
        "rl_change_solve_rate": 0.1, "rl_change_solve_rate_ci_low": -0.2, "rl_change_solve_rate_ci_high": 0.3}


def test_paired_change_pairs_questions_and_reports_every_metric():
    import pandas as pd

    before = pd.DataFrame({"question_id": ["a", "a", "b", "b", "c", "c"], "correct": [0, 0, 1, 0, 0, 0],
                           "steps_valid": [0.5, 0.5, 1.0, 0.0, None, None], "n_backtracks": [0, 1, 0, 0, 2, 2],
                           "format_ok": [True] * 6})
    after = before.assign(correct=[1, 1, 1, 1, 0, 0], n_backtracks=[0, 1, 0, 0, 2, 2]).iloc[::-1]  # order does not matter
    t = ev.paired_change(after, before, n_boot=200)
    assert list(t.index) == ["solve rate", "valid step share", "backtracks per output", "format valid share"]
    assert t.loc["solve rate", "before"] == pytest.approx(1 / 6) and t.loc["solve rate", "after"] == pytest.approx(2 / 3)
    assert t.loc["solve rate", "change"] == pytest.approx(0.5)
    assert t.loc["valid step share", "questions"] == 2  # question c has no step in either
    assert t.loc["backtracks per output", "change"] == 0.0 and t.loc["backtracks per output", "p"] == 1.0
    with pytest.raises(ValueError, match="share no question"):
        ev.paired_change(after.assign(question_id="z"), before)


# --------------------------------------------------------------------------- format errors by cause


def _step(name="n"):
    return fmt.render_step(fmt.Step(name, "t", "s", "r"))


@pytest.mark.parametrize("tail, causes", [
    (fmt.REASONING_END + "\nAnswer: B", {}),
    (fmt.PROCEED + fmt.STEP_START + fmt.NAME_START + "x" + fmt.REASONING_END + "A", {"ended mid-step": ["unterminated_step"]}),
    (fmt.PROCEED + fmt.REASONING_END + "A", {"ended mid-step": ["dangling_move"]}),
    (fmt.PROCEED + fmt.STEP_START + fmt.NAME_START, {"no reasoning_end": ["unterminated_step", "missing_reasoning_end"]}),
    (fmt.REASONING_END + "A" + fmt.STEP_END, {"the answer": ["unexpected_token"]}),
    ("junk" + fmt.REASONING_END + "A", {"the model's steps": ["stray_text"]}),
    (fmt.BACKTRACK + "nowhere" + _step("m") + fmt.REASONING_END, {"the model's steps": ["unknown_backtrack_target"]}),
])
def test_error_causes_sort_each_error_by_where_it_comes_from(tail, causes):
    assert ev.error_causes(fmt.REASONING_START + _step() + tail) == causes
    assert set(ev.error_causes(fmt.REASONING_START + _step() + tail)) <= set(ev.ERROR_CAUSES)


# --------------------------------------------------------------------------- sample sizes


def test_questions_needed_known_values():
    # two questions, 0 and 1: sd = sqrt(1/2), half-width 1.96 sd / sqrt(2) = 0.98, need ceil((1.96 sd / 0.06)^2) = 534
    r = ev.questions_needed([0.0, 1.0])
    assert r["questions"] == 2 and r["sd"] == pytest.approx(math.sqrt(0.5))
    assert r["half_width"] == pytest.approx(0.98) and r["needed"] == 534 and r["met"] is False
    # 100 questions half right: sd = sqrt(25/99), need ceil(269.47) = 270; the half-width is 9.85 points
    r = ev.questions_needed([0.0, 1.0] * 50)
    assert r["needed"] == 270 and r["half_width"] == pytest.approx(1.96 * math.sqrt(25 / 99) / 10)
    # a whole-number (z sd / h)^2 is not rounded up by float noise: sd 0.3, h = 1.96 * 0.3 / 10 -> exactly 100
    values = np.array([-1.0, 1.0] * 50) * 0.3 * math.sqrt(99 / 100)
    assert ev.questions_needed(values, target=1.96 * 0.3 / 10)["needed"] == 100
    assert ev.questions_needed(values, target=1.96 * float(np.std(values, ddof=1)) / 10)["met"] is True


def test_questions_needed_averages_samples_per_question_first():
    # 2 questions x 4 samples: per-question means 0.75 and 0.25, not 8 independent values
    flat = ev.questions_needed([1, 1, 1, 0, 0, 0, 1, 0], groups=["a"] * 4 + ["b"] * 4)
    nested = ev.questions_needed([[1, 1, 1, 0], [0, 0, 1, 0]])
    assert flat == nested and flat["questions"] == 2 and flat["sd"] == pytest.approx(math.sqrt(0.125))


def test_pairing_shrinks_the_questions_needed():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.5).astype(float)  # questions of mixed difficulty...
    b = a.copy()
    flip = rng.choice(200, 20, replace=False)
    b[flip] = 1 - b[flip]  # ...that the second system answers alike, except 20
    paired = ev.questions_needed(a, b)
    independent = math.ceil((1.96 * math.sqrt(a.var(ddof=1) + b.var(ddof=1)) / 0.06) ** 2)
    assert paired["needed"] < independent / 3
    assert paired["sd"] == pytest.approx(float(np.std(a - b, ddof=1)))


def test_questions_needed_edges_zero_spread_and_one_question():
    # a model wrong everywhere: no spread, so the rule of three (not a zero-width interval)
    flat = ev.questions_needed([0.0] * 5)
    assert flat == {"questions": 5, "sd": 0.0, "half_width": pytest.approx(0.6), "needed": 50, "met": False,
                    "method": "rule of three"}
    same = ev.questions_needed([1, 0, 1], [1, 0, 1])  # a system against itself
    assert same["sd"] == 0.0 and same["half_width"] == pytest.approx(1.0) and same["needed"] == 50
    many = ev.questions_needed([1.0] * 100, target=0.06)  # 3/100 = 0.03: met
    assert many["met"] and many["needed"] == 50
    assert ev.questions_needed([0.0] * 10, span=0.5, target=0.05)["needed"] == 30
    one = ev.questions_needed([0.4])  # one question: unknown, not zero
    assert one["questions"] == 1 and math.isnan(one["sd"]) and math.isnan(one["needed"]) and one["met"] is False


@pytest.mark.parametrize("kwargs, match", [
    (dict(values=[0, 1], target=0), "target=0"),
    (dict(values=[0, 1], target=float("nan")), "target=nan"),
    (dict(values=[0, 1], target=-0.06), "target=-0.06"),
    (dict(values=[0, 1], z=0), "z=0"),
    (dict(values=[0, 1], span=-1), "span=-1"),
    (dict(values=[]), "values holds no finite value"),
    (dict(values=[None, float("nan")]), "values holds no finite value"),
    (dict(values=[0, 1, 1], other=[0, 1]), "values covers 3 questions and other 2"),
    (dict(values=[float("nan")], other=[1.0]), "values and other"),
])
def test_questions_needed_names_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ev.questions_needed(**kwargs)


def test_sample_size_table_on_a_tiny_frame():
    scores = lambda correct: pd.DataFrame({"question_id": [f"q{i // 2}" for i in range(len(correct))],  # noqa: E731
                                           "correct": correct})
    a = scores([1, 1, 0, 1, 0, 0, 1, 0])  # 4 questions x 2 samples: means 1, .5, 0, .5
    b = scores([1, 0, 0, 0, 0, 0, 1, 1])  # means .5, 0, 0, 1
    t = ev.sample_size_table({"A": a, "A - B": (a, b), "flat": pd.Series({"q0": 0.0, "q1": 0.0}),
                              "one": pd.Series({"q0": 1.0}), "none": (a, scores([1, 0]).assign(question_id="x"))})
    assert list(t.columns) == list(ev.SAMPLE_SIZE_COLUMNS) and "6 points" in t.index.name
    r = t.loc["A"]
    assert (r["kind"], r["questions"], r["outputs per question"]) == ("mean", 4, 2.0)
    assert r["sd (points)"] == pytest.approx(100 * math.sqrt(1 / 6))
    assert r["questions needed"] == ev.questions_needed([1, 0.5, 0, 0.5])["needed"] and not r["target met"]
    d = t.loc["A - B"]  # per-question differences .5, .5, 0, -.5
    assert d["kind"] == "paired difference" and d["questions needed"] == ev.questions_needed([.5, .5, 0, -.5])["needed"]
    assert t.loc["flat", "note"] == "no spread observed: rule of three" and not t.loc["flat", "target met"]
    assert t.loc["flat", "half-width now (points)"] == pytest.approx(150.0)  # 3 / 2 questions
    assert t.loc["one", "note"].startswith("one question") and math.isnan(t.loc["one", "questions needed"])
    assert t.loc["none", "note"] == "nothing measured" and t.loc["none", "questions"] == 0
    assert ev.largest_need(t) == t["questions needed"].max()
    assert ev.power_metrics(t) == {"power_questions_needed_max": ev.largest_need(t), "power_target_met": 0,
                                   "power_comparisons": 5}
    assert ev.power_sentence(t, 4) == (f"target: 95% half-width <= 6 points; met by 0 of 5 comparisons; the largest "
                                       f"need is {ev.largest_need(t):.0f} questions (this run asked 4).")
    with pytest.raises(ValueError, match="question_id"):
        ev.sample_size_table({"x": pd.DataFrame({"correct": [1]})})
    with pytest.raises(ValueError, match="empty"):
        ev.sample_size_table({})

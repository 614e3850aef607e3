"""Scoring sampled outputs: the answer letter, the format, the arithmetic of each step, and CIs.

Answer rule (as OpenAI simple-evals reads GPQA answers): the visible answer is the text after
<|reasoning_end|>; the letter is the last match in it of

    (?i:answer)\\s*:\\s*\\(?([ABCD])\\)?   not followed by a letter or digit

so "Answer: B", "answer : (C)" and "Answer:D." read, "Answer: Because" does not. An output
with no letter is scored wrong, and so is an output without <|reasoning_end|> (its visible
answer is empty): malformed outputs count against the model, never drop out.

Step validity (`steps_valid`, when the question is given): the steps are replayed from the
question's numbers. Each step's operation is read back from its text
(`tasks.text.read_step_operation`) against the numbers of the state the path has reached;
a step is valid when it reads and its arithmetic is right. A backtrack returns to the state
after the named step (or to the question). After a wrong result the path goes on from the
state the text claims (as the teacher's hallucinated steps do); after a step that writes no
operation, or one on numbers the state does not hold, or
a backtrack to an unknown name, the state is lost and the steps that follow are not valid
until a backtrack to a known state.

Confidence intervals are percentile bootstraps over *questions*: with several samples per
question, questions are resampled (each question's samples are averaged first), never the
samples themselves, since samples of one question are not independent.

Sample sizes (`questions_needed`, `sample_size_table`): the half-width of a comparison's 95%
interval now, and the questions it would need for a half-width of PRECISION_TARGET, by the normal
approximation over the same per-question values (paired differences for deltas).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from steiner_lib import format as fmt
from steiner_lib.generation.backends import CPU_DEFAULT
from steiner_lib.tasks import choice, text
from steiner_lib.tasks.countdown import apply, combine
from steiner_lib.training import modeling

ANSWER_RE = re.compile(r"(?i:answer)\s*:\s*\(?([ABCD])\)?(?![A-Za-z0-9])")


# --------------------------------------------------------------------------- one output


def extract_answer_letter(answer_text: str) -> str | None:
    """The answer letter A-D of a visible answer (see the module docstring), or None.

    Given a whole completion, only the text after the first <|reasoning_end|> is read.
    """
    if not isinstance(answer_text, str):
        raise TypeError(f"extract_answer_letter expects text, got {type(answer_text).__name__}")
    if fmt.REASONING_END in answer_text:
        answer_text = answer_text.split(fmt.REASONING_END, 1)[1]
    matches = ANSWER_RE.findall(answer_text)
    return matches[-1] if matches else None


def replay_states(trace: fmt.Trace, start_numbers, max_result: int | None = None) -> tuple[list[str], list[tuple | None]]:
    """Each step's status ("valid", "wrong_result", "not_held", "unreadable", "lost") and the state after it.

    not_held: the step writes an operation, but not one on the current state's numbers (a number it
    uses is not held, it is written in an illegal order such as "16 - 17", or a name alone such as
    "7 ÷ 2" has no whole result); unreadable: the step writes no operation at all. Both leave the
    state unknown;
    lost: the state the step starts from is unknown (see the module docstring). A result above
    `max_result` (the question's cap) is not legal: wrong_result. A state reached
    by wrong arithmetic is the one the step claims; None means unknown.
    """
    start = tuple(sorted(int(n) for n in start_numbers))
    state: tuple | None = start
    names: list[str] = []
    statuses: list[str] = []
    states: list[tuple | None] = []
    for i, step in enumerate(trace.steps):
        if i > 0 and isinstance(trace.moves[i - 1], fmt.Backtrack):
            to = trace.moves[i - 1].to.strip()
            if to == fmt.QUESTION:
                state = start
            else:
                k = fmt.resolve_backtrack(names, to)
                state = None if k is None else states[k]
        if state is None:
            statuses.append("lost")
        else:
            op = text.read_step_operation(step, state)
            if op is None:
                statuses.append("not_held" if text.writes_operation(step) else "unreadable")
                state = None
            elif combine(op.a, op.op, op.b, max_result) != op.result:
                statuses.append("wrong_result")
                state = text.claimed_state(state, op)
            else:
                statuses.append("valid")
                state = apply(state, op, max_result)
        names.append(step.name)
        states.append(state)
    return statuses, states


def replay_steps(trace: fmt.Trace, start_numbers, max_result: int | None = None) -> tuple[list[str], tuple | None]:
    """Each step's status (see replay_states) and the final state (None: unknown)."""
    statuses, states = replay_states(trace, start_numbers, max_result)
    return statuses, (states[-1] if states else tuple(sorted(int(n) for n in start_numbers)))


def _problem(question):
    problem = getattr(question, "problem", question)
    if not hasattr(problem, "numbers") or not hasattr(problem, "target"):
        raise TypeError(f"question must be a choice.CountdownQuestion or a countdown.Problem, "
                        f"got {type(question).__name__}")
    return problem


def answer_value(answer_text: str) -> int | None:
    """The value a visible answer writes ("25 × 3 + 7 = 82\n\nAnswer: B" -> 82): the last "= N"
    before the letter `extract_answer_letter` reads (ANSWER_RE's last match), or None."""
    letters = list(ANSWER_RE.finditer(answer_text))
    values = re.findall(r"=\s*(\d+)", answer_text[:letters[-1].start()] if letters else answer_text)
    return int(values[-1]) if values else None


def letter_holds_value(letter: str | None, value: int | None, choices: Sequence[str]) -> bool | None:
    """Whether the chosen letter is the one whose choice text is the value the answer writes; None
    when there is no letter, no value, or the value is none of the choices."""
    if letter is None or value is None or str(value) not in choices:
        return None
    return choice.LETTERS[list(choices).index(str(value))] == letter


def score_output(completion: str, correct_letter: str, question=None, tokenizer=None,
                 choices: Sequence[str] | None = None) -> dict:
    """Score one completion (never raises on malformed text).

    Keys: format_ok, n_errors, error_kinds, n_steps, n_backtracks, reasoning_tokens (the text up
    to and including <|reasoning_end|>, or all of it without one, re-tokenized; None without a
    tokenizer), letter, correct; with the question (CountdownQuestion or Problem):
    steps_valid (share of steps; None when there is no step), n_valid_steps,
    n_hallucinated_steps (wrong_result), n_not_held_steps, n_unreadable_steps, n_lost_steps (replay_states'
    statuses)
    and reached_target (the final state holds the target); with the question and its `choices` (the
    four choice texts in letter order, as the prompt showed them) also letter_holds_value
    (`letter_holds_value`: does the letter name the option whose value the answer writes).
    """
    if correct_letter not in choice.LETTERS:
        raise ValueError(f"correct_letter={correct_letter!r}: expected one of {list(choice.LETTERS)}")
    parsed = fmt.parse(completion)
    letter = extract_answer_letter(parsed.trace.answer)
    reasoning_tokens = None
    if tokenizer is not None:
        end = completion.find(fmt.REASONING_END)
        reasoning = completion if end < 0 else completion[:end + len(fmt.REASONING_END)]
        reasoning_tokens = modeling.count_tokens(tokenizer, [reasoning])[0]
    out = {
        "format_ok": parsed.ok,
        "n_errors": len(parsed.errors),
        "error_kinds": parsed.error_kinds(),
        "n_steps": len(parsed.trace.steps),
        "n_backtracks": parsed.trace.n_backtracks,
        "reasoning_tokens": reasoning_tokens,
        "letter": letter,
        "correct": letter is not None and letter == correct_letter,
    }
    if question is not None:
        problem = _problem(question)
        statuses, final = replay_steps(parsed.trace, problem.numbers, getattr(problem, "max_result", None))
        n = len(statuses)
        out.update(
            steps_valid=statuses.count("valid") / n if n else None,
            n_valid_steps=statuses.count("valid"),
            n_hallucinated_steps=statuses.count("wrong_result"),
            n_not_held_steps=statuses.count("not_held"),
            n_unreadable_steps=statuses.count("unreadable"),
            n_lost_steps=statuses.count("lost"),
            reached_target=bool(n) and final is not None and problem.target in final,
        )
        if choices is not None:
            out["letter_holds_value"] = letter_holds_value(letter, answer_value(parsed.trace.answer or ""), choices)
    return out


# --------------------------------------------------------------------------- many outputs


def score_outputs(completions, correct_letters: Sequence[str], questions=None, tokenizer=None,
                  question_ids: Sequence[str] | None = None, choices: Sequence[Sequence[str]] | None = None
                  ) -> pd.DataFrame:
    """One row per completion: question_id, sample, completion and the score_output keys.

    completions[i] is question i's list of samples (as `inference.generate` returns them) or a
    single str; correct_letters[i], questions[i] (optional), question_ids[i] and choices[i]
    (optional: the choice texts in the prompt's letter order) go with it.
    """
    n = len(completions)
    if len(correct_letters) != n:
        raise ValueError(f"{n} questions' completions but {len(correct_letters)} correct letters: "
                         f"give one per question")
    if questions is not None and len(questions) != n:
        raise ValueError(f"{n} questions' completions but {len(questions)} questions: give one per question")
    if question_ids is None and questions is not None:
        question_ids = [getattr(q, "question_id", str(i)) for i, q in enumerate(questions)]
    elif question_ids is None:
        question_ids = [str(i) for i in range(n)]
    if choices is not None and len(choices) != n:
        raise ValueError(f"{n} questions' completions but {len(choices)} choice lists: give one per question")
    rows = []
    for i, samples in enumerate(completions):
        samples = [samples] if isinstance(samples, str) else list(samples)
        for j, completion in enumerate(samples):
            q = None if questions is None else questions[i]
            shown = None if choices is None else choices[i]
            rows.append({"question_id": question_ids[i], "sample": j, "correct_letter": correct_letters[i],
                         "completion": completion,
                         **score_output(completion, correct_letters[i], q, tokenizer, choices=shown)})
    return pd.DataFrame(rows)


STEP_STATUSES = {"valid": "n_valid_steps", "wrong result": "n_hallucinated_steps",
                 "numbers not held": "n_not_held_steps", "unreadable": "n_unreadable_steps", "lost": "n_lost_steps"}


def step_status_table(scores: pd.DataFrame) -> pd.DataFrame:
    """How the steps of scored outputs replay (scoring.replay_states): count and share of each
    status. valid: a legal operation on the numbers held, right result; wrong result: the claimed
    result is not the operation's (or breaks the rules); numbers not held: an operation is written,
    but not on the numbers held; unreadable: no operation is written; lost: the step starts from an
    unknown state (after either of those two, or a backtrack to a step that does not exist)."""
    counts = {status: int(pd.to_numeric(scores[col], errors="coerce").fillna(0).sum())
              for status, col in STEP_STATUSES.items() if col in scores}
    total = max(sum(counts.values()), 1)
    table = pd.DataFrame({"steps": counts, "share": {k: v / total for k, v in counts.items()}})
    table.index.name = "step status"
    return table


# Where a format error comes from, read from the output alone (error_causes).
ERROR_CAUSES = {
    "ended mid-step": "reasoning_end closed an open step or followed a move (what forcing the end mid-step does)",
    "no reasoning_end": "the output stopped (end of sequence or the token cap) before its reasoning ended",
    "the model's steps": "a step or move the model wrote breaks the format (fields, order, names, stray text)",
    "the answer": "special tokens written after reasoning_end",
}


def error_causes(completion: str) -> dict[str, list[str]]:
    """The format errors of one output by cause (ERROR_CAUSES order): {cause: [error kinds]}, only
    the causes present. An error after reasoning_end is the answer's; an unterminated step or a
    dangling move at the reasoning_end is the end coming mid-step, and at the end of the text, the
    output stopping before its reasoning ended."""
    parsed = fmt.parse(completion)
    end = completion.find(fmt.REASONING_END)
    out: dict[str, list[str]] = {}
    for e in parsed.errors:
        if e.kind == "missing_reasoning_end":
            cause = "no reasoning_end"
        elif end >= 0 and e.position > end:
            cause = "the answer"
        elif e.kind in ("unterminated_step", "dangling_move") and "reasoning_end" in e.detail:
            cause = "ended mid-step"
        elif e.kind in ("unterminated_step", "dangling_move") and "the text ends" in e.detail:
            cause = "no reasoning_end"
        else:
            cause = "the model's steps"
        out.setdefault(cause, []).append(e.kind)
    return {c: out[c] for c in ERROR_CAUSES if c in out}


def error_counts(scores: pd.DataFrame) -> pd.Series:
    """How many outputs show each format error kind (ERROR_KINDS order, zeros kept)."""
    counts = {kind: int(sum(kind in kinds for kinds in scores["error_kinds"])) for kind in fmt.ERROR_KINDS}
    return pd.Series(counts, name="outputs with this error")


# --------------------------------------------------------------------------- bootstrap


def per_question_means(values, groups: Sequence | None = None) -> np.ndarray:
    """One mean per question from: per-question values, per-question lists of samples, or flat
    values with a question label each (`groups`). NaN/None samples are ignored; a question with
    no value at all is dropped."""
    if groups is not None:
        values, groups = list(values), list(groups)
        if len(values) != len(groups):
            raise ValueError(f"{len(values)} values but {len(groups)} group labels: give one label per value")
        frame = pd.DataFrame({"g": groups, "v": pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")})
        means = frame.groupby("g", sort=False)["v"].mean().to_numpy(dtype=float)
    else:
        means = []
        for v in values:
            if isinstance(v, (list, tuple, np.ndarray, pd.Series)):
                arr = pd.to_numeric(pd.Series(list(v), dtype=object), errors="coerce").to_numpy(dtype=float)
                means.append(np.nanmean(arr) if np.isfinite(arr).any() else np.nan)
            else:
                means.append(np.nan if v is None else float(v))
        means = np.asarray(means, dtype=float)
    return means[np.isfinite(means)]


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}: need at least 1 bootstrap resample")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                 groups: Sequence | None = None) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean over questions and its percentile-bootstrap 1 - alpha interval.

    Questions are resampled with replacement (see per_question_means for the accepted shapes).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: need 0 < alpha < 1 (0.05 gives a 95% interval)")
    q = per_question_means(values, groups)
    if len(q) == 0:
        raise ValueError("bootstrap_ci got no finite value: nothing to average")
    means = q[_bootstrap_indices(len(q), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(q.mean()), float(lo), float(hi)


def format_p(p: float) -> str:
    """A bootstrap p-value as text: "< 0.001" below what 2,000 resamples can resolve, else 3 decimals."""
    return "" if p != p else "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_phrase(p: float) -> str:
    """"= 0.944" or "< 0.001": what follows "p " in a sentence."""
    text = format_p(p)
    return text if text.startswith("<") else f"= {text}"


def paired_bootstrap_diff(a, b, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                          groups: Sequence | None = None) -> tuple[float, float, float, float]:
    """(diff, lo, hi, p_value) of mean(a) - mean(b) for two systems on the same questions.

    a[i] and b[i] belong to question i (values or lists of samples; or flat values with the same
    `groups` labels for both). Questions are resampled jointly, keeping the pairing. p_value is
    two-sided, from the bootstrap distribution shifted to the null (Efron & Tibshirani 1993,
    16.4): (1 + #{|d* - d| >= |d|}) / (n_boot + 1); a system against itself gives p = 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: need 0 < alpha < 1")
    qa, qb = _paired_means(a, b, groups)
    d = qa - qb
    diff = float(d.mean())
    boot = d[_bootstrap_indices(len(d), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    # A small tolerance, so that float noise in identical systems does not count as a difference.
    extreme = np.abs(boot - diff) >= abs(diff) - 1e-12
    p = (1 + int(extreme.sum())) / (n_boot + 1)
    return diff, float(lo), float(hi), float(p)


def _paired_means(a, b, groups):
    if groups is not None:
        if len(a) != len(b):
            raise ValueError(f"a has {len(a)} values and b {len(b)}: with groups, both need one value per label")
        frame = pd.DataFrame({"g": list(groups), "a": pd.to_numeric(pd.Series(list(a), dtype=object), errors="coerce"),
                              "b": pd.to_numeric(pd.Series(list(b), dtype=object), errors="coerce")})
        means = frame.groupby("g", sort=False)[["a", "b"]].mean().dropna()
        return means["a"].to_numpy(dtype=float), means["b"].to_numpy(dtype=float)
    if len(a) != len(b):
        raise ValueError(f"a covers {len(a)} questions and b {len(b)}: a paired comparison needs the same questions")
    qa = np.array([_mean_or_nan(v) for v in a])
    qb = np.array([_mean_or_nan(v) for v in b])
    both = np.isfinite(qa) & np.isfinite(qb)
    if not both.any():
        raise ValueError("no question has a finite value in both systems")
    return qa[both], qb[both]


def _mean_or_nan(v) -> float:
    means = per_question_means([v])
    return float(means[0]) if len(means) else np.nan


# --------------------------------------------------------------------------- sample sizes


PRECISION_TARGET = 0.06  # the 95% half-width every headline comparison should reach (6 accuracy points)
Z95 = 1.96  # the normal quantile of a two-sided 95% interval


def questions_needed(values, other=None, groups: Sequence | None = None, target: float = PRECISION_TARGET,
                     z: float = Z95, span: float = 1.0) -> dict:
    """How precise one comparison is now, and how many questions would make it precise enough.

    Why: an interval of +-15 points cannot tell a 5-point effect from none, so each headline
    comparison should say how many questions it would need for a half-width of `target` (0.06: six
    points of accuracy, values in 0-1). The unit is the question: samples of one question are not
    independent, so each question's samples are averaged first (per_question_means: the shapes
    bootstrap_ci accepts). With `other`, the comparison is the paired difference values - other on
    the same questions (the shapes paired_bootstrap_diff accepts), and its spread is that of the
    per-question differences: pairing removes the questions' difficulty from the variance, so a
    paired delta usually needs fewer questions than two independent accuracies would.

    By the normal approximation, with sd the standard deviation (ddof 1) of the n per-question values:

        half_width = z * sd / sqrt(n)        needed = ceil((z * sd / target) ** 2), at least 2

    (the percentile bootstraps of this module give about the same half-width). The need is an
    estimate from the spread measured now, itself uncertain when n is small; more samples per
    question lower only the within-question part of sd.

    Edges: n = 1 has no spread to measure: sd, half_width and needed are NaN and met is False (an
    unknown, not a zero). sd = 0 (every question scored the same, e.g. a model wrong everywhere): the
    normal approximation would claim a zero-width interval from any n, so the rule of three takes over
    (`method` "rule of three"): with no question differing among n, up to 3/n of the questions could
    still differ (95%), each by up to `span` (1 for accuracies scored 0-1; a paired difference of such
    scores moves by up to 1 per question in either direction), so half_width = 3 span / n and
    needed = ceil(3 span / target), at least 2. No finite value at all raises.

    Returns {questions, sd, half_width, needed, met, method} (sd and half_width in the values' unit;
    needed an int, or NaN; met: half_width <= target; method "normal" or "rule of three")."""
    if target is None or not np.isfinite(target) or target <= 0:
        raise ValueError(f"target={target!r}: give the half-width wanted, > 0, in the values' unit "
                         f"(0.06 for six points of accuracy scored 0-1)")
    if z is None or not np.isfinite(z) or z <= 0:
        raise ValueError(f"z={z!r}: give the normal quantile of the interval, > 0 (1.96 for 95%)")
    if span is None or not np.isfinite(span) or span <= 0:
        raise ValueError(f"span={span!r}: give the largest change one question's value can make, > 0 (1 for 0-1 scores)")
    if other is None:
        q = per_question_means(values, groups)
        if len(q) == 0:
            raise ValueError("values holds no finite value: nothing to measure")
    else:
        if groups is None and len(values) != len(other):
            raise ValueError(f"values covers {len(values)} questions and other {len(other)}: a paired difference "
                             f"needs one entry per question in both, in the same order")
        try:
            qa, qb = _paired_means(values, other, groups)
        except ValueError as e:
            raise ValueError(f"values and other: {e}") from None
        q = qa - qb
        if len(q) == 0:
            raise ValueError("values and other share no question with a finite value in both: nothing to measure")
    n = len(q)
    if n < 2:
        return {"questions": n, "sd": float("nan"), "half_width": float("nan"), "needed": float("nan"), "met": False,
                "method": "none"}
    sd = float(np.std(q, ddof=1))
    # the tolerances keep float noise from counting as spread, or from adding a question when the need
    # is a whole number
    if sd < 1e-12:
        sd, half_width, method = 0.0, 3 * span / n, "rule of three"
        needed = max(2, math.ceil(3 * span / target - 1e-9))
    else:
        half_width, method = z * sd / math.sqrt(n), "normal"
        needed = max(2, math.ceil((z * sd / target) ** 2 - 1e-9))
    return {"questions": n, "sd": sd, "half_width": half_width, "needed": int(needed),
            "met": bool(half_width <= target + 1e-12), "method": method}


SAMPLE_SIZE_COLUMNS = ("kind", "questions", "outputs per question", "sd (points)", "half-width now (points)",
                       "questions needed", "target met", "note")


def _question_values(x, column: str) -> tuple[pd.Series, float]:
    """(one value per question indexed by question id, mean outputs per question) of a Series already
    per question, or of a frame with question_id and `column` (its rows averaged per question)."""
    if isinstance(x, pd.DataFrame):
        if "question_id" not in x.columns or column not in x.columns:
            raise ValueError(f"a score frame needs the columns question_id and {column!r}; got {list(x.columns)}")
        values = pd.to_numeric(x[column].astype(float), errors="coerce")
        grouped = values.groupby(x["question_id"])
        return grouped.mean(), float(grouped.count().mean()) if len(x) else float("nan")
    if isinstance(x, pd.Series):
        return pd.to_numeric(x.astype(float), errors="coerce"), 1.0
    raise ValueError(f"a comparison is a score frame, a Series by question or a pair of them; got {type(x).__name__}")


def sample_size_table(comparisons: dict, target: float = PRECISION_TARGET, column: str = "correct",
                      z: float = Z95, scale: float = 100.0) -> pd.DataFrame:
    """questions_needed for every comparison of a notebook, one row each (index: the comparison's name).

    comparisons: {name: x} for one mean (an accuracy: against chance, a constant, its interval is the
    accuracy's own), or {name: (a, b)} for the paired difference a - b on the questions both hold;
    x, a and b are score frames (question_id and `column`, several outputs per question allowed) or
    Series of per-question values indexed by question id. Columns: kind, questions, outputs per
    question, sd and the half-width now (points: `scale` x the values' unit), questions needed for
    a half-width of `target`, target met, and a note on the edges (one question; no spread, where the
    rule of three replaces the normal approximation, see questions_needed; nothing measured).
    A comparison with no question is a row of NaNs, not an error, so a thin run still
    shows its table."""
    if not comparisons:
        raise ValueError("comparisons is empty: give {name: score frame} or {name: (frame_a, frame_b)}")
    rows = {}
    for name, x in comparisons.items():
        if isinstance(x, tuple):
            if len(x) != 2:
                raise ValueError(f"comparison {name!r}: a paired difference is a pair (a, b), got {len(x)} items")
            (a, na), (b, nb) = (_question_values(v, column) for v in x)
            both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
            kind, per_q, outputs = "paired difference", both["a"] - both["b"], (na + nb) / 2
        else:
            per_q, outputs = _question_values(x, column)
            kind, per_q = "mean", per_q.dropna()
        row = {"kind": kind, "questions": len(per_q), "outputs per question": outputs}
        if len(per_q) == 0:
            rows[name] = {**row, "sd (points)": np.nan, "half-width now (points)": np.nan, "questions needed": np.nan,
                          "target met": False, "note": "nothing measured"}
            continue
        need = questions_needed(per_q.to_numpy(float), target=target, z=z)
        note = ("one question: no spread to measure" if need["questions"] < 2 else
                "no spread observed: rule of three" if need["method"] == "rule of three" else "")
        rows[name] = {**row, "sd (points)": scale * need["sd"], "half-width now (points)": scale * need["half_width"],
                      "questions needed": need["needed"], "target met": need["met"], "note": note}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SAMPLE_SIZE_COLUMNS))
    table.index.name = f"comparison (target: 95% half-width <= {scale * target:g} points)"
    return table


def largest_need(table: pd.DataFrame) -> float:
    """The largest `questions needed` of a sample_size_table (NaN when none could be estimated)."""
    needed = pd.to_numeric(table["questions needed"], errors="coerce").dropna()
    return float(needed.max()) if len(needed) else float("nan")


def power_metrics(table: pd.DataFrame) -> dict:
    """A sample_size_table in three manifest metrics: the largest need, the comparisons meeting the target
    and the comparisons in all (notebooks 06 and 07 record these)."""
    return {"power_questions_needed_max": largest_need(table), "power_target_met": int(table["target met"].sum()),
            "power_comparisons": len(table)}


def power_sentence(table: pd.DataFrame, asked: int, target: float = PRECISION_TARGET) -> str:
    """The line printed under a sample-size table: the target, how many comparisons meet it, the largest need."""
    return (f"target: 95% half-width <= {100 * target:g} points; met by {int(table['target met'].sum())} of "
            f"{len(table)} comparisons; the largest need is {largest_need(table):.0f} questions (this run asked {asked}).")


# --------------------------------------------------------------------------- held-out report


@dataclass
class HeldoutReport:
    scores: pd.DataFrame  # one row per sampled output (score_outputs columns)
    summary: pd.DataFrame  # one row per metric: value, ci_low, ci_high (bootstrap over questions)


SUMMARY_METRICS = (
    ("solve rate", "correct"),
    # The search alone, the letter aside: the replayed final state holds the target.
    ("target reached", "reached_target"),
    ("answered share", "answered"),
    ("format valid share", "format_ok"),
    ("steps per output", "n_steps"),
    ("backtracks per output", "n_backtracks"),
    ("valid step share", "steps_valid"),
    # Of the answers whose written value is an option: the letter names that option.
    ("letter holds the written value", "letter_holds_value"),
    ("reasoning tokens per output", "reasoning_tokens"),
)


def summarize(scores: pd.DataFrame, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Means over questions with percentile-bootstrap CIs (questions resampled) for SUMMARY_METRICS."""
    frame = scores.assign(answered=scores["letter"].notna())
    rows = {}
    for label, column in SUMMARY_METRICS:
        if column not in frame.columns or frame[column].isna().all():
            continue
        values = frame[column].astype(float)
        mean, lo, hi = bootstrap_ci(values, n_boot, alpha, seed, groups=frame["question_id"])
        rows[label] = {"value": mean, "ci_low": lo, "ci_high": hi}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = f"metric ({frame['question_id'].nunique()} questions, {len(frame)} outputs, " \
                       f"{100 * (1 - alpha):g}% CI)"
    return table


def paired_change(after: pd.DataFrame, before: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                  metrics=(("solve rate", "correct"), ("valid step share", "steps_valid"),
                           ("backtracks per output", "n_backtracks"), ("format valid share", "format_ok"))) -> pd.DataFrame:
    """after - before on the same questions (score_outputs frames of two checkpoints), per metric:
    the two means, the change and its paired-bootstrap 95% CI and two-sided p (questions resampled)."""
    def per_question(frame, col):
        return pd.to_numeric(frame[col].astype(float), errors="coerce").groupby(frame["question_id"]).mean()

    rows = {}
    for label, col in metrics:
        a, b = per_question(after, col), per_question(before, col)
        shared = a.index.intersection(b.index)
        if not len(shared):
            raise ValueError("the two score frames share no question: a paired change needs the same questions")
        a, b = a.loc[shared], b.loc[shared]
        keep = a.notna() & b.notna()
        if not keep.any():
            continue
        diff, lo, hi, p = paired_bootstrap_diff(a[keep].to_numpy(), b[keep].to_numpy(), n_boot=n_boot, seed=seed)
        rows[label] = {"before": float(b[keep].mean()), "after": float(a[keep].mean()), "change": diff,
                       "ci_low": lo, "ci_high": hi, "p": p, "questions": int(keep.sum())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric (per question, paired)"
    return table


# Sampled against greedy decoding on the same questions (04): how much of the step error is the sampling.
DECODING_METRICS = tuple((label, dict(SUMMARY_METRICS)[label])
                         for label in ("valid step share", "target reached", "solve rate", "format valid share"))


def manifest_metrics(table: pd.DataFrame, prefix: str, value: str = "value") -> dict[str, float]:
    """A table of metrics with intervals (summarize: `value`; paired_change: `change`) as flat manifest
    metrics: `<prefix><metric>` and its `_ci_low`, `_ci_high` (spaces in the label become underscores)."""
    return {f"{prefix}{label.replace(' ', '_')}{suffix}": float(v)
            for label, row in table.iterrows()
            for suffix, v in (("", row[value]), ("_ci_low", row["ci_low"]), ("_ci_high", row["ci_high"]))}


def heldout_prompts(questions, seed: int) -> tuple[list[str], list[str]]:
    """ChatML prompts (choice.format_prompt, seeded shuffle of the choices) and the correct letters."""
    prompts, letters, _ = heldout_prompts_and_choices(questions, seed)
    return prompts, letters


def heldout_prompts_and_choices(questions, seed: int) -> tuple[list[str], list[str], list[list[str]]]:
    """heldout_prompts plus each prompt's choices in the order shown (one shuffle per question)."""
    items = [choice.format_prompt_and_choices(q, seed=seed) for q in questions]
    return [modeling.chat_text(u) for u, _, _ in items], [l for _, l, _ in items], [c for _, _, c in items]


def question_id(q) -> str:
    """A question's id: a CountdownQuestion's question_id, or a ChoiceQuestion's record_id."""
    return str(getattr(q, "question_id", None) or q.record_id)


def generate_and_score(model, tokenizer, questions, seed: int, n_samples: int = 1, max_new_tokens: int = 512,
                       temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 16, logits_processor=None,
                       progress: bool = True, backend: str = CPU_DEFAULT, replay: bool = True) -> pd.DataFrame:
    """n_samples outputs per question, one score_outputs row each: the one sampling-and-scoring path of
    the held-out checks (heldout_report) and the stage table (stage_table.sample_and_score).

    questions: a list, or a dict by question id as dataset.load_countdown_questions returns. Prompts
    are shuffled with `seed`, and sampling is seeded with it too. model: a Hugging Face model or a
    backends.VLLMModel (backends.generate; `backend` for a model in this process: lean or transformers,
    vllm or auto mean lean). replay: replay each output's steps on the question (CountdownQuestions
    only; the stage table also scores ChoiceQuestions, which hold no numbers to replay).
    """
    from steiner_lib.generation import backends

    questions = list(questions.values()) if isinstance(questions, dict) else list(questions)
    if not questions:
        raise ValueError("generate_and_score got no questions")
    if temperature == 0 and n_samples > 1:
        raise ValueError(f"greedy decoding (temperature 0) gives {n_samples} identical samples per question: "
                         f"set temperature > 0 or n_samples=1")
    prompts, letters, shown = heldout_prompts_and_choices(questions, seed)
    outputs = backends.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, n_samples=n_samples, batch_size=batch_size, seed=seed,
                                logits_processor=logits_processor, progress=progress, backend=backend)
    return score_outputs(outputs, letters, questions if replay else None, tokenizer,
                         question_ids=[question_id(q) for q in questions], choices=shown if replay else None)


def heldout_report(model, tokenizer, questions, seed: int, n_samples: int = 1, max_new_tokens: int = 512,
                   temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 16, logits_processor=None,
                   n_boot: int = 2000, progress: bool = True, backend: str = CPU_DEFAULT) -> HeldoutReport:
    """generate_and_score on held-out CountdownQuestions, summarized with 95% CIs (summarize)."""
    scores = generate_and_score(model, tokenizer, questions, seed, n_samples, max_new_tokens, temperature, top_p,
                                batch_size, logits_processor, progress, backend)
    return HeldoutReport(scores, summarize(scores, n_boot=n_boot, seed=seed))


def backtrack_citations(completions: Sequence[str]) -> dict[str, int]:
    """How the backtracks of these outputs cite their target: QUESTION, a step label (`Step 2`),
    a step's whole name, or nothing an earlier step answers to (an unknown target)."""
    counts = {"question": 0, "label": 0, "name": 0, "unknown": 0}
    for completion in completions:
        trace = fmt.parse(completion).trace
        for i, move in enumerate(trace.moves):
            if not isinstance(move, fmt.Backtrack):
                continue
            if move.to == fmt.QUESTION:
                counts["question"] += 1
                continue
            k = fmt.resolve_backtrack([s.name for s in trace.steps[:i + 1]], move.to)
            if k is None:
                counts["unknown"] += 1
            else:
                counts["label" if move.to == fmt.step_label(trace.steps[k].name) else "name"] += 1
    return counts


def format_paragraph(report: HeldoutReport, max_new_tokens: int, target: float = 0.95) -> str:
    """Format validity of a held-out report in words: the share with its CI against `target`,
    the error kinds, outputs cut off before reasoning_end, and how backtracks cite their targets."""
    scores = report.scores
    row = report.summary.loc["format valid share"]
    n, n_q = len(scores), scores["question_id"].nunique()
    verdict = ("meets" if row["ci_low"] >= target else "is short of" if row["ci_high"] < target
               else "is within sampling error of")
    lines = [f"{100 * row['value']:.1f}% of {n} sampled outputs ({n_q} questions) parse with no format error "
             f"(95% CI {100 * row['ci_low']:.1f} to {100 * row['ci_high']:.1f}%), which {verdict} the "
             f"{100 * target:.0f}% target."]
    errors = error_counts(scores)
    errors = errors[errors > 0]
    if len(errors):
        lines.append("Outputs showing each error kind: " + ", ".join(f"{k} {v}" for k, v in errors.items()) + ".")
    no_end = scores["error_kinds"].map(lambda kinds: "missing_reasoning_end" in kinds)
    if no_end.any():
        tokens = scores.loc[no_end, "reasoning_tokens"].dropna()
        at_budget = int((tokens >= 0.95 * max_new_tokens).sum())
        lines.append(f"{int(no_end.sum())} output(s) never write <|reasoning_end|>, {at_budget} of them cut off "
                     f"at the budget of {max_new_tokens} new tokens" + (" (a longer budget may rescue those)."
                                                                         if at_budget else " (they stop early)."))
    if "completion" in scores:
        c = backtrack_citations(scores["completion"])
        total = sum(c.values())
        lines.append(f"Backtracks: {total} in all, {c['question']} to the question, {c['label']} citing a step "
                     f"label, {c['name']} a whole step name, {c['unknown']} to an unknown target.")
    return " ".join(lines)


__all__ = ["ANSWER_RE", "extract_answer_letter", "replay_states", "replay_steps", "score_output", "score_outputs", "error_counts",
           "ERROR_CAUSES", "error_causes",
           "per_question_means", "bootstrap_ci", "format_p", "p_phrase", "paired_bootstrap_diff",
           "PRECISION_TARGET", "Z95", "questions_needed", "SAMPLE_SIZE_COLUMNS", "sample_size_table", "largest_need", "power_metrics",
           "power_sentence", "HeldoutReport",
           "SUMMARY_METRICS", "summarize", "DECODING_METRICS", "manifest_metrics", "heldout_prompts", "heldout_prompts_and_choices", "question_id",
           "generate_and_score", "heldout_report", "backtrack_citations",
           "format_paragraph"]

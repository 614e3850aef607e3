"""The reasoning format: published token list, render/parse round trip, a forgiving parser."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from steiner_lib import format as F
from steiner_lib.format import (
    BACKTRACK, ERROR_KINDS, NAME_END, PROCEED, QUESTION, REASONING_END, REASONING_START, SPECIAL_TOKENS,
    REFLECTION_START, STEP_END, SUMMARY_START, THOUGHT_START, Backtrack, Step, Trace,
    parse, pretty, render, render_step, unique_step_names,
)

SETTINGS = settings(max_examples=200, deadline=None)

# ------------------------------------------------------------------ strategies

_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
# Fragments that look like tokens but are not: they must survive verbatim inside fields.
NEAR_TOKENS = ["<|", "|>", "<|reasoning_", "<|reasoning_end", "reasoning_end|>", "\n", " ", "\r\n", "<", ">"]


def no_token(s: str) -> bool:
    return _TOKEN_RE.search(s) is None


free_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(NEAR_TOKENS), st.text(max_size=4)), max_size=8).map("".join),
).filter(no_token)
names = st.text(min_size=1, max_size=20).map(str.strip).filter(
    lambda s: s != "" and "\n" not in s and s.strip() == s and no_token(s))


@st.composite
def traces(draw, min_steps: int = 1, max_steps: int = 6) -> Trace:
    n = draw(st.integers(min_steps, max_steps))
    step_names = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    steps = tuple(Step(name, draw(free_text), draw(free_text), draw(free_text)) for name in step_names)
    moves = tuple(
        draw(st.one_of(st.just("proceed"),
                       st.sampled_from(step_names[: i + 1] + [QUESTION]).map(Backtrack)))
        for i in range(n - 1)
    )
    return Trace(steps, moves, draw(free_text))


token_soup = st.lists(
    st.one_of(st.sampled_from(SPECIAL_TOKENS), st.sampled_from(["\n", " ", "x", "a b", QUESTION]),
              st.text(max_size=5)),
    max_size=40,
).map("".join)


def step(name: str, thought: str = "t", summary: str = "s", reflection: str = "r") -> str:
    return render_step(Step(name, thought, summary, reflection))


def kinds(text: str) -> list[str]:
    return [e.kind for e in parse(text).errors]


def names_of(text: str) -> list[str]:
    return [s.name for s in parse(text).trace.steps]


def check_well_formed(text: str) -> None:
    result = parse(text)
    trace = result.trace
    assert len(trace.moves) == max(len(trace.steps) - 1, 0)
    for e in result.errors:
        assert e.kind in ERROR_KINDS, e
        assert 0 <= e.position <= len(text), e
    for s in trace.steps:  # kept fields never swallow structure
        for value in (s.name, s.thought, s.summary, s.reflection):
            assert no_token(value)
    if not trace.steps:
        assert "empty_reasoning" in result.error_kinds()
    # What was read is a fixed point: rendering it and reading again gives it back.
    again = parse(render(trace))
    assert again.trace == trace
    assert set(again.error_kinds()) <= {"empty_reasoning", "unknown_backtrack_target", "unexpected_token"}


# ------------------------------------------------------------------ published rules


def test_token_list_matches_the_released_tokenizer():
    published = (
        "<|reasoning_start|> <|reasoning_end|> <|reasoning_proceed|> <|reasoning_backtrack|> "
        "<|reasoning_step_start|> <|reasoning_step_end|> <|reasoning_step_name_start|> "
        "<|reasoning_step_name_end|> <|reasoning_step_thought_start|> <|reasoning_step_thought_end|> "
        "<|reasoning_step_summary_start|> <|reasoning_step_summary_end|> "
        "<|reasoning_step_reflection_start|> <|reasoning_step_reflection_end|>"
    ).split()
    assert list(SPECIAL_TOKENS) == published
    assert len(set(SPECIAL_TOKENS)) == 14


@given(data=st.data(), min_steps=st.integers(0, 4), extra=st.integers(0, 4))
@SETTINGS
def test_outputs_allowed_by_the_published_logits_processor_parse_cleanly(data, min_steps, extra):
    """Walk the automaton of Steiner's reasoning_constraints(min_steps, max_steps): reasoning_start
    first; after step_end, reasoning_end once max_steps are done, proceed while fewer than min_steps
    are done, else the model's choice; after proceed or backtrack, step_start. Every such output
    (with a backtrack naming an earlier step or the question) must parse with no error."""
    max_steps = max(min_steps, 1) + extra
    out, done, step_names = [REASONING_START, "\n"], 0, []
    while True:
        name = f"step {done + 1}"
        out += [step(name, data.draw(free_text), data.draw(free_text), data.draw(free_text)), "\n"]
        done += 1
        step_names.append(name)
        if done >= max_steps:
            choice = "end"
        elif done < min_steps:
            choice = "proceed"
        else:
            choice = data.draw(st.sampled_from(["end", "proceed", "backtrack"]))
        if choice == "end":
            break
        if choice == "proceed":
            out += [PROCEED, "\n"]
        else:
            out += [BACKTRACK, data.draw(st.sampled_from(step_names + [QUESTION])), "\n"]
    out += [REASONING_END, "\n", "The answer."]
    result = parse("".join(out))
    assert result.ok, result.errors
    assert max(min_steps, 1) <= len(result.trace.steps) == done <= max_steps
    assert result.trace.answer == "The answer."


# ------------------------------------------------------------------ round trip and robustness


@given(traces())
@SETTINGS
def test_parse_inverts_render(trace):
    result = parse(render(trace))
    assert result.errors == []
    assert result.trace == trace


@given(traces(), st.sampled_from([" ", "\n\n", "\t \n"]))
@SETTINGS
def test_whitespace_between_structural_tokens_is_ignored(trace, ws):
    text = render(trace)
    # Widen every gap that render leaves between structural tokens (not inside fields).
    for tok in (REASONING_START, STEP_END, PROCEED):
        text = text.replace(tok + "\n", tok + "\n" + ws)
    result = parse(ws + text)
    assert result.errors == []
    assert result.trace == trace


def test_zero_step_trace_renders_but_reads_back_as_empty_reasoning():
    trace = Trace((), (), "just an answer")
    text = render(trace)
    assert text == f"{REASONING_START}\n{REASONING_END}\njust an answer"
    result = parse(text)
    assert result.trace == trace  # the answer is still read ...
    assert kinds(text) == ["empty_reasoning"]  # ... but a reasoning without steps is an error


@given(st.text())
@SETTINGS
def test_arbitrary_text_never_raises(text):
    check_well_formed(text)


@given(token_soup)
@SETTINGS
def test_token_soup_never_raises(text):
    check_well_formed(text)


@given(traces(), st.data())
@SETTINGS
def test_damaged_renders_never_raise_and_keep_a_prefix_of_steps(trace, data):
    text = render(trace)
    cut = data.draw(st.integers(0, len(text)))
    check_well_formed(text[:cut])  # truncation
    # Truncation keeps exactly the steps whose step_end survived, in order.
    kept = parse(text[:cut]).trace.steps
    assert kept == trace.steps[: len(kept)]
    assert len(kept) == text[:cut].count(STEP_END)
    # Deleting or repeating a random slice: the model repeats or loses structure.
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, len(text)))
    check_well_formed(text[:i] + text[j:])
    check_well_formed(text[:j] + text[i:j] + text[j:])


def test_parse_is_linear_time():
    unit = step("a") + "\n" + PROCEED + "\n"
    small, large = REASONING_START + unit * 500, REASONING_START + unit * 5000

    def timed(text):  # best of 3, so a busy machine does not make the test flaky
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            parse(text)
            best = min(best, time.perf_counter() - t0)
        return best

    assert timed(large) < 25 * max(timed(small), 1e-4)  # 10x input, far from 100x
    # A long field full of near-tokens is scanned in linear time too.
    assert timed(REASONING_START + "<|reasoning_step_" * 50_000) < 2.0


def test_parse_rejects_non_text_with_a_clear_message():
    with pytest.raises(TypeError, match="str"):
        parse(b"<|reasoning_start|>")  # type: ignore[arg-type]


# ------------------------------------------------------------------ one test per error kind

GOOD = REASONING_START + "\n" + step("a") + "\n" + PROCEED + "\n" + step("b") + "\n" + REASONING_END + "\nAns"


def test_a_good_output_has_no_errors():
    result = parse(GOOD)
    assert result.ok
    assert result.trace == Trace((Step("a", "t", "s", "r"), Step("b", "t", "s", "r")), ("proceed",), "Ans")


def test_error_kinds_are_snake_case_and_all_covered_below():
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", k) for k in ERROR_KINDS)
    assert len(set(ERROR_KINDS)) == len(ERROR_KINDS)
    tested = {name[len("test_kind_"):] for name in globals() if name.startswith("test_kind_")}
    assert tested == set(ERROR_KINDS)


def test_kind_text_before_reasoning():
    text = "Sure, let me think." + GOOD
    assert kinds(text) == ["text_before_reasoning"]
    assert parse(text).errors[0].position == 0
    assert names_of(text) == ["a", "b"]


def test_kind_missing_reasoning_start():
    text = GOOD[len(REASONING_START):]
    assert kinds(text) == ["missing_reasoning_start"]
    assert names_of(text) == ["a", "b"]
    assert parse(text).trace.answer == "Ans"


def test_kind_missing_reasoning_end():
    text = GOOD[: GOOD.index(REASONING_END)]
    assert kinds(text) == ["missing_reasoning_end"]
    assert names_of(text) == ["a", "b"]
    assert parse(text).trace.answer == ""


def test_kind_unterminated_step():
    # The text ends inside the third step: the two complete steps before it are returned.
    full = GOOD.replace(REASONING_END, PROCEED + "\n" + step("c") + "\n" + REASONING_END)
    truncated = full[: full.index("c" + NAME_END) + len("c" + NAME_END)]
    assert kinds(truncated) == ["unterminated_step", "missing_reasoning_end"]
    assert names_of(truncated) == ["a", "b"]
    assert len(parse(truncated).trace.moves) == 1  # the move before the lost step is dropped
    # A step cut off by a new step_start (the model restarted it): reading resumes there.
    restarted = step("a").split(THOUGHT_START)[0] + step("a")
    cut = GOOD.replace(step("a"), restarted)
    assert kinds(cut) == ["unterminated_step"]
    assert names_of(cut) == ["a", "b"]
    # A step cut off by reasoning_end: the answer is still read.
    cut = GOOD.replace(step("b"), step("b").split(SUMMARY_START)[0])
    assert kinds(cut) == ["unterminated_step"]
    assert names_of(cut) == ["a"] and parse(cut).trace.answer == "Ans"


def test_kind_missing_field():
    no_summary = step("b").replace("<|reasoning_step_summary_start|>s<|reasoning_step_summary_end|>", "")
    text = GOOD.replace(step("b"), no_summary)
    assert kinds(text) == ["missing_field"]
    assert names_of(text) == ["a"]
    swapped = step("a", thought="T", summary="S")
    swapped = swapped.replace("thought", "TMP").replace("summary", "thought").replace("TMP", "summary")
    text = GOOD.replace(step("a"), swapped)
    assert kinds(text) == ["missing_field"]
    assert names_of(text) == ["b"]
    # A broken step closed by its step_end is still followed by a move, and that move is read.
    no_reflection = step("b").split(REFLECTION_START)[0] + STEP_END  # step_end where a field is due
    for broken in (no_summary, no_reflection):
        text = REASONING_START + step("a") + PROCEED + broken + BACKTRACK + "a" + step("c") + REASONING_END
        assert kinds(text) == ["missing_field"]
        assert parse(text).trace.moves == (Backtrack("a"),)
        text = REASONING_START + step("a") + PROCEED + broken + step("c") + REASONING_END
        assert kinds(text) == ["missing_field", "missing_move"]


def test_kind_unexpected_token():
    text = GOOD.replace(PROCEED, PROCEED + "\n" + PROCEED)  # two moves in a row
    assert kinds(text) == ["unexpected_token"]
    assert names_of(text) == ["a", "b"]
    text = GOOD.replace(step("b"), step("b").replace(STEP_END, PROCEED + STEP_END))  # a move inside a step
    assert kinds(text) == ["unexpected_token"]
    assert names_of(text) == ["a"]
    text = GOOD + REASONING_START + "more"  # tokens after reasoning_end stay in the answer, flagged once
    assert kinds(text) == ["unexpected_token"]
    assert parse(text).trace.answer == "Ans" + REASONING_START + "more"


def test_kind_stray_text():
    text = GOOD.replace(STEP_END + "\n" + PROCEED, STEP_END + "\nhmm, ok\n" + PROCEED)
    assert kinds(text) == ["stray_text"]
    error = parse(text).errors[0]
    assert text[error.position:].startswith("hmm, ok")
    assert parse(text).trace == parse(GOOD).trace  # stray text outside fields is dropped, steps kept


def test_kind_missing_move():
    text = GOOD.replace(PROCEED + "\n", "")
    assert kinds(text) == ["missing_move"]
    assert parse(text).trace.moves == ("proceed",)
    assert names_of(text) == ["a", "b"]


def test_kind_dangling_move():
    text = GOOD.replace(REASONING_END, BACKTRACK + "a\n" + REASONING_END)
    assert kinds(text) == ["dangling_move"]
    assert parse(text).trace == parse(GOOD).trace
    at_end = GOOD[: GOOD.index(REASONING_END)] + PROCEED
    assert kinds(at_end) == ["dangling_move", "missing_reasoning_end"]
    assert names_of(at_end) == ["a", "b"]


def test_kind_unknown_backtrack_target():
    for target in ("nowhere", "b", ""):  # "b" comes later, so it is not an earlier step
        text = GOOD.replace(PROCEED, BACKTRACK + target)
        assert kinds(text) == ["unknown_backtrack_target"]
        assert parse(text).trace.moves == (Backtrack(target),)  # kept as written; the error says why
    for target in ("a", QUESTION, "  a \n"):
        text = GOOD.replace(PROCEED, BACKTRACK + target)
        assert parse(text).ok
        assert parse(text).trace.moves == (Backtrack(target.strip()),)


def test_kind_empty_reasoning():
    assert kinds(REASONING_START + REASONING_END + "x") == ["empty_reasoning"]
    assert kinds("") == ["missing_reasoning_start", "missing_reasoning_end", "empty_reasoning"]


def test_backtrack_resolves_to_the_most_recent_step_of_that_name():
    # Repeated names are tolerated; the backtrack is valid because an earlier step has the name.
    text = (REASONING_START + step("x") + PROCEED + step("x") + BACKTRACK + "x" + step("y")
            + REASONING_END + "A")
    result = parse(text)
    assert result.ok and result.trace.moves == ("proceed", Backtrack("x"))


def test_a_backtrack_may_cite_a_step_by_its_label():
    a, b = F.labelled_name(1, "combine 4 and 6"), F.labelled_name(2, "combine 10 and 3")
    for target in ("Step 1", " Step 1\n", a, "combine 4 and 6".join(["Step 1: ", ""])):
        text = REASONING_START + step(a) + PROCEED + step(b) + BACKTRACK + target + step("c") + REASONING_END + "A"
        assert parse(text).ok, (target, parse(text).errors)
    for target in ("Step 3", "Step", "1", "combine 4 and 6"):  # no such label; a name without its label
        text = REASONING_START + step(a) + PROCEED + step(b) + BACKTRACK + target + step("c") + REASONING_END + "A"
        assert kinds(text) == ["unknown_backtrack_target"], target


def test_step_labels():
    assert F.step_label("Step 12: combine 4 and 6") == "Step 12"
    assert F.step_label("  Step 3 : x") == "Step 3"
    assert F.step_label("combine 4 and 6") is None and F.step_label("Step x: y") is None
    assert F.step_label(F.labelled_name(7, "anything: at all")) == "Step 7"
    assert F.step_refs(" Step 2: a ") == {" Step 2: a ", "Step 2: a", "Step 2"}
    assert F.step_refs("plain") == {"plain"}
    names = ["Step 1: a", "Step 2: b", "Step 2: c", "d"]
    assert F.resolve_backtrack(names, "Step 2") == 2  # the latest step with that label
    assert F.resolve_backtrack(names, " Step 1: a ") == 0 and F.resolve_backtrack(names, "d") == 3
    assert F.resolve_backtrack(names, "Step 3") is None and F.resolve_backtrack([], "Step 1") is None


def test_moves_around_a_dropped_step_use_the_latest_move():
    broken = step("b").replace(STEP_END, "")  # cut off by the next step_start
    text = (REASONING_START + step("a") + PROCEED + broken + step("c")
            + BACKTRACK + "a" + step("d") + REASONING_END)
    result = parse(text)
    assert [s.name for s in result.trace.steps] == ["a", "c", "d"]
    assert result.trace.moves == ("proceed", Backtrack("a"))
    assert result.error_kinds() == {"unterminated_step": 1}


def test_errors_come_in_text_order():
    text = "hi" + GOOD.replace(PROCEED + "\n", "").replace(REASONING_END, PROCEED + REASONING_END)
    positions = [e.position for e in parse(text).errors]
    assert positions == sorted(positions)
    assert kinds(text) == ["text_before_reasoning", "missing_move", "dangling_move"]


# ------------------------------------------------------------------ unique_step_names, pretty


def test_unique_step_names():
    assert unique_step_names([]) == []
    assert unique_step_names(["a", "b"]) == ["a", "b"]
    assert unique_step_names(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]
    # A generated name never collides with a name that is already there.
    assert unique_step_names(["a", "a", "a (2)"]) == ["a", "a (3)", "a (2)"]


@given(st.lists(st.sampled_from(["a", "b", "a (2)", "a (3)", "b (2)"]), max_size=12))
@SETTINGS
def test_unique_step_names_properties(names_in):
    out = unique_step_names(names_in)
    assert len(out) == len(names_in) == len(set(out))
    seen = set()
    for original, new in zip(names_in, out):
        if original not in seen:
            assert new == original
        seen.add(original)


def test_pretty_of_a_trace():
    trace = Trace(
        (Step("a", "line 1\nline 2", "s", "r"), Step("b", "t", "s", "r"), Step("c", "t", "s", "r")),
        ("proceed", Backtrack("a")),
        "42",
    )
    text = pretty(trace)
    assert text.splitlines() == [
        "Step 1",
        "    name: a",
        "    thought: line 1",
        "             line 2",
        "    summary: s",
        "    reflection: r",
        "  → proceed",
        "Step 2",
        "    name: b",
        "    thought: t",
        "    summary: s",
        "    reflection: r",
        "  ↩ backtrack to a",
        "Step 3",
        "    name: c",
        "    thought: t",
        "    summary: s",
        "    reflection: r",
        "Answer: 42",
    ]


def test_pretty_of_raw_text_lists_its_errors():
    text = pretty(GOOD.replace(PROCEED + "\n", ""))
    assert "Step 2" in text and "→ proceed" in text
    assert text.splitlines()[-2:] == ["Format errors (1):",
                                      f"  - missing_move at {GOOD.index(PROCEED)}: "
                                      "step_start right after step_end: proceed inserted"]
    assert pretty(parse(GOOD).trace) == pretty(GOOD)  # a clean text lists no errors
    assert "(no steps)" in pretty("")
    with pytest.raises(TypeError, match="Trace"):
        pretty(3)  # type: ignore[arg-type]


def test_public_api_is_exported():
    for name in ("parse", "ERROR_KINDS", "unique_step_names", "pretty", "labelled_name", "step_label",
                 "step_refs", "resolve_backtrack"):
        assert name in F.__all__ and hasattr(F, name)

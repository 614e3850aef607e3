"""Steiner's logits processor, its soft and budget variants, and the vLLM adapters (their pure parts, and
their glue on stand-ins for vLLM's base classes: vLLM itself is a GPU-only install).

Every rule is driven with crafted token sequences on a tokenizer trained here, checked against
`published_rule` (a plain transcription of the published reasoning_constraints written for this
test), and end to end on a tiny random Qwen2 model.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import ONE_LAYER, one_thread, tiny_qwen2  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

from steiner_lib import format as fmt  # noqa: E402
from steiner_lib.generation import constraints as C  # noqa: E402
from steiner_lib.generation import inference, lean_decode  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402

CORPUS = ["Using the numbers 3, 5, 7 and 25, which value can be made?", "25 × 3 = 75, then 75 + 7 = 82.",
          "Answer: B"]


@pytest.fixture(scope="module")
def tok():
    return modeling.train_bpe_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def ids(tok):
    return C.ReasoningTokenIds.from_tokenizer(tok)


def tid(tok, token: str) -> int:
    return tok.convert_tokens_to_ids(token)


def text_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def seq(tok, *parts: str) -> list[int]:
    """Token ids of a mix of special tokens and plain text pieces."""
    out: list[int] = []
    for p in parts:
        out += [tid(tok, p)] if p in fmt.SPECIAL_TOKENS else text_ids(tok, p)
    return out


def step_ids(tok, name="n", thought_tokens: int = 1) -> list[int]:
    """One complete step; its thought is `thought_tokens` copies of one plain token (to align row lengths)."""
    thought = text_ids(tok, "x")[:1] * thought_tokens
    return (seq(tok, fmt.STEP_START, fmt.NAME_START, name, fmt.NAME_END, fmt.THOUGHT_START) + thought
            + seq(tok, fmt.THOUGHT_END, fmt.SUMMARY_START, "s", fmt.SUMMARY_END, fmt.REFLECTION_START, "r",
                  fmt.REFLECTION_END, fmt.STEP_END))


def run(processor, tok, generated_rows: list[list[int]], prompts: list[str] | None = None, seed: int = 0):
    """Left-pad prompt + generated for each row, call the processor once; (scores before, scores after)."""
    prompts = prompts or ["Which one?"] * len(generated_rows)
    prompt_ids = [text_ids(tok, p) for p in prompts]
    width = max(len(p) for p in prompt_ids)
    # The rows of a real batch grow together: every row has generated as many tokens.
    assert len({len(g) for g in generated_rows}) == 1, "rows of one batch need as many generated tokens"
    rows = [[tok.pad_token_id] * (width - len(p)) + p + g for p, g in zip(prompt_ids, generated_rows)]
    input_ids = torch.tensor(rows)
    gen = torch.Generator().manual_seed(seed)
    before = torch.randn(len(rows), len(tok), generator=gen)
    if processor.prompt_length is None:
        processor.prompt_length = width
    after = processor(input_ids, before.clone())
    return before, after


def finite_tokens(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(row)).flatten().tolist())


def published_rule(gen: list[int], ids, min_steps: int, max_steps: int | None):
    """Steiner's published rule, transcribed on plain lists: (kind, tokens) or None."""
    if ids.end in gen:
        return None
    if not gen:
        return ("force", {ids.start})
    if gen[-1] == ids.step_end:
        done = gen.count(ids.step_end)
        if max_steps is not None and done >= max_steps:
            return ("force", {ids.end})
        if done < min_steps:
            return ("force", {ids.proceed})
        return None
    if gen[-1] == ids.proceed:
        return ("force", {ids.step_start})
    specials = [t for t in gen if t in ids.reasoning]
    if specials and specials[-1] == ids.backtrack:
        return ("forbid", set(ids.reasoning) - {ids.step_start})
    return None


# ------------------------------------------------------------------ token ids


def test_token_ids_come_from_the_tokenizer_and_round_trip_through_json(tok, ids):
    assert ids.start == tid(tok, fmt.REASONING_START) and ids.step_end == tid(tok, fmt.STEP_END)
    assert ids.reasoning == {tid(tok, t) for t in fmt.SPECIAL_TOKENS} and len(ids.reasoning) == 14
    assert ids.fields == tuple(tid(tok, t) for _, a, b in fmt.STEP_FIELDS for t in (a, b))
    assert {tok.decode([t]) for t in ids.blank} >= {"\n", " "} and all(tok.decode([t]).isspace() for t in ids.blank)
    assert C.ReasoningTokenIds.from_dict(json.loads(json.dumps(ids.to_dict()))) == ids


def test_a_tokenizer_without_the_reasoning_tokens_is_refused():
    class Plain:
        def get_vocab(self):
            return {"a": 0, "b": 1}

    with pytest.raises(ValueError, match="lacks 14 of the 14 reasoning tokens.*train_bpe_tokenizer"):
        C.ReasoningConstraints(Plain())
    with pytest.raises(ValueError, match="incomplete or not integers"):
        C.ReasoningTokenIds.from_dict({"start": 1})


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_steps=-1), "min_steps=-1"),
    (dict(min_steps=3, max_steps=2), "max_steps=2: need >= 1 and >= min_steps=3"),
    (dict(max_steps=0), "max_steps=0"),
    (dict(prompt_length=-2), "prompt_length=-2"),
])
def test_bad_settings_are_named(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.ReasoningConstraints(tok, **kwargs)


# ------------------------------------------------------------------ every rule of ReasoningConstraints


def test_the_first_generated_token_is_forced_to_reasoning_start(tok, ids):
    before, after = run(C.ReasoningConstraints(tok), tok, [[]])
    assert finite_tokens(after[0]) == {ids.start}
    assert after[0, ids.start] == before[0, ids.start]  # the forced token keeps its logit


def test_after_step_end_with_max_steps_done_reasoning_end_is_forced(tok, ids):
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed] + step_ids(tok)
    _, after = run(C.ReasoningConstraints(tok, min_steps=0, max_steps=2), tok, [gen])
    assert finite_tokens(after[0]) == {ids.end}
    _, after = run(C.ReasoningConstraints(tok, min_steps=0, max_steps=1), tok, [gen])  # more than max: still end
    assert finite_tokens(after[0]) == {ids.end}


def test_after_step_end_with_fewer_than_min_steps_proceed_is_forced(tok, ids):
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok)
    _, after = run(C.ReasoningConstraints(tok, min_steps=2, max_steps=5), tok, [gen])
    assert finite_tokens(after[0]) == {ids.proceed}


def test_after_step_end_between_min_and_max_the_model_chooses(tok, ids):
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed] + step_ids(tok)
    for min_steps, max_steps in [(0, 3), (2, 3), (1, None)]:
        before, after = run(C.ReasoningConstraints(tok, min_steps=min_steps, max_steps=max_steps), tok, [gen])
        assert torch.equal(before, after)


def test_after_proceed_step_start_is_forced(tok, ids):
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed]
    _, after = run(C.ReasoningConstraints(tok), tok, [gen])
    assert finite_tokens(after[0]) == {ids.step_start}


def test_after_backtrack_the_name_is_free_text_and_only_step_start_may_close_it(tok, ids):
    base = seq(tok, fmt.REASONING_START) + step_ids(tok, "first") + [ids.backtrack]
    for gen in (base, base + text_ids(tok, "first"), base + text_ids(tok, " QUESTION")):
        before, after = run(C.ReasoningConstraints(tok), tok, [gen])
        forbidden = ids.reasoning - {ids.step_start}
        assert all(after[0, t] == float("-inf") for t in forbidden)
        kept = [t for t in range(len(tok)) if t not in forbidden]
        assert torch.equal(after[0, kept], before[0, kept])  # name text and step_start untouched
    # Once the step_start has come, the new step is the model's again.
    before, after = run(C.ReasoningConstraints(tok), tok, [base + text_ids(tok, "first") + [ids.step_start]])
    assert torch.equal(before, after)


def test_inside_a_step_and_after_reasoning_end_the_model_chooses(tok, ids):
    inside = seq(tok, fmt.REASONING_START, fmt.STEP_START, fmt.NAME_START, "n", fmt.NAME_END, fmt.THOUGHT_START)
    done = seq(tok, fmt.REASONING_START) + step_ids(tok) + seq(tok, fmt.REASONING_END, "Answer: B")
    stray = done + [ids.step_end]  # even a stray step_end after reasoning_end is left alone
    for gen in (inside, done, stray):
        before, after = run(C.ReasoningConstraints(tok, min_steps=3, max_steps=3), tok, [gen])
        assert torch.equal(before, after)


def test_left_padded_rows_with_different_prompts_are_independent(tok, ids):
    start = seq(tok, fmt.REASONING_START)
    situations = [  # endings, before the first step's thought is padded to give every row the same length
        ([ids.proceed] + step_ids(tok) + [ids.proceed] + step_ids(tok), {ids.end}),  # 3 steps = max
        ([], {ids.proceed}),  # 1 step < min_steps=2
        ([ids.proceed], {ids.step_start}),
        ([ids.proceed] + step_ids(tok), None),  # 2 steps: free
        ([ids.backtrack] + text_ids(tok, "n"), "name"),
    ]
    longest = max(len(end) for end, _ in situations)
    situations = [(start + step_ids(tok, thought_tokens=1 + longest - len(end)) + end, expected)
                  for end, expected in situations]
    prompts = ["Which one?", "Using the numbers 3, 5, 7 and 25, which value can be made? Think.", "A", "25 × 3",
               "Answer: B"]
    gens = [g for g, _ in situations]
    before, after = run(C.ReasoningConstraints(tok, min_steps=2, max_steps=3), tok, gens, prompts)
    for r, (_, expected) in enumerate(situations):
        if expected is None:
            assert torch.equal(after[r], before[r])
        elif expected == "name":
            assert finite_tokens(after[r]) == set(range(len(tok))) - (ids.reasoning - {ids.step_start})
        else:
            assert finite_tokens(after[r]) == expected
        # the same row alone, with its own prompt width, decides the same
        alone_before, alone_after = run(C.ReasoningConstraints(tok, min_steps=2, max_steps=3), tok, [gens[r]],
                                        [prompts[r]])
        assert finite_tokens(alone_after[0]) == finite_tokens(after[r])


ALPHABET = st.sampled_from(list(fmt.SPECIAL_TOKENS) + ["x", "7"])


@given(st.lists(ALPHABET, max_size=40), st.integers(0, 3), st.one_of(st.none(), st.integers(0, 3)))
@settings(max_examples=150, deadline=None)
def test_processor_state_kept_across_calls_agrees_with_the_published_rule(tok, ids, pieces, min_steps, extra):
    max_steps = None if extra is None else max(min_steps, 1) + extra
    gen = [tid(tok, p) if p in fmt.SPECIAL_TOKENS else text_ids(tok, p)[0] for p in pieces]
    prompt = text_ids(tok, "Which one?")
    proc = C.ReasoningConstraints(tok, min_steps, max_steps)  # prompt width taken from the first call
    for k in range(len(gen) + 1):  # as model.generate calls it: one more column each time
        input_ids = torch.tensor([prompt + gen[:k]])
        scores = proc(input_ids, torch.zeros(1, len(tok)))
        expected = published_rule(gen[:k], ids, min_steps, max_steps)
        assert C.next_token_rule(gen[:k], ids, min_steps, max_steps) == (
            None if expected is None else C.Decision(expected[0], frozenset(expected[1])))
        if expected is None:
            assert torch.equal(scores, torch.zeros(1, len(tok)))
        elif expected[0] == "force":
            assert finite_tokens(scores[0]) == expected[1]
        else:
            assert finite_tokens(scores[0]) == set(range(len(tok))) - expected[1]


def test_one_processor_serves_successive_generate_calls(tok, ids):
    proc = C.ReasoningConstraints(tok, min_steps=1, max_steps=1)
    first = torch.tensor([text_ids(tok, "Which one?")])
    assert finite_tokens(proc(first, torch.zeros(1, len(tok)))[0]) == {ids.start}
    grown = torch.cat([first, torch.tensor([[ids.start]])], 1)
    assert torch.equal(proc(grown, torch.zeros(1, len(tok))), torch.zeros(1, len(tok)))
    # A new call: another batch size and width. The processor starts over with the new prompt width.
    new = torch.tensor([text_ids(tok, "Using the numbers 3, 5, 7 and 25") for _ in range(3)])
    scores = proc(new, torch.zeros(3, len(tok)))
    assert all(finite_tokens(scores[r]) == {ids.start} for r in range(3))


def test_a_prompt_length_wider_than_the_input_is_refused(tok):
    proc = C.ReasoningConstraints(tok, prompt_length=50)
    with pytest.raises(ValueError, match="prompt_length=50 but input_ids has only 3 columns"):
        proc(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, len(tok)))


# ------------------------------------------------------------------ soft bias


def test_soft_bias_adds_exactly_the_bias_to_the_favoured_token(tok, ids):
    start = seq(tok, fmt.REASONING_START)
    cases = [
        ([], {ids.start}, +1),
        (start + step_ids(tok), {ids.proceed}, +1),  # min_steps=2
        (start + step_ids(tok) + [ids.proceed], {ids.step_start}, +1),
        (start + step_ids(tok) + [ids.backtrack], ids.reasoning - {ids.step_start}, -1),
        (start + step_ids(tok) + [ids.proceed] + step_ids(tok), set(), 0),  # free
    ]
    for gen, favoured, sign in cases:
        before, after = run(C.SoftReasoningBias(tok, min_steps=2, max_steps=4, bias=2.5), tok, [gen])
        expected = before[0].clone()
        for t in favoured:
            expected[t] += sign * 2.5
        assert torch.equal(after[0], expected)
    # The step-end decision a trained model takes one token later, after the format's newline: the bias is there too.
    newline = text_ids(tok, "\n")
    before, after = run(C.SoftReasoningBias(tok, min_steps=2, bias=2.5), tok, [start + step_ids(tok) + newline])
    expected = before[0].clone()
    expected[ids.proceed] += 2.5
    assert torch.equal(after[0], expected)
    with pytest.raises(ValueError, match="bias=0"):
        C.SoftReasoningBias(tok, bias=0)


# ------------------------------------------------------------------ budget forcing


def test_budget_forcing_rules(tok, ids):
    start = seq(tok, fmt.REASONING_START)
    mid_step = start + step_ids(tok)[:-1]  # inside a step, right after its reflection_end
    after_step = start + step_ids(tok)
    newline = text_ids(tok, "\n")
    n_mid, n_after = len(mid_step), len(after_step)

    # Below the minimum: reasoning_end forbidden; after a step_end (and its newline) only a move may follow.
    _, after = run(C.BudgetForcing(tok, min_reasoning_tokens=n_after + 5), tok, [mid_step])
    assert finite_tokens(after[0]) == set(range(len(tok))) - {ids.end}
    for gen in (after_step, after_step + newline):
        _, after = run(C.BudgetForcing(tok, min_reasoning_tokens=n_after + 5), tok, [gen])
        assert finite_tokens(after[0]) == {ids.proceed, ids.backtrack}
    # Reached the minimum, no maximum: free.
    before, after = run(C.BudgetForcing(tok, min_reasoning_tokens=n_after), tok, [after_step])
    assert torch.equal(before, after)

    # At the maximum, within the grace: the model finishes its step, but may not end the reasoning mid-step.
    _, after = run(C.BudgetForcing(tok, max_reasoning_tokens=n_mid - 2, grace_tokens=10), tok, [mid_step])
    assert finite_tokens(after[0]) == set(range(len(tok))) - {ids.end}
    # ... and right after a step_end (or its newline) the end is forced.
    for gen in (after_step, after_step + newline):
        _, after = run(C.BudgetForcing(tok, max_reasoning_tokens=n_after - 3, grace_tokens=10), tok, [gen])
        assert finite_tokens(after[0]) == {ids.end}
    # Past the maximum plus the grace: the step is closed for the model (here its step_end), then the end.
    _, after = run(C.BudgetForcing(tok, max_reasoning_tokens=n_mid - 2, grace_tokens=2), tok, [mid_step])
    assert finite_tokens(after[0]) == {ids.step_end}
    thought = start + step_ids(tok, thought_tokens=3)[:6]  # inside the thought, its text begun
    _, after = run(C.BudgetForcing(tok, max_reasoning_tokens=2, grace_tokens=0), tok, [thought])
    assert finite_tokens(after[0]) == {tid(tok, fmt.THOUGHT_END)}
    # After reasoning_end: nothing (the answer is free text), whatever the budget.
    done = after_step + seq(tok, fmt.REASONING_END, "Answer")
    before, after = run(C.BudgetForcing(tok, min_reasoning_tokens=500, max_reasoning_tokens=600), tok, [done])
    assert torch.equal(before, after)
    before, after = run(C.BudgetForcing(tok, max_reasoning_tokens=1, grace_tokens=0), tok, [done])
    assert torch.equal(before, after)


def close(tok, ids, gen: list[int], rest: list[int]) -> tuple[list[int], int]:
    """`gen` closed by closing_token, the model writing on from `rest` while a backtrack target is
    being written; (the closed ids, the tokens forced)."""
    gen, rest, forced = list(gen), list(rest), 0
    while ids.end not in gen:
        token = C.closing_token(C.scan(gen, ids), ids)
        if token is None:  # a backtrack target: the model finishes it, up to its own step_start
            gen.append(rest.pop(0))
            continue
        gen.append(token)
        forced += 1
    return gen, forced


def trace_ids(tok) -> list[int]:
    """A well-formed output as the format renders it: three steps, a backtrack to Step 1, newlines."""
    steps = [fmt.Step("Step 1: 25 × 3", "75", "75, 5, 7", "ok"), fmt.Step("Step 2: 75 + 5", "80", "80, 7", "no"),
             fmt.Step("Step 2: 75 + 7", "82 is it", "82, 5", "yes")]
    text = fmt.render(fmt.Trace(tuple(steps), ("proceed", fmt.Backtrack("Step 1")), "Answer: B"))
    assert fmt.parse(text).ok
    return tok(text, add_special_tokens=False)["input_ids"]


def test_closing_from_any_point_of_an_output_gives_an_output_that_parses(tok, ids):
    full = trace_ids(tok)
    end_at = full.index(ids.end)
    kinds = set()
    for k in range(end_at + 1):  # every point of the reasoning, up to its reasoning_end
        closed, forced = close(tok, ids, full[:k], full[k:])
        text = tok.decode(closed + text_ids(tok, "\nAnswer: B"), skip_special_tokens=False)
        result = fmt.parse(text)
        assert result.ok, (k, tok.decode(full[:k], skip_special_tokens=False), result.errors)
        assert forced <= fmt.MAX_CLOSING_TOKENS
        kinds.add(C.scan(full[:k], ids).last_reasoning_token)
    assert kinds == {None} | (ids.reasoning - {ids.end})  # cut before any reasoning token and after each other
    assert C.closing_token(C.scan(seq(tok, fmt.REASONING_START), ids), ids) == ids.step_start
    with pytest.raises(ValueError, match="lack the field tokens"):
        C.closing_token(C.ReasoningState(), C.ReasoningTokenIds(*[ids.start] * 6, ids.reasoning))


def test_right_after_a_token_means_only_whitespace_came_since(tok, ids):
    newline = text_ids(tok, "\n")
    assert len(newline) == 1 and newline[0] in ids.blank and not ids.blank & ids.reasoning
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok)
    for tail, expected in ((newline, C.force(ids.proceed)), (newline * 2, C.force(ids.proceed)),
                           (text_ids(tok, "x"), None), (newline + text_ids(tok, "x") + newline, None)):
        assert C.next_token_rule(gen + tail, ids, min_steps=2, max_steps=None) == expected
    proceed = gen + [ids.proceed] + newline
    assert C.next_token_rule(proceed, ids, 0, None) == C.force(ids.step_start)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_reasoning_tokens=10, max_reasoning_tokens=5), "min_reasoning_tokens=10 > max_reasoning_tokens=5"),
    (dict(max_reasoning_tokens=0), "max_reasoning_tokens=0"),
    (dict(min_reasoning_tokens=-1), "min_reasoning_tokens=-1"),
    (dict(grace_tokens=-1), "grace_tokens=-1"),
])
def test_bad_budgets_are_named(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.BudgetForcing(tok, **kwargs)


def test_when_processors_disagree_no_row_is_left_without_a_finite_logit(tok, ids):
    # ReasoningConstraints forces the end (max_steps=1), BudgetForcing (last) wants a move: the move wins.
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok)
    both = LogitsProcessorList([C.ReasoningConstraints(tok, 0, 1), C.BudgetForcing(tok, min_reasoning_tokens=100)])
    prompt = text_ids(tok, "Which one?")
    for p in both:
        p.prompt_length = len(prompt)
    scores = both(torch.tensor([prompt + gen]), torch.randn(1, len(tok)))
    assert finite_tokens(scores[0]) == {ids.proceed, ids.backtrack}
    # A forbid that would leave nothing is skipped: the earlier force stands.
    row = torch.full((len(tok),), float("-inf"))
    row[ids.end] = 1.0
    C.apply_hard(row, C.Decision("forbid", frozenset({ids.end})))
    assert finite_tokens(row) == {ids.end}


# ------------------------------------------------------------------ the published per-request form


def test_the_per_request_function_reads_only_new_tokens_and_restarts_on_a_shorter_list(tok, ids):
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed] + step_ids(tok) + [ids.backtrack] + \
        text_ids(tok, "n") + [ids.step_start]
    fn = C.reasoning_constraints(tok, min_steps=1, max_steps=3)
    for k in list(range(len(gen) + 1)) + [0, 5, len(gen)]:  # growing, then a restart
        logits = torch.zeros(len(tok))
        out = fn(gen[:k], logits)
        expected = published_rule(gen[:k], ids, 1, 3)
        if expected is None:
            assert torch.equal(out, torch.zeros(len(tok)))
        elif expected[0] == "force":
            assert finite_tokens(out) == expected[1]
        else:
            assert finite_tokens(out) == set(range(len(tok))) - expected[1]


# ------------------------------------------------------------------ vLLM adapters (pure parts)


def test_request_extra_args_are_json_and_read_back(tok, ids):
    extra = json.loads(json.dumps(C.request_extra_args(tok, min_steps=2, max_steps=6)))
    config = C.config_from_extra_args(extra)
    assert config == C.RequestConfig(ids, 2, 6)
    assert C.config_from_extra_args(None) is None and C.config_from_extra_args({"other": 1}) is None
    with pytest.raises(ValueError, match="request_extra_args"):
        C.config_from_extra_args({C.EXTRA_ARGS_KEY: {"min_steps": 1}})
    bad = json.loads(json.dumps(extra))
    bad[C.EXTRA_ARGS_KEY]["max_steps"] = 0
    with pytest.raises(ValueError, match="max_steps=0"):
        C.config_from_extra_args(bad)


class FakeHistory:
    """Committed token ids per slot, and a log of the ranges read (to check the caching)."""

    def __init__(self, prompts: dict[int, list[int]], generated: dict[int, list[int]]):
        self.tokens = {s: prompts[s] + generated[s] for s in prompts}
        self.prompt = {s: len(p) for s, p in prompts.items()}
        self.reads: list[tuple[int, int, int]] = []

    def read(self, slot, a, b):
        self.reads.append((slot, a, b))
        return self.tokens[slot][a:b]


def test_slot_tracker_matches_the_rule_without_and_with_speculative_drafts(tok, ids):
    tracker = C.SlotTracker()
    cfg = C.RequestConfig(ids, 1, 2)
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed]
    prompts = {3: text_ids(tok, "Which one?"), 7: text_ids(tok, "25 × 3"), 9: text_ids(tok, "A")}
    history = FakeHistory(prompts, {3: list(gen), 7: [], 9: list(gen)})
    assert tracker.add(3, cfg) and tracker.add(7, cfg) and not tracker.add(9, None)

    def step(rows):  # rows: (slot, pos, fed token); committed length = len(history)
        return dict(tracker.decisions(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            prompt_len=lambda s: history.prompt[s], committed_len=lambda s: len(history.tokens[s]),
            read_committed=history.read))

    last3 = len(history.tokens[3]) - 1
    last7 = len(history.tokens[7]) - 1
    got = step([(7, last7, history.tokens[7][-1]), (3, last3, ids.proceed), (9, 0, 0)])  # rows reordered
    assert got == {0: C.force(ids.start), 1: C.force(ids.step_start)}  # slot 9 is not tracked
    # Next step: slot 3 committed its step_start; nothing before it is read again.
    history.tokens[3].append(ids.step_start)
    history.reads.clear()
    assert step([(3, last3 + 1, ids.step_start)]) == {}
    assert history.reads == [(3, last3 + 1, last3 + 2)]
    # Speculative decoding: slot 3 owns three rows; two draft tokens are only in this step's input.
    body = step_ids(tok)[1:]  # the rest of a step, up to its step_end
    history.tokens[3] += body[:-2]
    p = len(history.tokens[3]) - 1
    rows = [(3, p, history.tokens[3][-1]), (3, p + 1, body[-2]), (3, p + 2, body[-1])]  # body[-1] = step_end
    got = step(rows)
    # Row 2 sees the draft step_end: 2 steps done = max_steps, so the end is forced there only.
    assert got == {2: C.force(ids.end)}
    visible = history.tokens[3][history.prompt[3]:] + body[-2:]
    assert C.next_token_rule(visible, ids, 1, 2) == C.force(ids.end)
    # Drafts were not folded into the cached state: a rejected draft leaves no trace.
    assert step([(3, p, history.tokens[3][-1])]) == {}
    # A recycled slot starts fresh.
    tracker.add(3, cfg)
    history.tokens[3] = prompts[3][:]
    assert step([(3, len(prompts[3]) - 1, prompts[3][-1])]) == {0: C.force(ids.start)}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_adapter_says_how_to_install_it(tok):
    with pytest.raises(ImportError, match=r"GPU machine, `pip install \.\[gpu\]`"):
        C.vllm_reasoning_constraints(tok, 1, 4)
    with pytest.raises(ImportError, match=r"pip install \.\[gpu\]"):
        C.VLLMReasoningConstraints  # noqa: B018  (built on first access)
    with pytest.raises(AttributeError):
        C.no_such_name  # noqa: B018


@pytest.fixture
def fake_vllm(monkeypatch):
    """Stand-ins for the vLLM modules the adapters subclass (the interfaces of vLLM >= 0.32), so the
    adapters' glue runs here; the classes built from them are dropped afterwards."""
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    class V2Base:  # vllm.v1.worker.gpu.sample.logits_processor.interface.LogitsProcessor
        def __init__(self, vllm_config, req_states):
            pass

    class AdapterBase:  # vllm.v1.sample.logits_processor.AdapterLogitsProcessor
        def __init__(self, vllm_config, device, is_pin_memory):
            pass

    for name in ("vllm", "vllm.v1", "vllm.v1.worker", "vllm.v1.worker.gpu", "vllm.v1.worker.gpu.sample",
                 "vllm.v1.worker.gpu.sample.logits_processor", "vllm.v1.sample"):
        module(name)
    module("vllm.v1.worker.gpu.sample.logits_processor.interface", LogitsProcessor=V2Base, LogitsContext=object)
    module("vllm.v1.sample.logits_processor", AdapterLogitsProcessor=AdapterBase)
    for name in ("VLLMReasoningConstraints", "VLLMReasoningConstraintsV1"):
        monkeypatch.delitem(C.__dict__, name, raising=False)
    yield
    for name in ("VLLMReasoningConstraints", "VLLMReasoningConstraintsV1"):
        C.__dict__.pop(name, None)


def test_vllm_spec_picks_the_runner_and_names_an_importable_class(tok, fake_vllm, monkeypatch):
    spec = C.vllm_reasoning_constraints(tok, 1, 4)
    assert spec.runner == "v2" and spec.logits_processor == "steiner_lib.generation.constraints:VLLMReasoningConstraints"
    assert C.config_from_extra_args(spec.extra_args) == C.RequestConfig(C.ReasoningTokenIds.from_tokenizer(tok), 1, 4)
    module, name = spec.logits_processor.split(":")
    cls = getattr(importlib.import_module(module), name)  # as vLLM's loader resolves it
    assert issubclass(cls, sys.modules["vllm.v1.worker.gpu.sample.logits_processor.interface"].LogitsProcessor)
    assert (cls.__module__, cls.__qualname__) == ("steiner_lib.generation.constraints", "VLLMReasoningConstraints")
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    assert C.vllm_reasoning_constraints(tok, 1, 4).logits_processor.endswith(":VLLMReasoningConstraintsV1")
    with pytest.raises(ValueError, match="runner='v3'"):
        C.vllm_reasoning_constraints(tok, runner="v3")


def test_vllm_v2_adapter_glue_on_stand_in_request_state(tok, ids, fake_vllm):
    class Buffer:  # vLLM's UvaBackedTensor / StagedWriteTensor: .gpu (device) and .np (host) views
        def __init__(self, t):
            self.gpu, self.np = t, t.numpy()

    prompt = text_ids(tok, "Which one?")
    gen = seq(tok, fmt.REASONING_START) + step_ids(tok) + [ids.proceed] + step_ids(tok)  # 2 steps
    history = torch.zeros(4, 64, dtype=torch.long)
    history[2, :len(prompt) + len(gen)] = torch.tensor(prompt + gen)
    history[0, :len(prompt)] = torch.tensor(prompt)
    req_states = types.SimpleNamespace(
        prompt_len=Buffer(torch.tensor([len(prompt), 0, len(prompt), 0])),
        total_len=Buffer(torch.tensor([len(prompt), 0, len(prompt) + len(gen), 0])),
        all_token_ids=Buffer(history))
    proc = C.VLLMReasoningConstraints(None, req_states)
    with pytest.raises(ValueError, match="max_steps=0"):
        bad = C.request_extra_args(tok, 0, 1)
        bad[C.EXTRA_ARGS_KEY]["max_steps"] = 0
        proc.validate_params(types.SimpleNamespace(extra_args=bad))
    assert proc.add_request(2, types.SimpleNamespace(extra_args=C.request_extra_args(tok, 1, 2)))
    assert proc.add_request(0, types.SimpleNamespace(extra_args=C.request_extra_args(tok, 1, 2)))
    assert not proc.add_request(1, types.SimpleNamespace(extra_args=None))
    ctx = types.SimpleNamespace(  # rows in another order than the slots; slot 1 does not use the constraints
        expanded_idx_mapping=torch.tensor([1, 2, 0]), idx_mapping_np=np.array([1, 2, 0]),
        pos=torch.tensor([5, len(prompt) + len(gen) - 1, len(prompt) - 1]),
        input_ids=torch.tensor([9, gen[-1], prompt[-1]]))
    before = torch.randn(3, len(tok))
    after = proc.apply(before.clone(), ctx)
    assert torch.equal(after[0], before[0])
    assert finite_tokens(after[1]) == {ids.end}  # 2 steps done = max_steps
    assert finite_tokens(after[2]) == {ids.start}  # nothing generated yet


def test_vllm_v1_adapter_returns_the_published_per_request_function(tok, ids, fake_vllm):
    proc = C.VLLMReasoningConstraintsV1(None, "cpu", False)
    assert proc.is_argmax_invariant() is False
    assert proc.new_req_logits_processor(types.SimpleNamespace(extra_args=None)) is None
    fn = proc.new_req_logits_processor(types.SimpleNamespace(extra_args=C.request_extra_args(tok, 0, 3)))
    assert finite_tokens(fn([], torch.zeros(len(tok)))) == {ids.start}


# ------------------------------------------------------------------ end to end on a tiny random Qwen2


def violations(gen: list[int], ids, min_steps: int, max_steps: int) -> tuple[list[str], dict]:
    """Where a generated sequence breaks the rules the processor controls, and which rules were met."""
    bad, met = [], {"forced_end": 0, "forced_proceed": 0, "after_proceed": 0, "name_tokens": 0}
    if gen and gen[0] != ids.start:
        bad.append("first token is not reasoning_start")
    steps, in_name = 0, False
    for i, t in enumerate(gen):
        prev = gen[i - 1] if i else None
        if prev == ids.end or ids.end in gen[:i]:
            break
        if prev == ids.step_end and steps >= max_steps:
            met["forced_end"] += 1
            bad += [] if t == ids.end else [f"{i}: step {steps} of max {max_steps} not followed by reasoning_end"]
        elif prev == ids.step_end and steps < min_steps:
            met["forced_proceed"] += 1
            bad += [] if t == ids.proceed else [f"{i}: {steps} steps < min {min_steps} not followed by proceed"]
        if prev == ids.proceed:
            met["after_proceed"] += 1
            bad += [] if t == ids.step_start else [f"{i}: proceed not followed by step_start"]
        if in_name:
            if t in ids.reasoning and t != ids.step_start:
                bad.append(f"{i}: reasoning token inside a backtrack's name")
            met["name_tokens"] += t not in ids.reasoning
        steps += t == ids.step_end
        if t == ids.backtrack:
            in_name = True
        elif t == ids.step_start:
            in_name = False
    return bad, met


class Booster(LogitsProcessor):
    """Makes a random model write reasoning tokens often (and never stop), so every rule gets exercised."""

    def __init__(self, ids, eos: int, boost: float = 3.0):
        self.index, self.eos, self.boost = torch.tensor(sorted(ids.reasoning)), eos, boost

    def __call__(self, input_ids, scores):
        scores[:, self.index] += self.boost
        scores[:, self.eos] = float("-inf")
        return scores


@pytest.fixture(scope="module")
def tiny(tok):
    return tiny_qwen2(tok, **ONE_LAYER)


PROMPTS = ["Which one?", "Using the numbers 3, 5, 7 and 25, which value can be made?", "25 × 3 = 75", "A",
           "Answer: B", "then 75 + 7 = 82."]


def generate_ids(tiny, tok, processors, seed=0, max_new_tokens=80, engine="transformers"):
    """Sampled ids of PROMPTS by model.generate ("transformers") or lean_decode's loop ("lean")."""
    enc = tok([modeling.chat_text(p) for p in PROMPTS], return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    with one_thread(), torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(seed)
        if engine == "lean":
            out = lean_decode.generate_ids(tiny, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                                           tok.eos_token_id, tok.pad_token_id, temperature=1.0,
                                           logits_processor=processors)
        else:
            out = tiny.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, top_k=0,
                                logits_processor=LogitsProcessorList(processors), pad_token_id=tok.pad_token_id)
    return out[:, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("engine", ["transformers", "lean"])
def test_generate_with_the_processor_obeys_every_rule_it_controls(tiny, tok, ids, engine):
    met_total: dict[str, int] = {}
    # (1, 2) as the brief has it; with min_steps=1 a proceed is never forced (the first step_end makes
    # one step done), so (2, 3) puts that rule to the test.
    for seed, (min_steps, max_steps) in enumerate([(1, 2), (2, 3)]):
        processors = [Booster(ids, tok.eos_token_id), C.ReasoningConstraints(tok, min_steps, max_steps)]
        for gen in generate_ids(tiny, tok, processors, seed, engine=engine):
            bad, met = violations(gen, ids, min_steps, max_steps)
            assert bad == [], (bad, tok.decode(gen))
            for k, v in met.items():
                met_total[k] = met_total.get(k, 0) + v
    assert all(v > 0 for v in met_total.values()), met_total  # every rule was actually put to the test
    # The same model and booster without the processor break the rules: the check above can fail.
    rows = generate_ids(tiny, tok, [Booster(ids, tok.eos_token_id)], 0, engine=engine)
    assert any(violations(gen, ids, 1, 2)[0] for gen in rows)


def test_inference_generate_reuses_one_processor_across_batches(tiny, tok, ids):
    proc = C.ReasoningConstraints(tok, min_steps=1, max_steps=2)
    with one_thread():
        texts = inference.generate(tiny, tok, [modeling.chat_text(p) for p in PROMPTS], max_new_tokens=40,
                                   temperature=1.0, batch_size=4, seed=3,
                                   logits_processor=[Booster(ids, tok.eos_token_id), proc], progress=False)
    assert len(texts) == len(PROMPTS)
    for [text] in texts:  # two model.generate calls (batches of 4 and 2), one processor
        assert text.startswith(fmt.REASONING_START)
        gen = tok(text, add_special_tokens=False)["input_ids"]
        assert violations(gen, ids, 1, 2)[0] == []


class Writer(LogitsProcessor):
    """A model that writes the format correctly and never ends its reasoning by itself: it adds a
    large logit to the next token of a well-formed output (steps named "n x", thoughts of a length that
    varies with row and step, a backtrack to "n x" every third step, the format's newlines), so only
    the processors after it decide where the reasoning ends; after reasoning_end it writes the answer
    and eos."""

    def __init__(self, tok, ids, prompt_length: int):
        self.tok, self.ids, self.prompt_length = tok, ids, prompt_length
        self.nl, self.name, self.x = text_ids(tok, "\n")[0], text_ids(tok, "n x"), text_ids(tok, "x")[0]
        self.answer = text_ids(tok, "\nAnswer: B") + [tok.eos_token_id]
        self.sequence = (ids.step_start, *ids.fields, ids.step_end)

    def next_token(self, row: int, gen: list[int]) -> int:
        ids, state = self.ids, C.scan(gen, self.ids)
        last = state.last_reasoning_token
        since = len(gen) - 1 - max((i for i, t in enumerate(gen) if t in ids.reasoning), default=-1)
        if last is None:
            return ids.start
        if state.ended:
            return self.answer[min(since, len(self.answer) - 1)]
        if last in (ids.start, ids.proceed):
            return self.nl if since == 0 else ids.step_start
        if last == ids.backtrack:
            return self.name[since] if since < len(self.name) else ids.step_start
        if last == ids.step_end:
            if since == 0:
                return self.nl
            return ids.backtrack if state.steps_done % 3 == 2 else ids.proceed
        k = self.sequence.index(last)
        if last in ids.fields and k % 2 == 1:  # a field just opened: its text, then its end token
            length = len(self.name) if last == ids.fields[0] else 1 + (row + 2 * state.steps_done + k) % 5
            return (self.name[since] if last == ids.fields[0] else self.x) if since < length else self.sequence[k + 1]
        return self.sequence[k + 1]

    def __call__(self, input_ids, scores):
        for r, row in enumerate(input_ids[:, self.prompt_length:].tolist()):
            scores[r, self.next_token(r, row)] += 1000.0
        return scores


@pytest.mark.parametrize("engine", ["transformers", "lean"])
def test_every_budget_forced_output_parses(tiny, tok, ids, engine):
    """With a writer that never ends by itself, budget forcing (as scaling.budget_factory combines it) ends
    every output, at every budget and grace, and every output parses: the forcing adds no format error."""
    from steiner_lib.evaluation import scaling

    enc = tok([modeling.chat_text(p) for p in PROMPTS], return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    cut_after = set()
    for budget in range(2, 41, 3):
        for grace in (0, 2, 5):
            processors = [Writer(tok, ids, width), *scaling.budget_factory(tok, budget, grace)(width)]
            for gen in generate_ids(tiny, tok, processors, seed=budget, max_new_tokens=80, engine=engine):
                text = tok.decode(gen, skip_special_tokens=False).replace(tok.eos_token, "")
                result = fmt.parse(text)
                assert result.ok, (budget, grace, text, result.errors)
                reasoning = gen.index(ids.end)
                assert reasoning <= budget + grace + fmt.MAX_CLOSING_TOKENS + len(text_ids(tok, "n x"))
                state = C.scan(gen[:budget + grace], ids)  # where the forcing takes over, unless a step ended first
                if not state.ended:
                    cut_after.add(state.last_reasoning_token)
    # the budget fell at every kind of point: inside each field, between fields, at a step end, after a
    # move, and while a backtrack's target was being written
    assert cut_after >= set(ids.fields) | {ids.step_start, ids.step_end, ids.proceed, ids.backtrack}, cut_after

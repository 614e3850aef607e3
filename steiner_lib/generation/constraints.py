"""Steiner's logits processor (`reasoning_constraints`), a soft-bias variant and budget forcing.

The published rule (a vLLM per-request function released with peakji/steiner-32b-preview),
read on the GENERATED tokens only:

- the first generated token is forced to <|reasoning_start|>;
- right after a <|reasoning_step_end|>: once `max_steps` steps are done, force <|reasoning_end|>;
  while fewer than `min_steps` are done, force <|reasoning_proceed|>; otherwise the model chooses;
- right after <|reasoning_proceed|>, force <|reasoning_step_start|>;
- after <|reasoning_backtrack|>: the published processor forced <|reasoning_step_start|> at once,
  but it predates named backtracks. Here a backtrack is followed by the NAME of the step it
  returns to (format.py), so the model writes the name freely and none of the 14 reasoning
  tokens but <|reasoning_step_start|> is allowed until that token comes;
- elsewhere, and once <|reasoning_end|> has been generated, the model chooses.

"Right after" a token means: it is the latest of the 14 reasoning tokens and only whitespace came
after it. The format writes a newline after every step_end and every move (format.render), so a
trained model's next token after step_end is almost surely that newline (the smoke and default
checkpoints: P(newline) = 1.000), and its choice among proceed, backtrack and reasoning_end comes
one token later. Hard forcing acts at the first of these positions, so it is the published rule
to the token; a soft nudge (SoftReasoningBias) the model declines there, by writing the newline,
meets the decision again where it is really taken. (Before this was read so, the soft bias never
reached a step-end decision and its rows at every min_steps were the free outputs.)

"Steps done" is the number of <|reasoning_step_end|> generated so far. Forcing sets every other
logit to -inf (not torch.finfo.min): exp(-inf) is exactly 0, so the forced token has probability
exactly 1 under any temperature, top-p or bias a later stage adds, and -inf is what transformers'
own suppressing processors and vLLM's examples use.

One rule, several front ends. The rule is pure: a `ReasoningState` (a five-number summary of
the generated tokens, updated one token at a time) goes into `reasoning_rule` or `budget_rule`,
and a `Decision` ("force", "allow" or "forbid" a set of token ids) comes out. The transformers
processors (`ReasoningConstraints`, `SoftReasoningBias`, `BudgetForcing`), the published
per-request form (`reasoning_constraints`) and the vLLM adapters all call the same functions.

Where the generation starts (transformers passes prompt + generated columns): pass
`prompt_length` (with left padding every row's completion starts at the padded prompt width;
inference.generate's factory form hands it over), or leave it None and the processor takes the
width of the first input_ids it sees, which model.generate passes before the first new token.
A processor notices a new generate call (its input is not its last input plus one column) and
starts over, so one instance can serve many calls. Between calls it keeps each row's state and
reads only the newest column: a call costs O(batch), not O(generated length).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import torch
from transformers import LogitsProcessor

from steiner_lib import format as fmt

NEG_INF = float("-inf")


# --------------------------------------------------------------------------- token ids


@dataclass(frozen=True)
class ReasoningTokenIds:
    """The ids of the structural tokens the rules use, and of all 14 reasoning tokens."""

    start: int
    end: int
    proceed: int
    backtrack: int
    step_start: int
    step_end: int
    reasoning: frozenset[int]  # all 14
    fields: tuple[int, ...] = ()  # name_start, name_end, thought_start, ..., reflection_end (format.STEP_FIELDS)
    blank: frozenset[int] = frozenset()  # tokens that decode to whitespace only (the format's newlines)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ReasoningTokenIds":
        missing = [t for t in fmt.SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"the tokenizer lacks {len(missing)} of the 14 reasoning tokens, e.g. {missing[0]}: "
                             f"load it with modeling.load_tokenizer or train it with modeling.train_bpe_tokenizer")
        return _ids_of(tokenizer, len(tokenizer))

    def to_dict(self) -> dict:
        """JSON-able form (vLLM passes per-request settings as JSON `extra_args`)."""
        return {"start": self.start, "end": self.end, "proceed": self.proceed, "backtrack": self.backtrack,
                "step_start": self.step_start, "step_end": self.step_end, "reasoning": sorted(self.reasoning),
                "fields": list(self.fields), "blank": sorted(self.blank)}

    @classmethod
    def from_dict(cls, d: dict) -> "ReasoningTokenIds":
        names = ("start", "end", "proceed", "backtrack", "step_start", "step_end")
        try:
            values = [int(d[k]) for k in names]
            reasoning = frozenset(int(t) for t in d["reasoning"])
            fields = tuple(int(t) for t in d.get("fields", ()))
            blank = frozenset(int(t) for t in d.get("blank", ()))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"token ids {d!r} are incomplete or not integers ({e!r}): build them with "
                             f"ReasoningTokenIds.from_tokenizer(tokenizer).to_dict()") from None
        if len(reasoning) != 14 or not set(values) <= reasoning:
            raise ValueError(f"token ids {d!r}: 'reasoning' must hold the 14 distinct reasoning token ids, "
                             f"including the six named ones")
        if fields and (len(fields) != 2 * len(fmt.STEP_FIELDS) or not set(fields) <= reasoning or blank & reasoning):
            raise ValueError(f"token ids {d!r}: 'fields' must be the {2 * len(fmt.STEP_FIELDS)} field tokens in "
                             f"format order and 'blank' must hold no reasoning token")
        return cls(*values, reasoning, fields, blank)


@lru_cache(maxsize=8)
def _ids_of(tokenizer, vocab_size: int) -> ReasoningTokenIds:
    """ReasoningTokenIds of a tokenizer, made once per tokenizer (and size): a processor is made per
    batch, and finding the whitespace tokens decodes the whole vocabulary (about 0.6 s at 150k)."""
    vocab = tokenizer.get_vocab()
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    blank = frozenset(i for i, t in enumerate(texts) if t and t.isspace())
    fields = tuple(vocab[t] for _, start, end in fmt.STEP_FIELDS for t in (start, end))
    return ReasoningTokenIds(vocab[fmt.REASONING_START], vocab[fmt.REASONING_END], vocab[fmt.PROCEED],
                             vocab[fmt.BACKTRACK], vocab[fmt.STEP_START], vocab[fmt.STEP_END],
                             frozenset(vocab[t] for t in fmt.SPECIAL_TOKENS), fields,
                             blank - frozenset(vocab[t] for t in fmt.SPECIAL_TOKENS))


def _token_ids(tokenizer_or_ids) -> ReasoningTokenIds:
    if isinstance(tokenizer_or_ids, ReasoningTokenIds):
        return tokenizer_or_ids
    return ReasoningTokenIds.from_tokenizer(tokenizer_or_ids)


# --------------------------------------------------------------------------- state and rules


@dataclass(frozen=True)
class ReasoningState:
    """What the rules need to know about the tokens generated so far."""

    n_tokens: int = 0  # generated so far
    steps_done: int = 0  # <|reasoning_step_end|> generated so far
    ended: bool = False  # <|reasoning_end|> generated
    last_token: int | None = None
    last_reasoning_token: int | None = None  # the latest of the 14 reasoning tokens
    text_since: bool = False  # a token other than whitespace came after last_reasoning_token

    def advance(self, tokens: Sequence[int], ids: ReasoningTokenIds) -> "ReasoningState":
        """The state after `tokens` more were generated."""
        if not len(tokens):
            return self
        n, steps, ended, last_reasoning = self.n_tokens, self.steps_done, self.ended, self.last_reasoning_token
        text_since = self.text_since
        for t in tokens:
            if t in ids.reasoning:
                last_reasoning, text_since = t, False
                if t == ids.step_end:
                    steps += 1
                elif t == ids.end:
                    ended = True
            elif t not in ids.blank:
                text_since = True
        return ReasoningState(n + len(tokens), steps, ended, int(tokens[-1]), last_reasoning, text_since)

    def right_after(self, token: int) -> bool:
        """Is `token` the latest reasoning token, with only whitespace after it (see the module docstring)?"""
        return self.last_reasoning_token == token and not self.text_since


def scan(generated_ids: Sequence[int], ids: ReasoningTokenIds) -> ReasoningState:
    return ReasoningState().advance(list(generated_ids), ids)


class Decision(NamedTuple):
    """What to do with the next token's logits: "force" one token, "allow" only a set, "forbid" a set."""

    kind: str
    tokens: frozenset[int]


def force(token: int) -> Decision:
    return Decision("force", frozenset({token}))


def check_steps(min_steps: int, max_steps: int | None) -> None:
    if min_steps < 0:
        raise ValueError(f"min_steps={min_steps}: need >= 0")
    if max_steps is not None and (max_steps < 1 or max_steps < min_steps):
        raise ValueError(f"max_steps={max_steps}: need >= 1 and >= min_steps={min_steps} (or None: no cap)")


def reasoning_rule(state: ReasoningState, ids: ReasoningTokenIds, min_steps: int = 0,
                   max_steps: int | None = 10) -> Decision | None:
    """Steiner's reasoning_constraints(min_steps, max_steps) for the next token; None = the model chooses."""
    if state.ended:
        return None
    if state.n_tokens == 0:
        return force(ids.start)
    if state.right_after(ids.step_end):
        if max_steps is not None and state.steps_done >= max_steps:
            return force(ids.end)
        if state.steps_done < min_steps:
            return force(ids.proceed)
        return None
    if state.right_after(ids.proceed):
        return force(ids.step_start)
    if state.last_reasoning_token == ids.backtrack:  # writing the name of the step returned to
        return Decision("forbid", ids.reasoning - {ids.step_start})
    return None


def next_token_rule(generated_ids: Sequence[int], ids: ReasoningTokenIds, min_steps: int = 0,
                    max_steps: int | None = 10) -> Decision | None:
    """`reasoning_rule` on a list of generated token ids."""
    return reasoning_rule(scan(generated_ids, ids), ids, min_steps, max_steps)


def check_budget(min_reasoning_tokens: int | None, max_reasoning_tokens: int | None, grace_tokens: int) -> None:
    if min_reasoning_tokens is not None and min_reasoning_tokens < 0:
        raise ValueError(f"min_reasoning_tokens={min_reasoning_tokens}: need >= 0 (or None)")
    if max_reasoning_tokens is not None and max_reasoning_tokens < 1:
        raise ValueError(f"max_reasoning_tokens={max_reasoning_tokens}: need >= 1 (or None)")
    if None not in (min_reasoning_tokens, max_reasoning_tokens) and min_reasoning_tokens > max_reasoning_tokens:
        raise ValueError(f"min_reasoning_tokens={min_reasoning_tokens} > max_reasoning_tokens={max_reasoning_tokens}")
    if grace_tokens < 0:
        raise ValueError(f"grace_tokens={grace_tokens}: need >= 0")


def closing_token(state: ReasoningState, ids: ReasoningTokenIds) -> int | None:
    """The next token that closes the reasoning from `state`, in the format's order: the open field's
    end token, the start and end token of each field still missing (left empty), step_end, then
    reasoning_end. Where no step is open (right after reasoning_start or proceed), a step is opened
    first, so the reasoning always ends on a complete step: at most format.MAX_CLOSING_TOKENS tokens.

    None while a backtrack's target is being written: cutting a name short would leave a target that
    names no step (a format error made by the forcing), so the model finishes it and its own
    <|reasoning_step_start|> opens the step that is then closed."""
    if len(ids.fields) != 2 * len(fmt.STEP_FIELDS):
        raise ValueError("these token ids lack the field tokens: build them with ReasoningTokenIds.from_tokenizer")
    sequence = (ids.step_start, *ids.fields, ids.step_end, ids.end)
    last = state.last_reasoning_token
    if last is None:
        return ids.start
    if last == ids.backtrack:
        return None
    if last in sequence[:-1]:
        return sequence[sequence.index(last) + 1]
    return ids.step_start  # right after reasoning_start or proceed: open the step the move asks for


def budget_rule(state: ReasoningState, ids: ReasoningTokenIds, min_reasoning_tokens: int | None = None,
                max_reasoning_tokens: int | None = None, grace_tokens: int = 64) -> Decision | None:
    """s1-style budget forcing in Steiner's format; "reasoning tokens" = tokens generated before reasoning_end.

    Below the minimum, <|reasoning_end|> is forbidden and a step_end may only be followed by a move
    (proceed or backtrack), so the reasoning goes on with another step (s1 appends "Wait" instead).
    From the maximum on, the reasoning ends where a step is complete: right after a step_end,
    <|reasoning_end|> is forced; elsewhere it is forbidden, so the model may finish its step itself
    for `grace_tokens` tokens. At the maximum plus `grace_tokens`, the step is closed for it
    (`closing_token`: the open field's end, the missing fields empty, step_end) and the reasoning
    ended; then the model writes the answer freely. The forcing thus adds no format error to any
    output (tests/generation/test_constraints.py), and ends the reasoning within max + grace +
    format.MAX_CLOSING_TOKENS tokens (plus the rest of a backtrack target being written).
    """
    if state.ended:
        return None
    n = state.n_tokens
    if max_reasoning_tokens is not None and n >= max_reasoning_tokens:
        if state.right_after(ids.step_end) or n >= max_reasoning_tokens + grace_tokens:
            token = closing_token(state, ids)
            if token is not None:
                return force(token)
        return Decision("forbid", frozenset({ids.end}))  # only a complete step may end the reasoning
    if min_reasoning_tokens is not None and n < min_reasoning_tokens:
        if state.right_after(ids.step_end):
            return Decision("allow", frozenset({ids.proceed, ids.backtrack}))
        return Decision("forbid", frozenset({ids.end}))
    return None


# --------------------------------------------------------------------------- applying a decision


@lru_cache(maxsize=256)
def _index(tokens: frozenset[int], device: torch.device) -> torch.Tensor:
    """The (few, recurring) token sets as index tensors, made once per device."""
    return torch.tensor(sorted(tokens), dtype=torch.long, device=device)


def apply_hard(row: torch.Tensor, decision: Decision) -> torch.Tensor:
    """Mask one row of logits in place: what is not allowed (or is forbidden) becomes -inf.

    A row never ends up without a finite logit (sampling would fail on NaN): when an earlier
    processor already masked every allowed token, they get logit 0 (this decision wins); a
    forbid that would remove the last candidate is skipped (the earlier decision wins).
    """
    if decision.kind == "forbid":
        index = _index(decision.tokens, row.device)
        saved = row[index].clone()
        row[index] = NEG_INF
        if row.max() == NEG_INF:  # (max is ~15x faster than isfinite().any() on a 150k vocabulary)
            row[index] = saved
        return row
    if decision.kind not in ("force", "allow"):
        raise ValueError(f"unknown decision kind {decision.kind!r}: use 'force', 'allow' or 'forbid'")
    index = _index(decision.tokens, row.device)
    values = row[index].clone()
    if values.max() == NEG_INF:
        values.zero_()
    row.fill_(NEG_INF)
    row[index] = values
    return row


def apply_soft(row: torch.Tensor, decision: Decision, bias: float) -> torch.Tensor:
    """Add `bias` to the favoured tokens (forced or allowed), subtract it from forbidden ones."""
    index = _index(decision.tokens, row.device)
    row[index] += -bias if decision.kind == "forbid" else bias
    return row


# --------------------------------------------------------------------------- transformers processors


class _RuleProcessor(LogitsProcessor):
    """Base of the transformers processors: per-row states kept across calls, one rule, one way to apply."""

    def __init__(self, tokenizer, prompt_length: int | None = None):
        if prompt_length is not None and prompt_length < 0:
            raise ValueError(f"prompt_length={prompt_length}: need >= 0, or None to take the first call's width")
        self.ids = _token_ids(tokenizer)
        self.prompt_length = prompt_length
        self._states: list[ReasoningState] | None = None
        self._width = -1
        self._last_column: torch.Tensor | None = None

    def decide(self, state: ReasoningState) -> Decision | None:
        raise NotImplementedError

    def apply(self, row: torch.Tensor, decision: Decision) -> torch.Tensor:
        return apply_hard(row, decision)

    def _continues(self, input_ids: torch.Tensor) -> bool:
        """Is this call the next step of the generation seen at the previous call?"""
        return (self._states is not None and input_ids.shape == (len(self._states), self._width + 1)
                and self._width >= 1 and torch.equal(input_ids[:, -2], self._last_column))

    def states(self, input_ids: torch.Tensor) -> list[ReasoningState]:
        """Each row's state: advanced by the newest column, or read afresh at a new generation."""
        width = input_ids.shape[1]
        if self._continues(input_ids):
            newest = input_ids[:, -1].tolist()
            self._states = [s.advance([t], self.ids) for s, t in zip(self._states, newest)]
        else:
            start = width if self.prompt_length is None else self.prompt_length
            if start > width:
                raise ValueError(f"prompt_length={self.prompt_length} but input_ids has only {width} columns: "
                                 f"pass the padded prompt width of THIS batch (input_ids.shape[1] before generate)")
            self._states = [scan(row, self.ids) for row in input_ids[:, start:].tolist()]
        self._width = width
        self._last_column = input_ids[:, -1].clone() if width else None
        return self._states

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for r, state in enumerate(self.states(input_ids)):
            decision = self.decide(state)
            if decision is not None:
                self.apply(scores[r], decision)
        return scores


class ReasoningConstraints(_RuleProcessor):
    """Steiner's reasoning_constraints(min_steps, max_steps) as a transformers LogitsProcessor (hard forcing)."""

    def __init__(self, tokenizer, min_steps: int = 0, max_steps: int | None = 10, prompt_length: int | None = None):
        check_steps(min_steps, max_steps)
        super().__init__(tokenizer, prompt_length)
        self.min_steps, self.max_steps = min_steps, max_steps

    def decide(self, state: ReasoningState) -> Decision | None:
        return reasoning_rule(state, self.ids, self.min_steps, self.max_steps)


class SoftReasoningBias(ReasoningConstraints):
    """The same decisions, as a nudge: `bias` is added to the favoured token's logit (and taken
    from forbidden ones) instead of masking everything else (issue 4's "forcing is too blunt")."""

    def __init__(self, tokenizer, min_steps: int = 0, max_steps: int | None = 10, bias: float = 5.0,
                 prompt_length: int | None = None):
        if not bias > 0:
            raise ValueError(f"bias={bias}: need > 0 (a logit offset; forcing is ReasoningConstraints)")
        super().__init__(tokenizer, min_steps, max_steps, prompt_length)
        self.bias = float(bias)

    def apply(self, row: torch.Tensor, decision: Decision) -> torch.Tensor:
        return apply_soft(row, decision, self.bias)


class BudgetForcing(_RuleProcessor):
    """s1-style budget forcing on the reasoning length, in tokens (see `budget_rule`).

    Combine with ReasoningConstraints(min_steps=0, max_steps=None) in one LogitsProcessorList to
    keep the structural rules too: BudgetForcing last, so its decisions win where they disagree.
    """

    def __init__(self, tokenizer, min_reasoning_tokens: int | None = None, max_reasoning_tokens: int | None = None,
                 grace_tokens: int = 64, prompt_length: int | None = None):
        check_budget(min_reasoning_tokens, max_reasoning_tokens, grace_tokens)
        super().__init__(tokenizer, prompt_length)
        self.min_reasoning_tokens, self.max_reasoning_tokens = min_reasoning_tokens, max_reasoning_tokens
        self.grace_tokens = grace_tokens

    def decide(self, state: ReasoningState) -> Decision | None:
        return budget_rule(state, self.ids, self.min_reasoning_tokens, self.max_reasoning_tokens, self.grace_tokens)


# --------------------------------------------------------------------------- the published per-request form


def reasoning_constraints(tokenizer_or_ids, min_steps: int = 0,
                          max_steps: int | None = 10) -> Callable[[Sequence[int], torch.Tensor], torch.Tensor]:
    """Steiner's published form: a function (output_token_ids, logits_row) -> logits_row for ONE request.

    It keeps the request's state and reads only the tokens added since its last call (the list
    only grows during a request; a shorter list means a restart and is read afresh).
    """
    ids = _token_ids(tokenizer_or_ids)
    check_steps(min_steps, max_steps)
    memo = {"state": ReasoningState(), "seen": 0}

    def constrain(output_token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        n = len(output_token_ids)
        if n < memo["seen"]:
            memo["state"], memo["seen"] = ReasoningState(), 0
        memo["state"] = memo["state"].advance(list(output_token_ids[memo["seen"]:]), ids)
        memo["seen"] = n
        decision = reasoning_rule(memo["state"], ids, min_steps, max_steps)
        return logits if decision is None else apply_hard(logits, decision)

    return constrain


# --------------------------------------------------------------------------- vLLM

EXTRA_ARGS_KEY = "steiner_reasoning_constraints"
VLLM_INSTALL_HINT = ("vLLM is not installed: it is a GPU-only dependency with its own torch pins. On a GPU "
                     "machine, `pip install .[gpu]` in a separate environment; on CPU use ReasoningConstraints "
                     "with transformers' generate (inference.generate).")


@dataclass(frozen=True)
class RequestConfig:
    ids: ReasoningTokenIds
    min_steps: int
    max_steps: int | None


def request_extra_args(tokenizer_or_ids, min_steps: int = 0, max_steps: int | None = 10) -> dict:
    """The per-request settings, JSON-able, for SamplingParams(extra_args=...) or the REST `vllm_xargs`."""
    check_steps(min_steps, max_steps)
    return {EXTRA_ARGS_KEY: {"min_steps": min_steps, "max_steps": max_steps,
                             "token_ids": _token_ids(tokenizer_or_ids).to_dict()}}


def config_from_extra_args(extra_args: dict | None) -> RequestConfig | None:
    """Read `request_extra_args`' output back; None when the request does not use the constraints."""
    if not extra_args or EXTRA_ARGS_KEY not in extra_args:
        return None
    cfg = extra_args[EXTRA_ARGS_KEY]
    if not isinstance(cfg, dict) or "token_ids" not in cfg:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] = {cfg!r}: build it with "
                         f"constraints.request_extra_args(tokenizer, min_steps, max_steps)")
    min_steps, max_steps = cfg.get("min_steps", 0), cfg.get("max_steps", 10)
    if not isinstance(min_steps, int) or not (max_steps is None or isinstance(max_steps, int)):
        raise ValueError(f"min_steps={min_steps!r}, max_steps={max_steps!r}: need integers (max_steps may be None)")
    check_steps(min_steps, max_steps)
    return RequestConfig(ReasoningTokenIds.from_dict(cfg["token_ids"]), min_steps, max_steps)


class SlotTracker:
    """The pure core of the vLLM Model Runner V2 adapter: per-slot states and this step's decisions.

    MRV2 keeps each request in a slot; a logits row is not a request (rows are reordered every
    step, and under speculative decoding a request owns one row per draft token). A row at
    sequence position `pos` sees the tokens at positions < pos + 1: those below the slot's
    committed length come from the token history, the rest are this step's draft tokens, read
    from the rows of the same slot (row r' was fed the token at position pos[r']). Committed
    tokens are folded into the slot's cached state once; drafts never are (they may be rejected).
    """

    def __init__(self) -> None:
        self.slots: dict[int, list] = {}  # slot -> [RequestConfig, committed ReasoningState, next position to read]

    def add(self, slot: int, config: RequestConfig | None) -> bool:
        if config is None:
            self.slots.pop(slot, None)
            return False
        self.slots[slot] = [config, ReasoningState(), None]
        return True

    def decisions(self, row_slots: Sequence[int], row_pos: Sequence[int], row_input_ids: Sequence[int],
                  prompt_len: Callable[[int], int], committed_len: Callable[[int], int],
                  read_committed: Callable[[int, int, int], list[int]]) -> list[tuple[int, Decision]]:
        """(row, decision) for every row of a tracked slot whose rule decides something."""
        fed = {(s, p): t for s, p, t in zip(row_slots, row_pos, row_input_ids)}
        out = []
        for row, (slot, pos) in enumerate(zip(row_slots, row_pos)):
            entry = self.slots.get(slot)
            if entry is None:
                continue
            config, state, upto = entry
            start = prompt_len(slot)
            commit_end = max(start, min(committed_len(slot), pos + 1))
            if upto is None or upto > commit_end:  # first sight, or a restart after preemption
                state, upto = ReasoningState(), start
            if commit_end > upto:
                state = state.advance(read_committed(slot, upto, commit_end), config.ids)
                upto = commit_end
            entry[1], entry[2] = state, upto
            missing = [p for p in range(commit_end, pos + 1) if (slot, p) not in fed]
            if missing:
                raise RuntimeError(f"slot {slot}: no committed or fed token at position(s) {missing}; this vLLM "
                                   f"version lays out its batch differently: use runner='v1'")
            drafts = [fed[(slot, p)] for p in range(commit_end, pos + 1)]
            decision = reasoning_rule(state.advance(drafts, config.ids), config.ids, config.min_steps,
                                      config.max_steps)
            if decision is not None:
                out.append((row, decision))
        return out


@dataclass(frozen=True)
class VLLMConstraints:
    """How to switch the constraints on in vLLM: the processor at engine start, the settings per request.

        llm = LLM(model=..., logits_processors=[spec.logits_processor])
        outputs = llm.generate(prompts, SamplingParams(..., extra_args=spec.extra_args))
        # vllm serve ... --logits-processors <spec.logits_processor>; requests pass vllm_xargs=spec.extra_args
    """

    logits_processor: str  # fully qualified class name, "module:Class"
    extra_args: dict
    runner: str  # "v2" (Model Runner V2, the default from vLLM 0.32) or "v1" (legacy runner)


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ImportError(VLLM_INSTALL_HINT) from e
    return vllm


def _has_mrv2_interface() -> bool:
    try:
        from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext  # noqa: F401
    except ImportError:
        return False
    return True


def vllm_reasoning_constraints(tokenizer, min_steps: int = 0, max_steps: int | None = 10,
                               runner: str | None = None) -> VLLMConstraints:
    """Steiner's constraints for vLLM's custom logits processors (vLLM >= 0.32 interface, `pip install .[gpu]`).

    vLLM loads logits processors once, at engine start, as classes; per-request settings travel in
    SamplingParams.extra_args. `runner`: "v2" targets Model Runner V2 (vllm.v1.worker.gpu.sample.
    logits_processor.LogitsProcessor), "v1" the legacy runner (AdapterLogitsProcessor around the
    per-request function); None picks "v1" when VLLM_USE_V2_MODEL_RUNNER=0 or the installed vLLM
    lacks the V2 interface, else "v2". Both run `reasoning_rule`, the rule tested here.
    """
    extra_args = request_extra_args(tokenizer, min_steps, max_steps)
    _import_vllm()
    if runner is None:
        runner = "v1" if os.environ.get("VLLM_USE_V2_MODEL_RUNNER") == "0" or not _has_mrv2_interface() else "v2"
    if runner not in ("v1", "v2"):
        raise ValueError(f"runner={runner!r}: use 'v2' (Model Runner V2), 'v1' (legacy runner) or None (auto)")
    name = "VLLMReasoningConstraints" if runner == "v2" else "VLLMReasoningConstraintsV1"
    return VLLMConstraints(f"{__name__}:{name}", extra_args, runner)


def _build_vllm_v2_class():
    _import_vllm()
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

    class VLLMReasoningConstraints(LogitsProcessor):
        """Steiner's reasoning_constraints for vLLM's Model Runner V2 (see SlotTracker)."""

        def __init__(self, vllm_config, req_states):
            super().__init__(vllm_config, req_states)
            self.req_states = req_states
            self.tracker = SlotTracker()

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            config_from_extra_args(sampling_params.extra_args)

        def add_request(self, req_idx: int, sampling_params) -> bool:
            return self.tracker.add(req_idx, config_from_extra_args(sampling_params.extra_args))

        def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
            if not any(int(s) in self.tracker.slots for s in ctx.idx_mapping_np):
                return logits  # no device sync when no request in the batch uses the constraints
            rs = self.req_states
            total_len = rs.total_len.gpu
            token_ids = rs.all_token_ids.gpu
            decisions = self.tracker.decisions(
                ctx.expanded_idx_mapping.tolist(), ctx.pos.tolist(), ctx.input_ids.tolist(),
                prompt_len=lambda s: int(rs.prompt_len.np[s]),
                committed_len=lambda s: int(total_len[s]),
                read_committed=lambda s, a, b: token_ids[s, a:b].tolist(),
            )
            for row, decision in decisions:
                apply_hard(logits[row], decision)
            return logits

    return VLLMReasoningConstraints


def _build_vllm_v1_class():
    _import_vllm()
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class VLLMReasoningConstraintsV1(AdapterLogitsProcessor):
        """Steiner's reasoning_constraints for vLLM's legacy V1 model runner (per-request functions)."""

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            config_from_extra_args(sampling_params.extra_args)

        def is_argmax_invariant(self) -> bool:
            return False  # forcing changes the greedy choice

        def new_req_logits_processor(self, params):
            config = config_from_extra_args(params.extra_args)
            if config is None:
                return None
            return reasoning_constraints(config.ids, config.min_steps, config.max_steps)

    return VLLMReasoningConstraintsV1


_VLLM_CLASSES = {"VLLMReasoningConstraints": _build_vllm_v2_class,
                 "VLLMReasoningConstraintsV1": _build_vllm_v1_class}


def __getattr__(name: str):
    # The vLLM classes subclass vLLM's own base classes, so they are built on first access (vLLM
    # imports "steiner_lib.generation.constraints:VLLMReasoningConstraints" by name); importing this module
    # never imports vLLM.
    if name in _VLLM_CLASSES:
        cls = _VLLM_CLASSES[name]()
        cls.__module__, cls.__qualname__ = __name__, name  # picklable by reference
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

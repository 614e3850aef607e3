"""One rule for every verdict the report writes: does this run reproduce a claim of the paper?

A verdict reads a difference (accuracy points), its 95% interval [lo, hi] and `effect`, a figure
of the paper. There are four verdicts, and the rule gives exactly one of them to every input:

- **not run**: the difference or an interval bound is missing (NaN or None): nothing was measured.

A claimed change (`expect="change"`; `effect` = the change the paper reports, e.g. +3.53 for "RL
improves GPQA-Diamond"; its sign is the claim's direction, and it must not be 0). Write lo', hi'
for the interval turned to the paper's direction (lo, hi for a gain; -hi, -lo for a loss):

- **reproduced**: lo' > 0, the interval lies wholly on the paper's side of 0 (the sign is settled,
  whatever the size);
- **contradicted**: hi' < |effect|, the interval excludes the paper's effect: it lies wholly at the
  opposite sign (hi' < 0), or it reaches the paper's side only by less than the paper reports;
- **inconclusive**: otherwise, lo' <= 0 and hi' >= |effect|: the interval holds both no change and
  the paper's effect (so it is at least as wide as that effect), and does not settle the sign.

A claimed absence of change (`expect="none"`, e.g. "MMLU unchanged"; `effect` = the smallest change
that would matter, the margin m > 0; the summary takes the paper's smallest reported gain, RL's
+3.53 points):

- **reproduced**: -m <= lo and hi <= m, the whole interval is within the margin (an equivalence
  test: a wide interval that merely contains 0 is not evidence of no change);
- **contradicted**: the interval is not within the margin and excludes 0 (a change is detected);
- **inconclusive**: otherwise, the interval holds 0 and reaches beyond the margin.

A claimed absence of loss (`expect="no loss"`, e.g. "CPT might be redundant": accuracy without CPT
minus with; `effect` = the margin m > 0):

- **reproduced**: lo >= -m, no loss larger than the margin is left in the interval;
- **contradicted**: otherwise, when hi < 0: a loss is detected;
- **inconclusive**: otherwise.

A claimed absence of gain (`expect="no gain"`, e.g. "no inference-time scaling": accuracy with the
most forcing minus with none; `effect` = the margin m > 0) is the mirror image: reproduced when
hi <= m (a loss, as the paper saw on GPQA, is no gain either), otherwise contradicted when lo > 0
(a gain is detected), otherwise inconclusive.

Bounds: a bound exactly at 0 does not settle a sign (lo = 0 is not above 0), and a bound exactly at
the paper's effect or the margin counts as holding it (hi' = |effect| includes the effect).
"""

from __future__ import annotations

import math

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN)
EXPECTATIONS = ("change", "none", "no loss", "no gain")
# The effect that matters, for claims of no change and for the tests of the paper's suspected causes: the
# smallest change the paper reports as a gain, RL's +3.53 points on GPQA-Diamond.
MARGIN = 3.53

# Why each verdict was given, in words (for computed paragraphs), per expectation.
REASONS = {
    "change": {REPRODUCED: "the 95% interval lies on the paper's side of 0",
               CONTRADICTED: "the 95% interval excludes the paper's effect",
               INCONCLUSIVE: "the 95% interval holds both 0 and the paper's effect"},
    "none": {REPRODUCED: "the whole 95% interval is within the margin",
             CONTRADICTED: "the 95% interval excludes 0 and leaves the margin",
             INCONCLUSIVE: "the 95% interval holds 0 but reaches beyond the margin"},
    "no loss": {REPRODUCED: "no loss beyond the margin is left in the 95% interval",
                CONTRADICTED: "the 95% interval lies below 0: a loss",
                INCONCLUSIVE: "the 95% interval holds 0 and a loss beyond the margin"},
    "no gain": {REPRODUCED: "no gain beyond the margin is left in the 95% interval",
                CONTRADICTED: "the 95% interval lies above 0: a gain",
                INCONCLUSIVE: "the 95% interval holds 0 and a gain beyond the margin"},
}


def _missing(x) -> bool:
    """None, NaN, pandas' NA: a value that was not measured."""
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def settled_sign(lo: float, hi: float) -> str:
    """"gain" when the interval lies above 0, "loss" when below, "unsettled" when it holds 0."""
    return "gain" if lo > 0 else "loss" if hi < 0 else "unsettled"


def verdict(delta: float, lo: float, hi: float, effect: float, expect: str = "change") -> str:
    """The verdict of the module docstring's rule (one of VERDICTS)."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect={expect!r}: use 'change' (a claimed change of size `effect`), 'none' "
                         f"(no change beyond the margin `effect`), 'no loss' or 'no gain' (none beyond the margin)")
    if _missing(effect):
        raise ValueError(f"effect={effect!r}: give the paper's figure (expect='change') or the margin that "
                         f"matters (expect={expect!r}), in accuracy points")
    if expect == "change" and effect == 0:
        raise ValueError("effect=0 with expect='change': a claimed change needs its size and sign; "
                         "for a claim of no change use expect='none' with a margin")
    if expect != "change" and effect <= 0:
        raise ValueError(f"effect={effect!r} with expect={expect!r}: the margin must be > 0 points")
    if any(_missing(v) for v in (delta, lo, hi)):
        return NOT_RUN
    if lo > hi:
        raise ValueError(f"interval [{lo}, {hi}]: the lower bound is above the upper one")
    if expect == "change":
        lo_, hi_ = (lo, hi) if effect > 0 else (-hi, -lo)  # the interval in the paper's direction
        if lo_ > 0:
            return REPRODUCED
        return CONTRADICTED if hi_ < abs(effect) else INCONCLUSIVE
    margin = effect
    if expect == "none":
        if -margin <= lo and hi <= margin:
            return REPRODUCED
        return CONTRADICTED if settled_sign(lo, hi) != "unsettled" else INCONCLUSIVE
    if expect == "no gain":  # the mirror image of "no loss"
        lo, hi = -hi, -lo
    if lo >= -margin:
        return REPRODUCED
    return CONTRADICTED if hi < 0 else INCONCLUSIVE


def reason(verdict_: str, expect: str = "change") -> str:
    """Why a verdict was given, in words ("" for not run)."""
    return REASONS[expect].get(verdict_, "")


__all__ = ["MARGIN", "REPRODUCED", "CONTRADICTED", "INCONCLUSIVE", "NOT_RUN", "VERDICTS", "EXPECTATIONS", "settled_sign",
           "verdict", "reason"]

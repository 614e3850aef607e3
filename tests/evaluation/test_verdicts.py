"""The one verdict rule (steiner_lib/evaluation/verdicts.py): every category of every expectation, the edge cases
at the interval bounds, and bad input named."""

from __future__ import annotations

import pytest

from steiner_lib.evaluation.verdicts import (
    CONTRADICTED, INCONCLUSIVE, NOT_RUN, REPRODUCED, reason, settled_sign, verdict,
)

NAN = float("nan")


@pytest.mark.parametrize("delta, lo, hi, effect, expected", [
    # a claimed gain of +3.53
    (5.0, 1.0, 9.0, 3.53, REPRODUCED),  # above 0, holds the effect
    (1.0, 0.2, 1.8, 3.53, REPRODUCED),  # above 0, smaller than the paper's: the sign is what is claimed
    (-4.0, -7.0, -1.0, 3.53, CONTRADICTED),  # wholly at the opposite sign
    (-1.5, -5.0, 2.0, 3.53, CONTRADICTED),  # straddles 0 but reaches the paper's side only to +2 < 3.53
    (0.5, -1.0, 2.0, 3.53, CONTRADICTED),  # narrow around 0: excludes the paper's effect
    (1.0, -6.0, 8.0, 3.53, INCONCLUSIVE),  # holds 0 and +3.53
    (-2.0, -9.0, 5.0, 3.53, INCONCLUSIVE),  # the estimate's sign does not matter while both are held
    # a claimed loss of -2: the same rule, turned to the paper's direction
    (-4.0, -7.0, -1.0, -2.0, REPRODUCED),
    (3.0, 1.0, 5.0, -2.0, CONTRADICTED),
    (-1.0, -3.0, 1.0, -2.0, INCONCLUSIVE),
    (0.0, -1.0, 1.0, -2.0, CONTRADICTED),
])
def test_a_claimed_change(delta, lo, hi, effect, expected):
    assert verdict(delta, lo, hi, effect) == expected


def test_a_claimed_change_at_the_bounds():
    assert verdict(2.0, 0.0, 4.0, 3.53) == INCONCLUSIVE  # lo = 0 does not settle the sign; hi holds the effect
    assert verdict(1.0, 0.0, 3.0, 3.53) == CONTRADICTED  # lo = 0, and the effect is left out
    assert verdict(1e-9, 1e-12, 3.0, 3.53) == REPRODUCED  # just above 0
    assert verdict(0.0, -3.53, 3.53, 3.53) == INCONCLUSIVE  # hi exactly at the effect holds it
    assert verdict(0.0, -3.53, 3.5299, 3.53) == CONTRADICTED  # just short of it
    assert verdict(-1.0, -2.0, 0.0, 3.53) == CONTRADICTED  # hi = 0: not a settled loss, but the effect is out
    assert verdict(-1.0, -2.0, 0.0, -3.53) == CONTRADICTED  # a claimed loss: turned, [0, 2]; 0 is not above 0, 2 < 3.53
    assert verdict(-2.0, -3.53, 0.0, -3.53) == INCONCLUSIVE  # turned, [0, 3.53]: holds 0 and the effect
    assert verdict(0.0, 0.0, 0.0, 3.53) == CONTRADICTED  # a zero-width interval at 0


@pytest.mark.parametrize("lo, hi, expected", [
    (-1.0, 2.0, REPRODUCED),  # within +-3.53
    (0.5, 1.5, REPRODUCED),  # a detected change, but one too small to matter
    (-3.53, 3.53, REPRODUCED),  # exactly the margin on both sides
    (-3.54, 3.0, INCONCLUSIVE),  # holds 0 and leaves the margin
    (-8.0, 9.0, INCONCLUSIVE),  # a wide interval around 0 is not evidence of no change
    (1.0, 6.0, CONTRADICTED),  # a gain detected, possibly one that matters
    (-9.0, -4.0, CONTRADICTED),
    (0.0, 5.0, INCONCLUSIVE),  # lo = 0 does not settle the sign
])
def test_a_claimed_absence_of_change(lo, hi, expected):
    assert verdict((lo + hi) / 2, lo, hi, 3.53, expect="none") == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-2.0, 5.0, REPRODUCED),  # no loss beyond the margin left
    (-3.53, -1.0, REPRODUCED),  # a small loss, within the margin: still "no loss that matters"
    (2.0, 9.0, REPRODUCED),  # a gain
    (-9.0, -1.0, CONTRADICTED),
    (-9.0, 0.0, INCONCLUSIVE),  # hi = 0 is not below 0
    (-9.0, 4.0, INCONCLUSIVE),
])
def test_a_claimed_absence_of_loss(lo, hi, expected):
    assert verdict((lo + hi) / 2, lo, hi, 3.53, expect="no loss") == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-5.0, 2.0, REPRODUCED), (-5.0, 3.53, REPRODUCED), (-5.0, 3.54, INCONCLUSIVE), (0.0, 9.0, INCONCLUSIVE),
    (0.5, 2.0, REPRODUCED), (0.5, 6.0, CONTRADICTED), (-9.0, -1.0, REPRODUCED),  # a loss is "no gain" too (the paper saw declines)
])
def test_a_claimed_absence_of_gain(lo, hi, expected):
    assert verdict((lo + hi) / 2, lo, hi, 3.53, expect="no gain") == expected


def test_nothing_measured_is_not_run():
    for args in [(NAN, 0, 1), (1, NAN, 2), (1, 0, None)]:
        assert verdict(*args, 3.53) == NOT_RUN
        assert verdict(*args, 3.53, expect="none") == NOT_RUN


@pytest.mark.parametrize("kwargs, match", [
    (dict(effect=3.53, expect="more"), "expect='more'"),
    (dict(effect=0.0), "effect=0 with expect='change'"),
    (dict(effect=NAN), "effect=nan"),
    (dict(effect=None, expect="none"), "effect=None"),
    (dict(effect=-1.0, expect="none"), "margin must be > 0"),
])
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        verdict(1.0, 0.0, 2.0, **kwargs)
    with pytest.raises(ValueError, match="lower bound is above"):
        verdict(1.0, 2.0, 0.0, 3.53)


def test_signs_and_reasons():
    assert (settled_sign(0.1, 2), settled_sign(-2, -0.1), settled_sign(0, 2), settled_sign(-1, 0)) == \
        ("gain", "loss", "unsettled", "unsettled")
    assert "both 0 and the paper's effect" in reason(INCONCLUSIVE)
    assert "within the margin" in reason(REPRODUCED, "none") and reason(NOT_RUN) == ""

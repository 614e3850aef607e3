"""Inference-time scaling (notebook 07): accuracy against reasoning tokens, and the paper's suspects.

Three ways to spend more tokens on a question, compared at matched budgets (x = mean reasoning
tokens spent per question, summed over samples):

- sequential, step forcing: Steiner's reasoning_constraints(min_steps, max_steps=None), one output per
  question (sampled like the pool, or greedy at temperature 0);
- sequential, budget forcing (s1): constraints.BudgetForcing with min = max = B reasoning tokens
  (<|reasoning_end|> is refused below B and forced at the first step boundary after it; at B plus
  the grace the open step is closed for the model, then the reasoning ended);
- parallel: k samples (temperature > 0) and a majority vote over their answer letters. One pool
  of n samples per question is drawn once; each k < n is scored over `draws` random k-subsets of
  the pool (all of them when there are fewer), so the k's share their samples.

The paper's suspects for "more thinking does not help" each get a measurement:

1. training never showed long outputs: accuracy by bins of reasoning length (`length_bins`), and
   a variant SFT-trained on the longest paths only (`long_paths`);
2. the RL reward balances breadth and depth badly: RL variants with other weights
   (`reward_variants`);
3. backtracking context misleads: per output, each backtrack that abandons a branch the exact
   solver can still finish, and each end that confirms a wrong answer, by context position
   (`backtrack_events`, `event_rates`);
4. forcing logits is too blunt: constraints.SoftReasoningBias against hard forcing (`soft_factory`).

Then each cause becomes a test that could come out either way (`cause_tests`, `cause_table`): a
prediction with a sign, an estimate with a 95% interval over questions, and the verdict of
`cause_verdict` (supported, not supported, inconclusive, not run).

Confidence intervals are scoring.bootstrap_ci over questions (a question's samples or vote
draws are averaged first); paired differences use scoring.paired_bootstrap_diff.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from steiner_lib import format as fmt
from steiner_lib.evaluation import scoring, stage_table, verdicts
from steiner_lib.tasks.countdown import reachable_values
from steiner_lib.training.rewards import RewardWeights

METHODS = ("min_steps", "budget", "vote", "soft_bias")
METHOD_LABELS = {"min_steps": "sequential: forced steps (min_steps)", "budget": "sequential: budget forcing",
                 "vote": "parallel: majority vote over k", "soft_bias": "sequential: soft bias (min_steps)"}


# --------------------------------------------------------------------------- settings


def parse_names(text_: str, allowed: Sequence[str], name: str) -> list[str]:
    """"SFT,RL" -> ["SFT", "RL"], each checked against `allowed` (order kept, duplicates dropped)."""
    names = list(dict.fromkeys(p.strip() for p in str(text_).split(",") if p.strip()))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"{name}={text_!r}: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'empty'}; "
                         f"choose from {', '.join(allowed)} (comma-separated)")
    return names


def step_factory(tokenizer, min_steps: int) -> Callable:
    """Hard step forcing: reasoning_constraints(min_steps, max_steps=None) (either backend)."""
    return stage_table.constraints_factory(tokenizer, min_steps, None)


def budget_factory(tokenizer, budget: int, grace_tokens: int = 64) -> Callable:
    """s1-style budget forcing at `budget` reasoning tokens, on top of the structural rules: the
    reasoning ends on a complete step, within budget + grace + format.MAX_CLOSING_TOKENS tokens."""
    from steiner_lib.generation.constraints import BudgetForcing, ReasoningConstraints

    if budget < 1:
        raise ValueError(f"budget={budget}: need >= 1 reasoning token")

    def make(prompt_width: int):
        return [ReasoningConstraints(tokenizer, 0, None, prompt_length=prompt_width),
                BudgetForcing(tokenizer, budget, budget, grace_tokens, prompt_length=prompt_width)]

    return make


def soft_factory(tokenizer, min_steps: int, bias: float) -> Callable:
    """The rule of reasoning_constraints(min_steps, None) as a logit bias instead of a mask."""
    from steiner_lib.generation.constraints import SoftReasoningBias

    def make(prompt_width: int):
        return [SoftReasoningBias(tokenizer, min_steps, None, bias=bias, prompt_length=prompt_width)]

    return make


def processor_for(tokenizer, method: str, value, grace_tokens: int = 64, soft_bias: float = 4.0):
    """The logits processor of one sequential setting (None for min_steps 0: the model is free)."""
    if method == "min_steps":
        return step_factory(tokenizer, int(value))
    if method == "budget":
        return budget_factory(tokenizer, int(value), grace_tokens)
    if method == "soft_bias":
        return soft_factory(tokenizer, int(value), soft_bias)
    raise ValueError(f"method={method!r}: a sequential setting is min_steps, budget or soft_bias")


# --------------------------------------------------------------------------- sampling


def sample_pool(model, tokenizer, questions, decoding: stage_table.Decoding, n_samples: int,
                logits_processor=None) -> pd.DataFrame:
    """n_samples completions per question (one batched call), scored: stage_table.sample_and_score with
    `decoding` drawing n_samples per question (Decoding refuses several greedy samples)."""
    return stage_table.sample_and_score(model, tokenizer, questions, replace(decoding, samples=n_samples),
                                       logits_processor)


def sequential_runs(model, tokenizer, questions, decoding: stage_table.Decoding, settings: Sequence[tuple[str, int]],
                    grace_tokens: int = 64, soft_bias: float = 4.0) -> pd.DataFrame:
    """Greedy scores for each (method, value) setting, one long frame with method and value columns."""
    frames = []
    for method, value in settings:
        processor = processor_for(tokenizer, method, value, grace_tokens, soft_bias)
        scores = stage_table.sample_and_score(model, tokenizer, questions, decoding, processor)
        frames.append(scores.assign(method=method, value=value))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- majority vote


def vote(letters: Sequence, rng: np.random.Generator) -> str | None:
    """The most frequent letter (None: no sample answered); ties broken uniformly at random."""
    counts = Counter(x for x in letters if isinstance(x, str))
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(k for k, v in counts.items() if v == top)
    return tied[0] if len(tied) == 1 else tied[int(rng.integers(len(tied)))]


def _subsets(n: int, k: int, draws: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    if math.comb(n, k) <= draws:
        return list(itertools.combinations(range(n), k))
    return [tuple(rng.choice(n, size=k, replace=False)) for _ in range(draws)]


def majority_vote(pool: pd.DataFrame, k: int, draws: int = 32, seed: int = 0) -> pd.DataFrame:
    """Per question: the share of k-subsets of its pool whose vote is right, and the reasoning
    tokens a k-subset spends (sum over its samples, averaged over subsets)."""
    if k < 1:
        raise ValueError(f"k={k}: vote over at least 1 sample")
    rng = np.random.default_rng(seed)
    rows = []
    for qid, group in pool.groupby("question_id", sort=True):
        n = len(group)
        if k > n:
            raise ValueError(f"k={k} but question {qid} has only {n} samples: draw a pool of >= {k} samples")
        letters = group["letter"].tolist()
        correct_letter = group["correct_letter"].iloc[0]
        tokens = pd.to_numeric(group["reasoning_tokens"], errors="coerce").fillna(0).to_numpy(dtype=float)
        subsets = _subsets(n, k, draws, rng)
        right = [vote([letters[i] for i in s], rng) == correct_letter for s in subsets]
        spent = [tokens[list(s)].sum() for s in subsets]
        rows.append({"question_id": qid, "correct": float(np.mean(right)), "tokens": float(np.mean(spent)),
                     "format_ok": float(group["format_ok"].mean())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- curves


def curve_point(per_question: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy (%) with a bootstrap 95% CI over questions, mean tokens per question, format-error rate.

    per_question: rows with question_id, correct and tokens (several rows per question are averaged
    per question first), and optionally format_ok."""
    acc, lo, hi = scoring.bootstrap_ci(per_question["correct"].astype(float), n_boot=n_boot, seed=seed,
                                          groups=per_question["question_id"])
    tokens = per_question.groupby("question_id")["tokens"].mean()
    out = {"accuracy": 100 * acc, "ci_low": 100 * lo, "ci_high": 100 * hi, "tokens": float(tokens.mean()),
           "questions": int(per_question["question_id"].nunique())}
    if "format_ok" in per_question:
        out["format_error_rate"] = 100 * (1 - float(per_question["format_ok"].astype(float).mean()))
    return out


def _as_per_question(scores: pd.DataFrame) -> pd.DataFrame:
    tokens = pd.to_numeric(scores["reasoning_tokens"], errors="coerce").fillna(0)
    return pd.DataFrame({"question_id": scores["question_id"], "correct": scores["correct"].astype(float),
                         "tokens": tokens.astype(float), "format_ok": scores["format_ok"].astype(float)})


def sequential_curve(runs: pd.DataFrame, model_name: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (method, value) of `sequential_runs`' frame."""
    rows = []
    for (method, value), scores in runs.groupby(["method", "value"], sort=True):
        rows.append({"model": model_name, "method": method, "value": value,
                     **curve_point(_as_per_question(scores), n_boot, seed)})
    return pd.DataFrame(rows)


def vote_curve(pool: pd.DataFrame, ks: Sequence[int], model_name: str, draws: int = 32, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """One row per k: majority-vote accuracy over k samples and the tokens k samples spend."""
    rows = [{"model": model_name, "method": "vote", "value": k,
             **curve_point(majority_vote(pool, k, draws, seed), n_boot, seed)} for k in ks]
    return pd.DataFrame(rows)


def scaling_slope(curve: pd.DataFrame) -> float:
    """Accuracy points per doubling of tokens: least-squares slope of accuracy on log2(tokens)
    (NaN when the tokens span less than 1.25x: the forcing did not change the length)."""
    d = curve[curve["tokens"] > 0]
    # Under a 1.25x token range the slope is noise divided by almost nothing: report none.
    if len(d) < 2 or d["tokens"].max() < 1.25 * d["tokens"].min():
        return float("nan")
    return float(np.polyfit(np.log2(d["tokens"].to_numpy(float)), d["accuracy"].to_numpy(float), 1)[0])


def _per_doubling(slope: float) -> str:
    return "tokens barely change, no slope" if slope != slope else f"{slope:+.1f} points per doubling"


def scaling_paragraph(table: pd.DataFrame) -> str:
    """Markdown: for each model and method, does accuracy rise with tokens? Computed from the table."""
    lines = []
    for (model, method), curve in table.groupby(["model", "method"], sort=False):
        curve = curve.sort_values("tokens")
        first, last, best = curve.iloc[0], curve.iloc[-1], curve.loc[curve["accuracy"].idxmax()]
        slope = scaling_slope(curve)
        overlap = last["ci_low"] <= first["ci_high"] and first["ci_low"] <= last["ci_high"]
        verdict = ("no measurable change (the two 95% intervals overlap)" if overlap else
                   "a gain" if last["accuracy"] > first["accuracy"] else "a loss")
        lines.append(f"- **{model}, {METHOD_LABELS.get(method, method)}**: from {first['tokens']:.0f} to "
                     f"{last['tokens']:.0f} tokens per question, accuracy goes {first['accuracy']:.1f}% -> "
                     f"{last['accuracy']:.1f}% ({_per_doubling(slope)}; best {best['accuracy']:.1f}% "
                     f"at {best['tokens']:.0f} tokens): {verdict}.")
    gains = sum("a gain" in line for line in lines)
    head = (f"Of {len(lines)} scaling curves, {gains} show a gain from the fewest to the most tokens whose 95% "
            f"intervals do not overlap" + (": more tokens do not buy accuracy here, as in the paper."
                                           if gains == 0 else "."))
    return head + "\n\n" + "\n".join(lines)


def forcing_change_per_question(outputs: pd.DataFrame, model: str, method: str = "min_steps"):
    """(per-question accuracy at the most forcing setting of `method` minus at the least, on the questions
    both answered; the two settings; the two settings' rows), or None when `model` has fewer than two
    settings of `method`. The values are 0-1 (a question's samples averaged first)."""
    rows = outputs[(outputs["model"] == model) & (outputs["method"] == method)]
    values = sorted(rows["value"].unique())
    if len(values) < 2:
        return None
    low, high = (rows[rows["value"] == v] for v in (values[0], values[-1]))
    a, b = stage_table.per_question_correct(high), stage_table.per_question_correct(low)
    shared = a.index.intersection(b.index)
    if not len(shared):
        raise ValueError(f"{model}, {method}: settings {values[0]} and {values[-1]} share no question")
    return a[shared] - b[shared], (values[0], values[-1]), (low, high)


def forcing_change(outputs: pd.DataFrame, model: str, method: str = "min_steps", n_boot: int = 2000,
                   seed: int = 0) -> dict | None:
    """Accuracy at the most forcing setting of `method` minus at the least (points), paired on the
    questions both answered: {delta, delta_ci_low, delta_ci_high, p_value, questions, low, high,
    tokens_low, tokens_high}; None when the model has fewer than two settings of `method`."""
    found = forcing_change_per_question(outputs, model, method)
    if found is None:
        return None
    d, (v_low, v_high), (low, high) = found
    diff, lo, hi, p = scoring.paired_bootstrap_diff(d.to_numpy(), np.zeros(len(d)), n_boot=n_boot, seed=seed)
    tokens = lambda f: float(pd.to_numeric(f["reasoning_tokens"], errors="coerce").mean())  # noqa: E731
    return {"delta": 100 * diff, "delta_ci_low": 100 * lo, "delta_ci_high": 100 * hi, "p_value": p,
            "questions": len(d), "low": v_low, "high": v_high, "tokens_low": tokens(low),
            "tokens_high": tokens(high)}


def curve_end_comparisons(outputs: pd.DataFrame, ks: Sequence[int] = (), draws: int = 32, seed: int = 0) -> dict:
    """The end points of every scaling curve, for scoring.sample_size_table: per model and method, the
    accuracy at the least and at the most tokens spent (the lowest and highest setting) and the paired
    change between them (most minus least), as per-question values (Series by question id).

    Sequential methods read the scored outputs of each setting; the vote reads the pool ("pool" rows)
    through majority_vote at the smallest and largest k of `ks` (the curve's own `draws` and `seed`)."""
    out = {}
    for (model, method), rows in outputs.groupby(["model", "method"], sort=False):
        if method == "pool":
            if len(ks) < 1:
                continue
            k_low, k_high = min(ks), max(ks)
            ends = {k: majority_vote(rows, k, draws, seed).set_index("question_id")["correct"] for k in (k_low, k_high)}
            method, low, high = "vote", k_low, k_high
        else:
            values = sorted(rows["value"].unique())
            low, high = values[0], values[-1]
            ends = {v: stage_table.per_question_correct(rows[rows["value"] == v]) for v in (low, high)}
        name, lo_, hi_ = f"{model}, {method}", f"{low:g}", f"{high:g}"
        out[f"{name} {lo_}: accuracy"] = ends[low]
        if high != low:
            out[f"{name} {hi_}: accuracy"] = ends[high]
            out[f"{name} {hi_} - {lo_}"] = (ends[high], ends[low])
    return out


def sample_sizes(outputs: pd.DataFrame, ks: Sequence[int] = (), draws: int = 32, seed: int = 0,
                 target: float = scoring.PRECISION_TARGET) -> pd.DataFrame:
    """Notebook 07's sample-size table (scoring.sample_size_table) over curve_end_comparisons."""
    return scoring.sample_size_table(curve_end_comparisons(outputs, ks, draws, seed), target)


@dataclass(frozen=True)
class Plan:
    """What to measure for one model: the sequential settings, the vote pool, the soft-bias settings."""

    min_steps: tuple[int, ...] = (0, 2, 4, 8)
    budgets: tuple[int, ...] = (128, 256, 512)
    samples: int = 8  # pool size (0: no parallel scaling)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    draws: int = 32
    grace_tokens: int = 64
    soft_bias: float = 4.0

    def __post_init__(self) -> None:
        if self.samples and max(self.ks, default=0) > self.samples:
            raise ValueError(f"vote sizes {list(self.ks)} exceed the pool of {self.samples} samples: "
                             f"raise scaling_samples or lower scaling_vote_ks")

    def sequential(self, soft: bool = False) -> list[tuple[str, int]]:
        out = [("min_steps", m) for m in self.min_steps] + [("budget", b) for b in self.budgets]
        return out + ([("soft_bias", m) for m in self.min_steps if m > 0] if soft else [])


def plan_from_params(s) -> Plan:
    """The Plan of notebook 07's scaling section (params.ScalingParams), a bad grid named by its knob."""
    def grid(text: str, knob: str) -> tuple[int, ...]:
        return tuple(stage_table.parse_int_grid(text, f"scaling_{knob}"))

    return Plan(min_steps=grid(s.min_steps_grid, "min_steps_grid"), budgets=grid(s.budgets, "budgets"),
                samples=s.samples, ks=grid(s.vote_ks, "vote_ks"), draws=s.vote_draws, grace_tokens=s.budget_grace,
                soft_bias=s.soft_bias)


def measure(model, tokenizer, name: str, questions, plan: Plan, decoding: stage_table.Decoding,
            pool: bool = False, soft: bool = False, n_boot: int = 2000):
    """(outputs, curve) of one model: every scored output (model, method, value columns; the vote pool
    has method "pool") and its scaling-curve rows (sequential settings, then votes over the pool).

    Each sequential setting draws one output per question with `decoding`; with `pool`, the vote
    pool is plan.samples more outputs per question, free (no processor), at the same temperature."""
    runs = sequential_runs(model, tokenizer, questions, decoding, plan.sequential(soft), plan.grace_tokens,
                           plan.soft_bias)
    curves = [sequential_curve(runs, name, n_boot, decoding.seed)]
    frames = [runs]
    if pool and plan.samples:
        scores = sample_pool(model, tokenizer, questions, decoding, plan.samples).assign(method="pool", value=plan.samples)
        curves.append(vote_curve(scores, plan.ks, name, plan.draws, n_boot, decoding.seed))
        frames.append(scores)
    outputs = pd.concat(frames, ignore_index=True).assign(model=name)
    return outputs, pd.concat(curves, ignore_index=True)


def stacked(*measured: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (outputs, curves) of several measure() calls (or earlier stacks), one frame each."""
    return (pd.concat([o for o, _ in measured], ignore_index=True),
            pd.concat([c for _, c in measured], ignore_index=True))


def measure_models(load: Callable, names: Sequence[str], questions, plan: Plan, decoding: stage_table.Decoding,
                   log: Callable[[str], None] = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(outputs, curves) of the checkpoints `names` (rows of stage_table.ROW_CHECKPOINTS, loaded by
    load(stage, name)), each with its vote pool; the last also runs the soft bias, as cause 4 asks of it."""
    measured, t0 = [], time.time()
    for name in names:
        model, tokenizer = load(*stage_table.ROW_CHECKPOINTS[name])
        measured.append(measure(model, tokenizer, name, questions, plan, decoding, pool=True, soft=name == names[-1]))
        log(f"{name}: {len(measured[-1][0])} outputs, {time.time() - t0:.0f} s so far")
    return stacked(*measured)


def measure_reward_variants(load: Callable, variants: dict[str, RewardWeights], train_questions, graphs, rl_params,
                            steps: int, questions, plan: Plan, decoding: stage_table.Decoding,
                            seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(outputs, curves) of each reward-weight variant ({model name: weights}), each RL-trained for `steps`
    steps from a fresh load of the SFT checkpoint (train_reward_variant) and run on the sequential grid."""
    measured = []
    for name, weights in variants.items():
        model, tokenizer = load("04_sft", "sft")
        model = train_reward_variant(model, tokenizer, train_questions, graphs, weights, rl_params, steps, seed)
        measured.append(measure(model, tokenizer, name, questions, plan, decoding))
    return stacked(*measured)


def budget_errors(outputs: pd.DataFrame) -> pd.DataFrame:
    """The format errors left in the budget-forcing outputs, by cause (scoring.error_causes): one
    row per (model, budget), the outputs, the share with any format error, and how many outputs show
    each cause. Budget forcing ends the reasoning only where a step is complete, so "ended mid-step"
    stays 0; what remains is the model's own."""
    rows = []
    budget = outputs[outputs["method"] == "budget"]
    for (model, value), group in budget.groupby(["model", "value"], sort=False):
        causes = [scoring.error_causes(c) for c in group["completion"]]
        row = {"model": model, "budget": int(value), "outputs": len(group),
               "with a format error %": 100 * float(np.mean([bool(c) for c in causes]))}
        row.update({cause: sum(cause in c for c in causes) for cause in scoring.ERROR_CAUSES})
        rows.append(row)
    columns = ["model", "budget", "outputs", "with a format error %", *scoring.ERROR_CAUSES]
    return pd.DataFrame(rows, columns=columns)


def budget_errors_paragraph(table: pd.DataFrame) -> str:
    """Markdown: how many budget outputs keep a format error, and from which causes (from the table)."""
    if table.empty:
        return "No budget-forcing output to check."
    n = int(table["outputs"].sum())
    with_error = int(round((table["outputs"] * table["with a format error %"] / 100).sum()))
    counts = {cause: int(table[cause].sum()) for cause in scoring.ERROR_CAUSES}
    present = [f"{k} in {v}" for k, v in counts.items() if v]
    text_ = (f"Of {n} budget-forcing outputs, {with_error} keep a format error"
             + (f" (outputs per cause: {'; '.join(present)})" if present else "") + ". ")
    text_ += ("None ends its reasoning mid-step: the forcing closes the open step before it ends the reasoning, "
              "so every error left is the model's own." if counts["ended mid-step"] == 0 else
              f"{counts['ended mid-step']} end their reasoning mid-step.")
    return text_


# --------------------------------------------------------------------------- cause 1: length


def length_bins(scores: pd.DataFrame, n_bins: int = 4, n_boot: int = 2000, seed: int = 0,
                edges: Sequence[float] | None = None) -> pd.DataFrame:
    """Accuracy (%, bootstrap CI over questions) of outputs binned by reasoning tokens (quantile bins)."""
    tokens = pd.to_numeric(scores["reasoning_tokens"], errors="coerce")
    frame = scores.assign(tokens=tokens).dropna(subset=["tokens"])
    if frame.empty:
        raise ValueError("length_bins got no output with a reasoning-token count: score with a tokenizer")
    if edges is None:
        edges = np.unique(np.quantile(frame["tokens"], np.linspace(0, 1, n_bins + 1)))
    edges = np.asarray(edges, dtype=float)
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0] + 1])
    rows = [{"bin_low": low, "bin_high": high, "tokens": float(part["tokens"].mean()), "outputs": len(part),
             "questions": part["question_id"].nunique(), "accuracy": mean, "ci_low": lo, "ci_high": hi}
            for low, high, part, mean, lo, hi in _binned_percent_ci(frame, "tokens", "correct", edges, n_boot, seed)]
    return pd.DataFrame(rows)


def _binned_percent_ci(frame: pd.DataFrame, by: str, value: str, edges: np.ndarray, n_boot: int, seed: int):
    """(bin_low, bin_high, rows, mean %, ci_low %, ci_high %) for each non-empty bin of frame[by] between
    edges (the last bin closed); the CI is a bootstrap over questions of frame[value]."""
    index = np.clip(np.searchsorted(edges, frame[by].to_numpy(), side="right") - 1, 0, len(edges) - 2)
    for b in range(len(edges) - 1):
        part = frame[index == b]
        if part.empty:
            continue
        mean, lo, hi = scoring.bootstrap_ci(part[value].astype(float), n_boot=n_boot, seed=seed,
                                               groups=part["question_id"])
        yield edges[b], edges[b + 1], part, 100 * mean, 100 * lo, 100 * hi


def pool_length_bins(outputs: pd.DataFrame, models: Sequence[str], n_bins: int = 4,
                     seed: int = 0) -> dict[str, pd.DataFrame]:
    """length_bins of each model's vote pool (its natural lengths: no forcing); a model without a pool is left out."""
    pools = {m: outputs[(outputs["model"] == m) & (outputs["method"] == "pool")] for m in models}
    return {m: length_bins(p, n_bins, seed=seed) for m, p in pools.items() if len(p)}


def long_paths(paths_dataset, share: float):
    """The longest `share` of notebook 02's kept paths (by reasoning tokens): the long-path SFT data."""
    if not 0 < share <= 1:
        raise ValueError(f"share={share}: keep a share in (0, 1] of the paths")
    if "kept" in paths_dataset.column_names:
        paths_dataset = paths_dataset.filter(lambda kept: kept, input_columns="kept")
    tokens = np.asarray(paths_dataset["reasoning_tokens"], dtype=float)
    cut = float(np.quantile(tokens, 1 - share))
    keep = [i for i, t in enumerate(tokens) if t >= cut]
    return paths_dataset.select(keep), cut


def length_paragraph(bins: dict[str, pd.DataFrame], train_tokens: Sequence[float], curves: pd.DataFrame,
                     variant: str | None = None, reference: str = "SFT") -> str:
    """Markdown for cause 1, from the length bins, the training lengths and (optionally) the variant."""
    p95 = float(np.quantile(np.asarray(train_tokens, float), 0.95))
    lines = [f"Training paths hold at most {max(train_tokens):.0f} reasoning tokens (95% below {p95:.0f})."]
    for model, b in bins.items():
        if len(b) < 2:
            lines.append(f"- **{model}**: a single length bin, no trend to read.")
            continue
        short, long_ = b.iloc[0], b.iloc[-1]
        beyond = b[b["bin_low"] >= p95]
        lines.append(f"- **{model}**: outputs of {short['bin_low']:.0f}-{short['bin_high']:.0f} tokens are right "
                     f"{short['accuracy']:.1f}% of the time (95% CI {short['ci_low']:.1f}-{short['ci_high']:.1f}), "
                     f"outputs of {long_['bin_low']:.0f}-{long_['bin_high']:.0f} tokens {long_['accuracy']:.1f}% "
                     f"({long_['ci_low']:.1f}-{long_['ci_high']:.1f})"
                     + (f"; {int(beyond['outputs'].sum())} outputs are longer than 95% of the training paths."
                        if len(beyond) else "."))
    if variant is not None and variant in set(curves["model"]):
        slopes = {m: scaling_slope(curves[(curves["model"] == m) & (curves["method"] == "min_steps")])
                  for m in (reference, variant)}
        better = slopes[variant] > slopes[reference]
        lines.append(f"- The variant trained on long paths only scales at {_per_doubling(slopes[variant])} "
                     f"of forced-step tokens, against {_per_doubling(slopes[reference])} for {reference}: "
                     + ("training on longer outputs makes forcing more useful, which supports this cause."
                        if better else "training on longer outputs does not make forcing more useful here, "
                                       "so this cause is not supported at this scale."))
    return "\n".join(lines)


# --------------------------------------------------------------------------- cause 2: reward weights


def reward_variants(weights: RewardWeights, names: Sequence[str], factor: float = 3.0) -> dict[str, RewardWeights]:
    """Reweighted copies of `weights`: "depth-heavy" multiplies the depth terms (distance from the
    question, progress to the answer) by `factor` and zeroes the breadth terms (in/out-degree);
    "breadth-heavy" multiplies the breadth terms by `factor` and divides the depth terms by it."""
    if factor <= 0:
        raise ValueError(f"factor={factor}: need > 0")
    out = {}
    for name in names:
        if name == "depth-heavy":
            out[name] = replace(weights, w_in_degree=0.0, w_out_degree=0.0,
                                w_dist_question=weights.w_dist_question * factor,
                                w_dist_answer=weights.w_dist_answer * factor)
        elif name == "breadth-heavy":
            out[name] = replace(weights, w_in_degree=weights.w_in_degree * factor,
                                w_out_degree=weights.w_out_degree * factor,
                                w_dist_question=weights.w_dist_question / factor,
                                w_dist_answer=weights.w_dist_answer / factor)
        else:
            raise ValueError(f"reward variant {name!r}: choose depth-heavy or breadth-heavy")
    return out


def train_reward_variant(model, tokenizer, train_questions, graphs, weights: RewardWeights, rl_params, steps: int,
                         seed: int = 0):
    """RL from `model` (trained in place) for `steps` steps with other reward weights and notebook 05's
    other settings (rl_params: the rl section 05 ran with, StageWriter.input_params("05_rl").rl); returns
    the model."""
    from steiner_lib.training import rl

    cfg = rl.stage_config(rl_params, seed, steps=steps, progress=False, logging_steps=max(1, min(5, steps)))
    return rl.train_rl(model, tokenizer, train_questions, graphs, weights, cfg).model


def train_long_path_variant(model, tokenizer, paths_dataset, share: float, steps: int, sft_params,
                            seed: int = 0) -> dict:
    """SFT `model` (the CPT checkpoint; trained in place) on the longest `share` of the paths for `steps`
    steps, with notebook 04's other settings but no held-out loss (sft_params: the sft section 04 ran
    with, StageWriter.input_params("04_sft").sft)."""
    from steiner_lib.training import sft

    long_ds, cut = long_paths(paths_dataset, share)
    cfg = sft.stage_config(sft_params, seed, max_steps=steps, eval_share=0.0, progress=False,
                           logging_steps=max(1, min(10, steps)))
    result = sft.train_sft(model, tokenizer, sft.sft_dataset(long_ds), None, cfg)
    return {"paths": len(long_ds), "min_reasoning_tokens": cut, "steps": result.steps,
            "final_train_loss": result.final_train_loss}


def weights_table(variants: dict[str, RewardWeights]) -> pd.DataFrame:
    return pd.DataFrame({name: asdict(w) for name, w in variants.items()}).T


def variant_paragraph(curves: pd.DataFrame, variants: Sequence[str], reference: str = "RL",
                      method: str = "min_steps") -> str:
    """Markdown for cause 2: each reward variant's scaling slope and best accuracy beside the reference."""
    ref = curves[(curves["model"] == reference) & (curves["method"] == method)]
    ref_slope = scaling_slope(ref)
    lines = [f"{reference} (the weights of notebook 05) scales at {_per_doubling(ref_slope)} of tokens "
             f"(best {ref['accuracy'].max():.1f}%)."]
    helped = []
    for name in variants:
        c = curves[(curves["model"] == name) & (curves["method"] == method)]
        if c.empty:
            continue
        slope = scaling_slope(c)
        if slope > ref_slope and c["accuracy"].max() > ref["accuracy"].max():
            helped.append(name)
        lines.append(f"- **{name}**: {_per_doubling(slope)}, best {c['accuracy'].max():.1f}% "
                     f"at {c.loc[c['accuracy'].idxmax(), 'tokens']:.0f} tokens.")
    verdict = (f"Reweighting ({', '.join(helped)}) gives both a steeper curve and a higher best accuracy, "
               f"which supports the cause." if helped else
               "No reweighting gives both a steeper curve and a higher best accuracy: the breadth/depth balance "
               "of the reward is not what keeps forcing from helping at this scale.")
    return "\n".join(lines) + "\n\n" + verdict


# --------------------------------------------------------------------------- cause 3: backtracking context


def backtrack_events(scores: pd.DataFrame, questions: dict, tokenizer) -> pd.DataFrame:
    """One row per backtrack and per end of every scored output.

    backtrack: `bad` when the abandoned state (after the step just written) still reaches the
    target (countdown.reachable_values; a state reached by wrong arithmetic counts as unknown);
    end: `bad` when the output ends its reasoning and answers a wrong letter (None: no letter, so it
    confirms nothing and is left out of the rates). `position` is the
    number of tokens generated before the event (the context the decision was made in).
    """
    from steiner_lib.training import modeling
    from steiner_lib.training.rewards import step_spans

    rows, prefixes = [], []
    for r in scores.itertuples(index=False):
        problem = questions[r.question_id].problem
        parsed = fmt.parse(r.completion)
        trace = parsed.trace
        spans = step_spans(r.completion, trace.steps)
        states = scoring.replay_states(trace, problem.numbers, problem.max_result)[1]
        for i, move in enumerate(trace.moves):
            if not isinstance(move, fmt.Backtrack) or spans[i] is None:
                continue
            state = states[i]
            solvable = None if state is None else problem.target in reachable_values(state, problem.max_result)
            rows.append({"question_id": r.question_id, "kind": "backtrack", "bad": solvable,
                         "step": i + 1})
            prefixes.append(r.completion[:spans[i][1]])
        end = r.completion.find(fmt.REASONING_END)
        if end >= 0:
            rows.append({"question_id": r.question_id, "kind": "end", "step": len(trace.steps),
                         "bad": None if r.letter is None else r.letter != r.correct_letter})
            prefixes.append(r.completion[:end])
    if not rows:
        return pd.DataFrame(columns=["question_id", "kind", "bad", "step", "position"])
    frame = pd.DataFrame(rows)
    frame["position"] = modeling.count_tokens(tokenizer, prefixes)
    return frame


def backtrack_events_by_model(outputs: pd.DataFrame, questions: dict, tokenizer) -> pd.DataFrame:
    """backtrack_events of every model's outputs, with a model column, models in the order of `outputs`."""
    return pd.concat([backtrack_events(o, questions, tokenizer).assign(model=m)
                      for m, o in outputs.groupby("model", sort=False)], ignore_index=True)


def event_rates(events: pd.DataFrame, edges: Sequence[float], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per kind and context-position bin: the share of bad events (%) with a bootstrap CI over questions."""
    edges = np.asarray(edges, dtype=float)
    rows = []
    known = events.dropna(subset=["bad"])
    for kind, part in known.groupby("kind", sort=True):
        rows += [{"kind": kind, "bin_low": low, "bin_high": high, "position": float(cell["position"].mean()),
                  "events": len(cell), "bad_share": share, "ci_low": lo, "ci_high": hi}
                 for low, high, cell, share, lo, hi in _binned_percent_ci(part, "position", "bad", edges, n_boot, seed)]
    return pd.DataFrame(rows)


def context_edges(events: pd.DataFrame, n_bins: int) -> np.ndarray:
    """Quantile bin edges of the event positions (at least two edges)."""
    if events.empty:
        return np.array([0.0, 1.0])
    edges = np.unique(np.quantile(events["position"].astype(float), np.linspace(0, 1, n_bins + 1)))
    return edges if len(edges) >= 2 else np.array([edges[0], edges[0] + 1.0])


def context_paragraph(events: pd.DataFrame, rates: pd.DataFrame) -> str:
    """Markdown for cause 3: how often backtracks and ends go wrong, and whether that grows with context."""
    known = events.dropna(subset=["bad"])
    lines = []
    for kind, what in (("backtrack", "backtracks abandon a branch the solver can still finish"),
                       ("end", "ends confirm a wrong answer")):
        part, r = known[known["kind"] == kind], rates[rates["kind"] == kind] if len(rates) else rates
        if part.empty:
            lines.append(f"- No {kind} event to measure.")
            continue
        share = 100 * part["bad"].astype(float).mean()
        text_ = f"- {share:.1f}% of {len(part)} {what}"
        if len(r) >= 2:
            first, last = r.iloc[0], r.iloc[-1]
            rising = last["ci_low"] > first["ci_high"]
            text_ += (f"; {first['bad_share']:.1f}% in the shortest contexts (~{first['position']:.0f} tokens) "
                      f"against {last['bad_share']:.1f}% in the longest (~{last['position']:.0f} tokens): "
                      + ("the share grows with the context, as the paper suspects." if rising else
                         "no growth with the context that the 95% intervals can separate."))
        lines.append(text_ + ("" if len(r) >= 2 else "."))
    return "\n".join(lines)


# --------------------------------------------------------------------------- cause 4: soft bias


def _paired_on_settings(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per question, the mean correct of a and of b over the (question, setting value) pairs both ran
    (columns correct_a, correct_b), and the number of settings shared."""
    key = ["question_id", "value"]
    merged = a[key + ["correct"]].merge(b[key + ["correct"]], on=key, suffixes=("_a", "_b"))
    if merged.empty:
        raise ValueError("the two runs share no (question, setting): run them on the same questions and grid")
    per_q = merged.groupby("question_id")[["correct_a", "correct_b"]].mean().astype(float)
    return per_q, merged["value"].nunique()


def paired_by_setting(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """a - b accuracy (points), paired on (question, setting value), CI over questions, pooled over settings."""
    per_q, settings = _paired_on_settings(a, b)
    diff, lo, hi, p = scoring.paired_bootstrap_diff(per_q["correct_a"].to_numpy(float),
                                                       per_q["correct_b"].to_numpy(float), n_boot=n_boot, seed=seed)
    return {"delta": 100 * diff, "ci_low": 100 * lo, "ci_high": 100 * hi, "p_value": p,
            "questions": len(per_q), "settings": settings}


def _soft_and_hard(outputs: pd.DataFrame, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`model`'s soft-bias outputs and its hard-forced ones at min_steps > 0 (the settings the soft bias runs)."""
    mine = outputs[outputs["model"] == model]
    return mine[mine["method"] == "soft_bias"], mine[(mine["method"] == "min_steps") & (mine["value"] > 0)]


def soft_against_hard(outputs: pd.DataFrame, model: str, seed: int = 0) -> dict | None:
    """paired_by_setting of `model`'s soft bias against hard forcing (None: no soft-bias output)."""
    soft, hard = _soft_and_hard(outputs, model)
    return paired_by_setting(soft, hard, seed=seed) if len(soft) and len(hard) else None


def _log_odds(row, token: int):
    """log P(token) / (1 - P(token)) of one row of logits, exactly (no probability is rounded to 0 or 1)."""
    import torch

    others = torch.cat([row[:token], row[token + 1:]])
    return float(row[token] - torch.logsumexp(others, 0))


def step_end_nudges(model, tokenizer, prompt: str, completion: str, min_steps: int, bias: float,
                    temperature: float = 1.0) -> pd.DataFrame:
    """What SoftReasoningBias(min_steps, None, bias) does to the next-token distribution along one output.

    The output is replayed through `model` (prompt and completion tokenized as generation does) and
    the processor called at every position as in generation; one row per position where it raised
    <|reasoning_proceed|>: a step end with fewer than min_steps done, right after the step_end
    (`after` "step_end") or after the whitespace written since (`after` "whitespace", where a trained
    model takes its decision). Columns: position (tokens of the completion before it), after,
    steps_done, p_free and p_soft (P(proceed) at `temperature` without and with the bias),
    log_odds_shift (of proceed: bias / temperature when the bias is all that changes), written (the
    token the output wrote there), flipped (the bias made proceed the most likely token)."""
    import torch

    from steiner_lib.generation.constraints import ReasoningTokenIds, SoftReasoningBias, scan

    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: need > 0 (the sampling temperature of the outputs)")
    ids = ReasoningTokenIds.from_tokenizer(tokenizer)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not p:
        raise ValueError("prompt is empty: give the chat prompt the output was generated from")
    x = torch.tensor([p + c], device=model.device)
    with torch.inference_mode():
        logits = model(x).logits[0].double()
    processor = SoftReasoningBias(tokenizer, min_steps, None, bias=bias, prompt_length=len(p))
    rows = []
    for j in range(len(c) + 1):
        free = logits[len(p) + j - 1]
        soft = processor(x[:, :len(p) + j], free.clone()[None])[0]
        if not soft[ids.proceed] > free[ids.proceed]:
            continue
        state = scan(c[:j], ids)
        pf = float(torch.softmax(free / temperature, 0)[ids.proceed])
        ps = float(torch.softmax(soft / temperature, 0)[ids.proceed])
        rows.append({"position": j, "after": "step_end" if state.last_token == ids.step_end else "whitespace",
                     "steps_done": state.steps_done, "p_free": pf, "p_soft": ps,
                     "log_odds_shift": _log_odds(soft / temperature, ids.proceed) - _log_odds(free / temperature, ids.proceed),
                     "written": c[j] if j < len(c) else None,
                     "flipped": int(free.argmax()) != ids.proceed and int(soft.argmax()) == ids.proceed})
    columns = ["position", "after", "steps_done", "p_free", "p_soft", "log_odds_shift", "written", "flipped"]
    return pd.DataFrame(rows, columns=columns)


def soft_decisions(model, tokenizer, outputs: pd.DataFrame, questions, seed: int, model_name: str, bias: float,
                   temperature: float) -> pd.DataFrame:
    """Per min_steps of the soft-bias outputs of `model_name`: how often the bias changed the choice at
    a step end. Every output is replayed (step_end_nudges; prompts from `questions` and `seed` as
    stage_table.sample_and_score made them). Columns: outputs; step ends (nudged: fewer than min_steps
    done); p_free, p_soft (mean P(proceed) where the move is chosen, the last nudged position of each
    step end); changed (expected), the sum over nudged positions of p_soft - p_free, the chance the
    bias moved the draw there onto proceed; flipped, positions where the bias made proceed the most
    likely token; proceed written; and mean steps of the free (min_steps 0, hard), soft and hard outputs."""
    prompts = dict(zip((scoring.question_id(q) for q in questions), scoring.heldout_prompts(questions, seed)[0]))
    mine = outputs[outputs["model"] == model_name]
    free = mine[(mine["method"] == "min_steps") & (mine["value"] == 0)]
    rows = []
    for value, soft in mine[mine["method"] == "soft_bias"].groupby("value", sort=True):
        missing = sorted(set(soft["question_id"]) - set(prompts))
        if missing:
            raise ValueError(f"questions {missing[:3]} of the outputs are not in `questions`: pass the questions 07 asked")
        nudges = pd.concat([step_end_nudges(model, tokenizer, prompts[r.question_id], r.completion, int(value), bias,
                                            temperature).assign(output=i) for i, r in enumerate(soft.itertuples())],
                           ignore_index=True)
        sites = nudges.groupby(["output", "steps_done"]).tail(1) if len(nudges) else nudges
        hard = mine[(mine["method"] == "min_steps") & (mine["value"] == value)]
        proceed = tokenizer.convert_tokens_to_ids(fmt.PROCEED)
        rows.append({"min_steps": int(value), "outputs": len(soft), "step ends": len(sites),
                     "p_free": float(sites["p_free"].mean()) if len(sites) else float("nan"),
                     "p_soft": float(sites["p_soft"].mean()) if len(sites) else float("nan"),
                     "changed (expected)": float((nudges["p_soft"] - nudges["p_free"]).sum()),
                     "flipped": int(nudges["flipped"].sum()), "proceed written": int((sites["written"] == proceed).sum()),
                     "steps_free": float(free["n_steps"].mean()) if len(free) else float("nan"),
                     "steps_soft": float(soft["n_steps"].mean()),
                     "steps_hard": float(hard["n_steps"].mean()) if len(hard) else float("nan")})
    return pd.DataFrame(rows)


def soft_paragraph(curves: pd.DataFrame, comparison: dict, model: str, bias: float,
                   decisions: pd.DataFrame | None = None) -> str:
    """Markdown for cause 4, from the soft and hard curves and their paired comparison (and, given
    `soft_decisions`' table, how often the bias changed the choice at a step end)."""
    hard = curves[(curves["model"] == model) & (curves["method"] == "min_steps")]
    soft = curves[(curves["model"] == model) & (curves["method"] == "soft_bias")]
    c = comparison
    head = (f"With min_steps > 0 ({c['settings']} settings, {c['questions']} questions), a soft bias of {bias:g} "
            f"logits changes {model}'s accuracy by {c['delta']:+.1f} points against hard forcing (paired 95% CI "
            f"{c['ci_low']:+.1f} to {c['ci_high']:+.1f}, p {scoring.p_phrase(c['p_value'])}), spending {soft['tokens'].mean():.0f} "
            f"tokens per question on average against {hard['tokens'].mean():.0f}. ")
    if c["ci_low"] > 0:
        verdict = "Softer steering helps: forcing was too blunt, as the paper suspects."
    elif c["ci_high"] < 0:
        verdict = "Softer steering hurts: bluntness is not what holds forcing back."
    else:
        verdict = "The interval includes 0: the bluntness of forcing is not shown to matter at this scale."
    if decisions is not None and len(decisions):
        parts = [f"min_steps {int(r['min_steps'])}: {int(r['step ends'])} step ends with fewer steps done, P(proceed) "
                 f"{r['p_free']:.2f} without the bias and {r['p_soft']:.2f} with it where the move is chosen; the bias "
                 f"changed the choice at about {r['changed (expected)']:.1f} of them (expected) and made proceed the most "
                 f"likely token at {int(r['flipped'])}; {r['steps_soft']:.1f} steps (hard {r['steps_hard']:.1f}, free "
                 f"{r['steps_free']:.1f})" for _, r in decisions.iterrows()]
        verdict += " How much the nudge did, replayed through the model: " + "; ".join(parts) + "."
        if decisions["changed (expected)"].sum() < 0.5:
            verdict += (f" A bias of {bias:g} logits changed almost no choice: the model's own preference at the step "
                        f"ends is stronger, so this comparison is hard forcing against no forcing.")
    return head + verdict



# --------------------------------------------------------------------------- the four causes, as tests


SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
CAUSE_VERDICTS = (SUPPORTED, NOT_SUPPORTED, verdicts.INCONCLUSIVE, verdicts.NOT_RUN)
CAUSES = {1: "1. CPT/SFT never taught long outputs", 2: "2. the RL reward balances breadth and depth badly",
          3: "3. the backtracking context misleads", 4: "4. forcing logits is too blunt"}
CAUSE_COLUMNS = ["cause", "prediction", "measurement", "estimate", "ci_low", "ci_high", "verdict", "questions",
                 "half-width now (points)", "questions needed", "target met"]


def cause_verdict(estimate: float, lo: float, hi: float, direction: int, margin: float = verdicts.MARGIN) -> str:
    """The verdict on one suspected cause, from the estimate (points) and its 95% interval [lo, hi].

    Each test states the sign the cause predicts (`direction` +1 or -1) and the smallest size that would
    matter, `margin` (default verdicts.MARGIN, the paper's smallest reported effect: a cause worth less
    cannot explain a missing gain of that size). With the interval turned to the predicted direction
    (lo', hi' = lo, hi for +1; -hi, -lo for -1):

    - supported: lo' > 0 and hi' >= margin: the effect the cause predicts is detected (the interval lies
      on the predicted side of 0) and an effect that matters is inside the interval;
    - not supported: hi' < margin: the interval leaves out every effect of the predicted sign as large as
      the margin, whether it lies at the other sign, around 0, or on the predicted side but too small;
    - inconclusive: otherwise (lo' <= 0 and hi' >= margin): the interval holds both no effect and one
      that matters, so it is too wide to decide; the sample-size columns say how many questions would do;
    - not run: the estimate or a bound is missing (nothing measured, or fewer than 2 questions).

    This is verdicts.verdict with the paper's effect replaced by the predicted sign times the margin,
    except that a detected effect smaller than the margin is "not supported" (it cannot be the cause),
    where verdicts.verdict would call the sign reproduced. Bounds exactly at 0 settle no sign; a bound
    exactly at the margin holds it."""
    if direction not in (1, -1):
        raise ValueError(f"direction={direction!r}: +1 (the cause predicts a positive estimate) or -1")
    if margin is None or not margin > 0:
        raise ValueError(f"margin={margin!r}: the smallest effect that matters, > 0 points")
    v = verdicts.verdict(estimate, lo, hi, direction * margin)
    if v == verdicts.NOT_RUN:
        return v
    lo_, hi_ = (lo, hi) if direction > 0 else (-hi, -lo)
    if v == verdicts.REPRODUCED:
        return SUPPORTED if hi_ >= margin else NOT_SUPPORTED
    return NOT_SUPPORTED if v == verdicts.CONTRADICTED else verdicts.INCONCLUSIVE


@dataclass
class CauseTest:
    """One measurement of one suspected cause: what the cause predicts, what was measured, the sign it
    predicts (`direction`), and one value per question (0-1 scale, a Series by question id; empty: not
    run), whose mean is the estimate. Questions are the unit: each question's outputs are summed up first."""

    cause: str
    prediction: str
    measurement: str
    direction: int
    per_question: pd.Series
    key: str  # a short name, for the manifest's metrics


def _free(outputs: pd.DataFrame, model: str) -> pd.DataFrame:
    """The outputs `model` wrote unforced: the vote pool and min_steps 0."""
    mine = outputs[outputs["model"] == model]
    return mine[(mine["method"] == "pool") | ((mine["method"] == "min_steps") & (mine["value"] == 0))]


def _within_question(frame: pd.DataFrame, flag: pd.Series) -> pd.Series:
    """Per question holding outputs of both kinds: mean correct where `flag` minus where not."""
    correct = frame["correct"].astype(float)
    by = pd.DataFrame({"q": frame["question_id"], "flag": flag.to_numpy(bool), "c": correct.to_numpy()})
    means = by.groupby(["q", "flag"])["c"].mean().unstack()
    if True not in means.columns or False not in means.columns:
        return pd.Series(dtype=float)
    both = means.dropna()
    return both[True] - both[False]


def length_test(outputs: pd.DataFrame, model: str, train_tokens: Sequence[float], quantile: float = 0.95) -> CauseTest:
    """Cause 1 without retraining: on the same question, are `model`'s outputs longer than the training
    paths (above their `quantile`) less accurate than its outputs within them? Every output of the model
    counts (forced ones are how it gets long); pairing within the question keeps its difficulty out."""
    cut = float(np.quantile(np.asarray(train_tokens, float), quantile))
    mine = outputs[outputs["model"] == model]
    long_ = pd.to_numeric(mine["reasoning_tokens"], errors="coerce") > cut
    per_q = _within_question(mine, long_)
    return CauseTest(CAUSES[1], "outputs longer than training showed are less accurate (long - within < 0)",
                     f"{model}: accuracy of outputs above {cut:.0f} reasoning tokens ({100 * quantile:g}% of the "
                     f"training paths are shorter) minus outputs within, same question ({int(long_.sum())} long of "
                     f"{len(mine)} outputs; {len(per_q)} questions have both)", -1, per_q, "long_outputs")


def _forcing_gain_difference(outputs: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Per question: (most - least min_steps forcing) of model a minus the same of model b (empty: not run)."""
    da, db = (forcing_change_per_question(outputs, m) for m in (a, b))
    if da is None or db is None:
        return pd.Series(dtype=float)
    shared = da[0].index.intersection(db[0].index)
    return da[0][shared] - db[0][shared]


def forcing_difference_test(outputs: pd.DataFrame, cause: int, model: str, reference: str, prediction: str,
                            direction: int, key: str, missing: str = "") -> CauseTest:
    """A difference in differences: how much forcing (min_steps, most minus least) gains for `model`,
    minus how much it gains for `reference`, per question. `missing` is the measurement's text when a
    model was not run."""
    per_q = _forcing_gain_difference(outputs, model, reference)
    ran = set(outputs["model"])
    what = (f"forcing gain (most - least min_steps, same question) of {model} minus that of {reference} "
            f"({len(per_q)} questions)")
    if model not in ran or reference not in ran:
        what = missing or f"not run: 07 measured no {model if model not in ran else reference}"
    return CauseTest(CAUSES[cause], prediction, what, direction, per_q, key)


def backtrack_accuracy_test(outputs: pd.DataFrame, model: str) -> CauseTest:
    """Cause 3: on the same question, are `model`'s free outputs that backtracked less accurate than those
    that did not? (A model may backtrack because it is lost, not misled: a difference is evidence that
    backtracking goes with errors, and none is evidence against the cause.)"""
    free = _free(outputs, model)
    backtracked = pd.to_numeric(free["n_backtracks"], errors="coerce").fillna(0) > 0
    per_q = _within_question(free, backtracked)
    return CauseTest(CAUSES[3], "outputs that backtracked are less accurate (backtracked - not < 0)",
                     f"{model}, free outputs: accuracy with a backtrack minus without, same question "
                     f"({int(backtracked.sum())} of {len(free)} outputs backtracked; {len(per_q)} questions have "
                     f"both)", -1, per_q, "backtracked_accuracy")


def abandoned_answers(completion: str, problem) -> tuple[bool, bool]:
    """(reached, abandoned) for one output: reached, some step's state holds the correct option's value
    (the target: the other options cannot be made); abandoned, after that a backtrack left a state holding
    it for one that does not (the question, an earlier step, or an unknown target, which holds nothing
    known). States as scoring.replay_states replays them."""
    trace = fmt.parse(completion).trace
    states = scoring.replay_states(trace, problem.numbers, problem.max_result)[1]
    holds = [s is not None and problem.target in s for s in states]
    start = tuple(sorted(int(n) for n in problem.numbers))
    reached = any(holds)
    for i, move in enumerate(trace.moves):
        if not isinstance(move, fmt.Backtrack) or i >= len(states) or not holds[i]:
            continue
        if move.to == fmt.QUESTION:
            dest = start
        else:
            k = fmt.resolve_backtrack([st.name for st in trace.steps[:i + 1]], move.to)
            dest = None if k is None else states[k]
        if dest is None or problem.target not in dest:
            return reached, True
    return reached, False


def abandoned_answer_test(outputs: pd.DataFrame, model: str, questions: dict) -> CauseTest:
    """Cause 3: of `model`'s free outputs that reached the correct option's value, the share that then
    backtracked away from it (abandoned_answers), per question. Without the cause, a model holding the
    right value keeps it (share 0); questions: dataset.load_countdown_questions' dict by question id."""
    free = _free(outputs, model)
    flags = [abandoned_answers(r.completion, questions[r.question_id].problem) for r in free.itertuples()]
    frame = pd.DataFrame(flags, columns=["reached", "abandoned"], index=free.index).assign(
        question_id=free["question_id"], correct=free["correct"].astype(bool))
    hit = frame[frame["reached"]]
    per_q = hit.groupby("question_id")["abandoned"].mean().astype(float)
    wrong = int((hit["abandoned"] & ~hit["correct"]).sum())
    return CauseTest(CAUSES[3], "a reached right answer is abandoned after a backtrack (share > 0)",
                     f"{model}, free outputs: share of those that reached a state holding the correct value and then "
                     f"backtracked away from it ({int(hit['abandoned'].sum())} of {len(hit)} outputs, {wrong} of them "
                     f"answering wrong; {len(per_q)} questions)", 1, per_q, "abandoned_answers")


def soft_test(outputs: pd.DataFrame, model: str) -> CauseTest:
    """Cause 4: soft bias minus hard forcing at the same min_steps > 0, paired on (question, setting)."""
    soft, hard = _soft_and_hard(outputs, model)
    per_q, what = pd.Series(dtype=float), f"not run: 07 ran no soft-bias setting for {model}"
    if len(soft) and len(hard):
        both, settings = _paired_on_settings(soft, hard)
        per_q = both["correct_a"] - both["correct_b"]
        what = (f"{model}: accuracy with the soft bias minus hard forcing, same question and min_steps "
                f"({settings} settings, {len(per_q)} questions)")
    return CauseTest(CAUSES[4], "a nudge instead of a mask is more accurate (soft - hard > 0)", what, 1, per_q,
                     "soft_minus_hard")


def cause_tests(outputs: pd.DataFrame, questions: dict, train_tokens: Sequence[float], model: str = "RL",
                sft: str = "SFT", long_variant: str | None = "SFT (long paths)",
                reward_variants_: Sequence[str] = ()) -> list[CauseTest]:
    """Every test of the four causes on notebook 07's outputs, in order. `model` is the checkpoint the
    causes are asked of (Steiner's: RL); `sft` its SFT checkpoint; the variants are the retrained models
    of causes 1 and 2 (not run without scaling_retrain_variants)."""
    retrain = "not run: needs scaling_retrain_variants (params/cpu-full.yaml)"
    tests = [length_test(outputs, model, train_tokens)]
    tests.append(forcing_difference_test(
        outputs, 1, long_variant or "SFT (long paths)", sft,
        "SFT on long paths only makes forcing gain more (variant - SFT > 0)", 1, "long_path_variant", retrain))
    tests.append(forcing_difference_test(
        outputs, 2, model, sft, "RL, the only stage that sees the reward, makes forcing gain less (RL - SFT < 0)",
        -1, "rl_against_sft"))
    for name in reward_variants_ or ("RL depth-heavy", "RL breadth-heavy"):
        tests.append(forcing_difference_test(
            outputs, 2, name, model, f"another balance ({name}) makes forcing gain more ({name} - {model} > 0)", 1,
            f"reward_{name.split()[-1].replace('-', '_')}", retrain))
    tests += [backtrack_accuracy_test(outputs, model), abandoned_answer_test(outputs, model, questions),
              soft_test(outputs, model)]
    return tests


def cause_table(tests: Sequence[CauseTest], margin: float = verdicts.MARGIN, n_boot: int = 2000, seed: int = 0,
                target: float = scoring.PRECISION_TARGET) -> pd.DataFrame:
    """One row per test: cause, prediction, measurement, estimate (points), its 95% bootstrap interval over
    questions, the verdict of cause_verdict (against `margin`), and the sample-size columns of
    scoring.sample_size_table (questions, half-width now, questions needed for `target`, target met).
    A test with fewer than 2 questions has no interval: not run. When every question gives the same
    value, a bootstrap interval has zero width whatever the number of questions; the interval is then
    the estimate +- the rule of three's half-width (scoring.questions_needed), within +-100 points,
    so that a few questions alike cannot decide a verdict."""
    rows = []
    for t in tests:
        q = pd.to_numeric(t.per_question, errors="coerce").dropna()
        size = scoring.sample_size_table({t.key: q}, target).iloc[0]
        est = lo = hi = float("nan")
        if len(q) >= 2:
            mean, lo, hi = scoring.bootstrap_ci(q.to_numpy(float), n_boot=n_boot, seed=seed)
            est, lo, hi = 100 * mean, 100 * lo, 100 * hi
            if size["note"].endswith("rule of three"):
                hw = size["half-width now (points)"]
                lo, hi = max(est - hw, -100.0), min(est + hw, 100.0)
        elif len(q) == 1:
            est = 100 * float(q.iloc[0])
        rows.append({"cause": t.cause, "prediction": t.prediction, "measurement": t.measurement, "estimate": est,
                     "ci_low": lo, "ci_high": hi, "verdict": cause_verdict(est, lo, hi, t.direction, margin),
                     "questions": len(q), "half-width now (points)": size["half-width now (points)"],
                     "questions needed": size["questions needed"], "target met": bool(size["target met"])})
    table = pd.DataFrame(rows, columns=CAUSE_COLUMNS, index=[t.key for t in tests])
    table.index.name = "test"
    return table


def _cause_ci(r) -> str:
    if pd.isna(r["ci_low"]):
        return ""
    text_ = f" ({r['estimate']:+.1f} points, 95% CI {r['ci_low']:+.1f} to {r['ci_high']:+.1f}"
    if not r["target met"] and pd.notna(r["questions needed"]):
        text_ += f"; +-{100 * scoring.PRECISION_TARGET:g} points needs {r['questions needed']:.0f} questions"
    return text_ + ")"


def cause_paragraph(table: pd.DataFrame, margin: float = verdicts.MARGIN) -> str:
    """Markdown: the verdicts on each cause, from its tests (cause_table), and the tally."""
    lines = []
    for cause, rows in table.groupby("cause", sort=False):
        parts = [f"{r['prediction']}: **{r['verdict']}**{_cause_ci(r)}" for _, r in rows.iterrows()]
        lines.append(f"- **{cause}**. " + "; ".join(parts) + ".")
    tally = ", ".join(f"{int((table['verdict'] == v).sum())} {v}" for v in CAUSE_VERDICTS)
    head = (f"Of {len(table)} tests, {tally} (the rule: `scaling.cause_verdict`, against 0 and against "
            f"{margin:g} points, the smallest effect the paper reports).")
    return head + "\n\n" + "\n".join(lines)


# --------------------------------------------------------------------------- notebook 07's manifest


def stage_metrics(curves: pd.DataFrame, events: pd.DataFrame, comparison: dict | None, decisions: pd.DataFrame,
                  sizes: pd.DataFrame, causes: pd.DataFrame) -> dict:
    """Notebook 07's manifest metrics: per (model, method) curve its scaling slope and best accuracy; the
    share of bad events per kind (%, events with a known outcome); the soft-minus-hard comparison
    (soft_against_hard); the choices the soft bias changed per min_steps (soft_decisions); each cause test's
    verdict, estimate and interval (cause_table); and the power of every comparison, the curves' end
    points (sample_sizes) with the cause tests."""
    by_curve = curves.groupby(["model", "method"])
    metrics = {f"slope_{m}_{k}": scaling_slope(c) for (m, k), c in by_curve}
    metrics.update({f"best_accuracy_{m}_{k}": float(c["accuracy"].max()) for (m, k), c in by_curve})
    metrics.update({f"bad_share_{k}": float(100 * e["bad"].astype(float).mean())
                    for k, e in events.dropna(subset=["bad"]).groupby("kind")})
    metrics.update({f"soft_minus_hard_{k}": v for k, v in (comparison or {}).items()})
    metrics.update({f"soft_changed_choices_min_steps_{int(r['min_steps'])}": float(r["changed (expected)"])
                    for _, r in decisions.iterrows()})
    metrics.update({f"cause_{k}_{c}": r[c] for k, r in causes.iterrows() for c in ("verdict", "estimate", "ci_low", "ci_high")})
    metrics.update(scoring.power_metrics(pd.concat([sizes, causes])))
    return metrics


__all__ = ["METHODS", "METHOD_LABELS", "parse_names", "step_factory", "budget_factory", "soft_factory",
           "processor_for", "sample_pool", "sequential_runs", "Plan", "measure", "vote", "majority_vote", "curve_point",
           "sequential_curve", "vote_curve", "forcing_change", "curve_end_comparisons", "sample_sizes", "budget_errors", "budget_errors_paragraph", "scaling_slope", "scaling_paragraph", "length_bins", "long_paths",
           "length_paragraph", "reward_variants", "train_reward_variant", "train_long_path_variant", "weights_table", "variant_paragraph",
           "backtrack_events", "event_rates", "context_edges", "context_paragraph", "paired_by_setting",
           "step_end_nudges", "soft_decisions", "soft_paragraph", "forcing_change_per_question",
           "SUPPORTED", "NOT_SUPPORTED", "CAUSE_VERDICTS", "CAUSES", "CAUSE_COLUMNS", "cause_verdict", "CauseTest",
           "length_test", "forcing_difference_test", "backtrack_accuracy_test", "abandoned_answers",
           "abandoned_answer_test", "soft_test", "cause_tests", "cause_table", "cause_paragraph",
           "plan_from_params", "stacked", "measure_models", "measure_reward_variants", "pool_length_bins",
           "backtrack_events_by_model", "soft_against_hard", "stage_metrics"]

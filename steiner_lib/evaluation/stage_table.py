"""The stage table: every checkpoint of the run on the same questions, with paired tests.

Rows, in training order: base, CPT, SFT, RL, RL + logits processor (Steiner's
reasoning_constraints(min_steps, max_steps), its setting chosen on the validation split).
Each row is scored on the same questions with the same greedy decoding, so two adjacent rows
are compared question by question (scoring.paired_bootstrap_diff).

Scoring: the rule of scoring.score_output, except for the base model, which never learned
the 14 reasoning tokens and so never writes <|reasoning_end|>: its letter is read from the last
"Answer: X" anywhere in the completion (`letter_anywhere=True`). All other metrics (format
errors, reasoning tokens: the whole completion when <|reasoning_end|> is missing) are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from steiner_lib.evaluation import scoring, verdicts
from steiner_lib.generation.backends import CPU_DEFAULT

ROWS = ("base", "CPT", "SFT", "RL", "RL + logits processor")
# Which saved checkpoint each row samples: (stage, name).
ROW_CHECKPOINTS = {"base": ("03_cpt", "base"), "CPT": ("03_cpt", "cpt"), "SFT": ("04_sft", "sft"),
                   "RL": ("05_rl", "rl"), "RL + logits processor": ("05_rl", "rl")}
# The paper's reported gains on GPQA-Diamond, in accuracy points, over the row above (None: not reported).
PAPER_DELTAS = {"base": None, "CPT": None, "SFT": None, "RL": 3.53, "RL + logits processor": 5.56}
CHANCE = 25.0  # accuracy (%) of a uniform guess among the four choices


# --------------------------------------------------------------------------- settings


def parse_int_grid(text: str, name: str = "grid") -> list[int]:
    """"0,1,2" -> [0, 1, 2] (sorted, unique, non-negative)."""
    try:
        values = sorted({int(p) for p in str(text).split(",") if p.strip()})
    except ValueError:
        raise ValueError(f"{name}={text!r}: write comma-separated whole numbers, e.g. \"0,1,2\"") from None
    if not values:
        raise ValueError(f"{name}={text!r} is empty: give at least one whole number, e.g. \"0,1,2\"")
    if values[0] < 0:
        raise ValueError(f"{name}={text!r}: step counts cannot be negative")
    return values


def lp_settings(min_steps_grid: str, max_steps_grid: str) -> list[tuple[int, int]]:
    """Every (min_steps, max_steps) of the two grids with min_steps <= max_steps and max_steps >= 1."""
    mins = parse_int_grid(min_steps_grid, "eval_lp_min_steps_grid")
    maxs = parse_int_grid(max_steps_grid, "eval_lp_max_steps_grid")
    out = [(lo, hi) for lo in mins for hi in maxs if lo <= hi and hi >= 1]
    if not out:
        raise ValueError(f"no (min_steps, max_steps) pair with min <= max and max >= 1 in {mins} x {maxs}: "
                         f"widen eval_lp_max_steps_grid")
    return out


def constraints_factory(tokenizer, min_steps: int, max_steps: int) -> Callable:
    """inference.generate's factory form: a fresh ReasoningConstraints per batch, told the prompt width.
    It is a backends.StepConstraints, so the vLLM backend reads the same setting."""
    from steiner_lib.generation.backends import StepConstraints

    return StepConstraints(tokenizer, min_steps, max_steps)


# --------------------------------------------------------------------------- scoring


def extract_letter_anywhere(completion: str) -> str | None:
    """The last "Answer: X" letter anywhere in the text (reasoning tokens or not), or None."""
    matches = scoring.ANSWER_RE.findall(completion)
    return matches[-1] if matches else None



def score_completions(completions, letters: Sequence[str], question_ids: Sequence[str], tokenizer=None,
                      letter_anywhere: bool = False) -> pd.DataFrame:
    """scoring.score_outputs, optionally reading the letter anywhere (the base model's rule)."""
    return with_letter_rule(scoring.score_outputs(completions, letters, tokenizer=tokenizer,
                                                     question_ids=question_ids), letter_anywhere)


def with_letter_rule(scores: pd.DataFrame, letter_anywhere: bool) -> pd.DataFrame:
    """Score frame `scores` (changed in place) under the stage table's letter rule, recorded in letter_rule."""
    if letter_anywhere:
        scores["letter"] = [extract_letter_anywhere(c) for c in scores["completion"]]
        scores["correct"] = scores["letter"].notna() & (scores["letter"] == scores["correct_letter"])
    scores["letter_rule"] = "anywhere" if letter_anywhere else "after reasoning_end"
    return scores


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 64  # benchmarks/generation.py: 64 prompts at 640 tokens take 17 s at 64 against 29 s at 16
    progress: bool = True
    samples: int = 1  # outputs per question; a question's accuracy is the mean over its samples
    backend: str = CPU_DEFAULT  # for a model in this process: lean or transformers (backends.generate)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples={self.samples}: need at least 1 output per question")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"{self.samples} greedy outputs per question would be identical: "
                             f"set a temperature > 0 (eval_temperature) or samples = 1")

    def describe(self) -> str:
        """How the outputs were drawn, in words (for computed paragraphs)."""
        if self.temperature == 0:
            return "greedy decoding"
        return (f"{self.samples} sampled outputs per question at temperature {self.temperature:g}, "
                f"each question scored by their mean" if self.samples > 1 else
                f"one sampled output per question at temperature {self.temperature:g}")


def sample_and_score(model, tokenizer, questions, decoding: Decoding, logits_processor=None,
                     letter_anywhere: bool = False) -> pd.DataFrame:
    """decoding.samples completions per question (batched), scored under the letter rule; questions
    are Choice- or CountdownQuestions (scoring.generate_and_score without the step replay). model:
    a Hugging Face model, or a backends.VLLMModel (backends.stage_loader decides)."""
    scores = scoring.generate_and_score(
        model, tokenizer, questions, decoding.seed, n_samples=decoding.samples,
        max_new_tokens=decoding.max_new_tokens, temperature=decoding.temperature, batch_size=decoding.batch_size,
        logits_processor=logits_processor, progress=decoding.progress, backend=decoding.backend, replay=False)
    return with_letter_rule(scores, letter_anywhere)


def validation_grid(model, tokenizer, questions, settings: Sequence[tuple[int, int]], decoding: Decoding,
                    n_boot: int = 2000) -> pd.DataFrame:
    """The RL model with each logits-processor setting on the validation questions: one row per setting."""
    rows = []
    for lo, hi in settings:
        scores = sample_and_score(model, tokenizer, questions, decoding, constraints_factory(tokenizer, lo, hi))
        rows.append({"min_steps": lo, "max_steps": hi, **_accuracy(scores, n_boot, decoding.seed),
                     "format_error_rate": 100 * (1 - scores["format_ok"].mean()),
                     "mean_steps": scores["n_steps"].mean()})
    return pd.DataFrame(rows)


def choose_setting(grid: pd.DataFrame) -> tuple[int, int]:
    """The most accurate (min_steps, max_steps); ties go to the least forcing (lower min, then higher max)."""
    if grid.empty:
        raise ValueError("choose_setting got an empty grid: run validation_grid on at least one setting")
    best = grid.sort_values(["accuracy", "min_steps", "max_steps"], ascending=[False, True, False]).iloc[0]
    return int(best["min_steps"]), int(best["max_steps"])


# --------------------------------------------------------------------------- the table


def _accuracy(scores: pd.DataFrame, n_boot: int, seed: int) -> dict:
    mean, lo, hi = scoring.bootstrap_ci(scores["correct"].astype(float), n_boot=n_boot, seed=seed,
                                           groups=scores["question_id"])
    return {"accuracy": 100 * mean, "acc_ci_low": 100 * lo, "acc_ci_high": 100 * hi}


def per_question_correct(scores: pd.DataFrame) -> pd.Series:
    return scores.groupby("question_id", sort=True)["correct"].mean().astype(float)


def paired_delta(current: pd.DataFrame, previous: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """current - previous accuracy (points), its paired-bootstrap 95% CI and two-sided p, on shared questions."""
    a, b = per_question_correct(current), per_question_correct(previous)
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))[:3]
        raise ValueError(f"the two rows were scored on different questions (e.g. {only}): "
                         f"a paired test needs the same questions for both")
    b = b.reindex(a.index)
    diff, lo, hi, p = scoring.paired_bootstrap_diff(a.to_numpy(), b.to_numpy(), n_boot=n_boot, seed=seed)
    return {"delta": 100 * diff, "delta_ci_low": 100 * lo, "delta_ci_high": 100 * hi, "p_value": p}


def stage_table(scores: dict[str, pd.DataFrame], paper_deltas: dict | None = PAPER_DELTAS,
                n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per stage (in the order given): accuracy (%, 95% CI), delta to the previous row and
    to the first row (the base model in notebook 06), each with a paired bootstrap test, format-error
    rate (%), mean reasoning tokens, and the paper's delta."""
    if not scores:
        raise ValueError("stage_table got no rows: give {row name: score frame}")
    rows, previous, first = [], None, None
    missing = dict(delta=np.nan, delta_ci_low=np.nan, delta_ci_high=np.nan, p_value=np.nan)
    for name, frame in scores.items():
        row = {"stage": name, "questions": frame["question_id"].nunique(), **_accuracy(frame, n_boot, seed)}
        row.update(missing if previous is None else paired_delta(frame, previous, n_boot, seed))
        to_first = missing if first is None else paired_delta(frame, first, n_boot, seed)
        row.update({f"base_{k}": v for k, v in to_first.items()})
        row["format_error_rate"] = 100 * (1 - frame["format_ok"].astype(float).mean())
        tokens = pd.to_numeric(frame["reasoning_tokens"], errors="coerce")
        row["reasoning_tokens"] = float(tokens.mean()) if tokens.notna().any() else np.nan
        if paper_deltas is not None:
            row["paper_delta"] = paper_deltas.get(name)
        rows.append(row)
        previous = frame
        first = frame if first is None else first
    return pd.DataFrame(rows).set_index("stage")


def split_tables(scores: dict[str, dict[str, pd.DataFrame]], seed: int = 0) -> dict[str, pd.DataFrame]:
    """stage_table of each split of evaluate_stages' scores; only the diamond split (GPQA-Diamond's
    stand-in) is set against the paper's deltas, which it reports for no other benchmark."""
    return {split: stage_table(rows, PAPER_DELTAS if split == "diamond" else None, seed=seed)
            for split, rows in scores.items()}


def metric_key(name: str) -> str:
    """A row or reference name as part of a manifest key: "RL + logits processor" -> "rl_logits_processor"."""
    return name.lower().replace(" + ", "_").replace(",", "").replace(" ", "_")


def stage_metrics(tables: dict[str, pd.DataFrame], references: dict[str, pd.DataFrame],
                  lp_setting: tuple[int, int], sizes: pd.DataFrame) -> dict:
    """Notebook 06's manifest metrics: the chosen logits-processor setting, the power of the sample-size
    table, and per split (split_tables) each row's accuracy, its delta and p against the row above (no
    delta for the first row), and each reference's accuracy."""
    metrics = {"lp_min_steps": lp_setting[0], "lp_max_steps": lp_setting[1], **scoring.power_metrics(sizes)}
    for split, table in tables.items():
        for row, values in table.iterrows():
            key = f"{split}_{metric_key(row)}"
            metrics[f"{key}_accuracy"] = float(values["accuracy"])
            if not np.isnan(values["delta"]):
                metrics[f"{key}_delta"] = float(values["delta"])
                metrics[f"{key}_p"] = float(values["p_value"])
        for name, values in references.get(split, pd.DataFrame()).iterrows():
            metrics[f"{split}_reference_{metric_key(name)}_accuracy"] = float(values["accuracy"])
    return metrics


def headline_comparisons(rows: dict[str, pd.DataFrame], prefix: str = "") -> dict:
    """The comparisons the stage table reads, for scoring.sample_size_table: each row's accuracy
    (against chance, a constant: the accuracy's own interval), each row minus the first (base) and
    minus the row above (paired), in the order of `rows` ({row name: score frame}); the last row's
    change from the row above is, in notebook 06, the logits processor's."""
    names = list(rows)
    out = {f"{prefix}{n} accuracy (against chance)": rows[n] for n in names}
    for i, n in enumerate(names[1:], start=1):
        out[f"{prefix}{n} - {names[0]} (base)"] = (rows[n], rows[names[0]])
        if i >= 2:
            what = "logits processor" if n == "RL + logits processor" else "row above"
            out[f"{prefix}{n} - {names[i - 1]} ({what})"] = (rows[n], rows[names[i - 1]])
    return out


def sample_sizes(scores: dict[str, dict[str, pd.DataFrame]], target: float = scoring.PRECISION_TARGET,
                 control_row: str = "RL") -> pd.DataFrame:
    """Notebook 06's sample-size table (scoring.sample_size_table): every headline comparison of the
    diamond split (headline_comparisons), and on the control split `control_row` minus the row above it
    (the "control unchanged" claim). scores: evaluate_stages' {split: {row: score frame}}."""
    comparisons = headline_comparisons(scores["diamond"], "diamond: ")
    control = scores.get("control") or {}
    names = list(control)
    if control_row in names and names.index(control_row) > 0:
        above = names[names.index(control_row) - 1]
        comparisons[f"control: {control_row} - {above} (row above)"] = (control[control_row], control[above])
    return scoring.sample_size_table(comparisons, target)


def _interval(mean, lo, hi, signed=False) -> str:
    if pd.isna(mean):
        return ""
    fmt_ = "{:+.1f}" if signed else "{:.1f}"
    return f"{fmt_.format(mean)} [{fmt_.format(lo)}, {fmt_.format(hi)}]"


def readable_table(table: pd.DataFrame, references: pd.DataFrame | None = None) -> pd.DataFrame:
    """The stage table as a reader wants it: "26.6 [21.1, 32.0]" cells, named columns, rounded.
    (stage_table's frame, with its raw columns, is what the notebook saves and computes from.)
    `references` (reference_table, the same questions) adds one row per reference below the stages."""
    out = pd.DataFrame(index=table.index)
    out["questions"] = table["questions"].astype(int)
    out["accuracy % [95% CI]"] = [_interval(r.accuracy, r.acc_ci_low, r.acc_ci_high) for r in table.itertuples()]
    out["delta to row above [95% CI]"] = [_interval(r.delta, r.delta_ci_low, r.delta_ci_high, signed=True)
                                          for r in table.itertuples()]
    out["paired p"] = [scoring.format_p(p) for p in table["p_value"]]
    if "base_delta" in table.columns:
        out[f"delta to {table.index[0]} [95% CI]"] = [
            _interval(r.base_delta, r.base_delta_ci_low, r.base_delta_ci_high, signed=True) for r in table.itertuples()]
    out["format errors %"] = table["format_error_rate"].round(1)
    out["reasoning tokens"] = table["reasoning_tokens"].round(0)
    if "paper_delta" in table.columns:
        out["paper's delta"] = [f"{d:+.2f}" if pd.notna(d) else "" for d in table["paper_delta"]]
        out["verdict"] = [verdicts.verdict(r.delta, r.delta_ci_low, r.delta_ci_high, r.paper_delta)
                          if pd.notna(r.paper_delta) else "" for r in table.itertuples()]
    if references is not None:
        ref = pd.DataFrame(index=[f"reference: {name}" for name in references.index], columns=out.columns, data="")
        ref["questions"] = references["n"].astype(int).to_numpy()
        ref["accuracy % [95% CI]"] = [_interval(r.accuracy, r.acc_ci_low, r.acc_ci_high)
                                      for r in references.itertuples()]
        out = pd.concat([out, ref])
    out.index.name = "stage"
    return out


def against_chance(lo: float, hi: float, chance: float = CHANCE) -> str:
    """Where an accuracy interval (%) stands against chance: "above", "below" or "at" (it holds chance)."""
    return "above" if lo > chance else "below" if hi < chance else "at"


def chance_sentence(table: pd.DataFrame, chance: float = CHANCE) -> str:
    """One sentence: which stages' 95% intervals lie above chance, said plainly when none does."""
    above = [s for s, r in table.iterrows() if against_chance(r["acc_ci_low"], r["acc_ci_high"], chance) == "above"]
    if not above:
        return (f"**No stage is above chance**: every 95% interval's lower bound is at or below {chance:g}%, so "
                f"no checkpoint is shown to have learned these questions, and the changes between rows compare "
                f"models at chance.")
    return (f"Above chance ({chance:g}%, the 95% interval's lower bound above it): {', '.join(above)}"
            f" ({len(above)} of {len(table)} rows).")


def _change_text(delta, lo, hi, p) -> str:
    return f"{delta:+.1f} points (95% CI {lo:+.1f} to {hi:+.1f}, p {scoring.p_phrase(p)})"


def reproduction_paragraph(table: pd.DataFrame, benchmark: str = "the benchmark",
                           decoding: str = "greedy decoding", chance: float = CHANCE) -> str:
    """Markdown, computed from the table: each stage against chance, against the first row (base) and
    against the row above; where the paper reports a change, the verdict of verdicts.verdict."""
    first = table.index[0]
    head = (f"On {benchmark} ({int(table['questions'].iloc[0])} questions, {decoding}; chance is {chance:g}%). "
            + chance_sentence(table, chance))
    lines, judged = [], []
    for i, (stage, row) in enumerate(table.iterrows()):
        where = {"above": "above chance", "below": "below chance", "at": "not distinguishable from chance"}[
            against_chance(row["acc_ci_low"], row["acc_ci_high"], chance)]
        parts = [f"{row['accuracy']:.1f}% (95% CI {row['acc_ci_low']:.1f} to {row['acc_ci_high']:.1f}), {where}"]
        if i >= 2 and "base_delta" in table.columns:
            parts.append(f"against {first} " + _change_text(row["base_delta"], row["base_delta_ci_low"],
                                                            row["base_delta_ci_high"], row["base_p_value"]))
        if i >= 1:
            above = table.index[i - 1]
            parts.append(f"against {above} (the row above) " + _change_text(row["delta"], row["delta_ci_low"],
                                                                            row["delta_ci_high"], row["p_value"]))
        paper = row.get("paper_delta") if "paper_delta" in table.columns else None
        text_ = f"- **{stage}**: " + "; ".join(parts)
        if i >= 1 and paper is not None and pd.notna(paper):
            v = verdicts.verdict(row["delta"], row["delta_ci_low"], row["delta_ci_high"], paper)
            judged.append((stage, v))
            text_ += f". The paper reports {paper:+.2f}: **{v}** ({verdicts.reason(v)})"
        lines.append(text_ + ".")
    if len(table) == 1:
        return head + "\n\nThe table has a single row: there is no change between rows to test."
    if judged:
        counts = {v: [s for s, w in judged if w == v] for v in verdicts.VERDICTS}
        tally = "; ".join(f"{v}: {', '.join(c)}" for v, c in counts.items() if c)
        head += f" Of the {len(judged)} changes the paper reports a figure for, {tally}."
    return head + "\n\n" + "\n".join(lines)


def plot_stage_tables(tables: dict[str, pd.DataFrame]):
    """Accuracy per stage with its 95% CI, one group of bars per split (e.g. diamond, control)."""
    import matplotlib.pyplot as plt

    if not tables:
        raise ValueError("plot_stage_tables got no table: give {split name: stage_table(...)}")
    stages_ = list(next(iter(tables.values())).index)
    width = 0.8 / len(tables)
    fig, ax = plt.subplots(figsize=(1.6 * len(stages_) + 2, 3.6))
    x = np.arange(len(stages_))
    for k, (split, t) in enumerate(tables.items()):
        t = t.reindex(stages_)
        err = np.vstack([t["accuracy"] - t["acc_ci_low"], t["acc_ci_high"] - t["accuracy"]])
        ax.bar(x + (k - (len(tables) - 1) / 2) * width, t["accuracy"], width, yerr=err, capsize=3, label=split)
    ax.set_xticks(x, stages_, rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.axhline(CHANCE, color="grey", lw=0.8, ls="--", label="chance (4 choices)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_tiers(tables: dict[str, pd.DataFrame], references: dict[str, pd.DataFrame] | None = None,
               rows: Sequence[str] | None = None):
    """Accuracy (95% CI) by difficulty tier, one line per stage row and per reference, chance dashed.

    tables: {tier: stage_table} in order of difficulty (e.g. control, diamond, hard);
    references: {tier: reference_table}, whose teacher and greedy rows are drawn dotted.
    """
    import matplotlib.pyplot as plt

    if not tables:
        raise ValueError("plot_tiers got no table: give {tier: stage_table(...)}")
    tiers = list(tables)
    rows = list(rows or next(iter(tables.values())).index)
    x = np.arange(len(tiers))
    fig, ax = plt.subplots(figsize=(1.8 * len(tiers) + 3, 3.8))

    def line(frames, name, **style):
        cols = ["accuracy", "acc_ci_low", "acc_ci_high"]
        acc, lo, hi = np.array([frames[t].reindex([name])[cols].iloc[0].to_numpy(float) for t in tiers]).T
        ax.errorbar(x, acc, yerr=np.vstack([acc - lo, hi - acc]), capsize=3, marker="o", label=name, **style)

    for name in rows:
        line(tables, name)
    for name in ("search teacher, no answer", "greedy shortcut"):
        if references and all(name in references.get(t, pd.DataFrame()).index for t in tiers):
            line(references, name, ls=":", color="black" if "teacher" in name else "grey")
    ax.axhline(CHANCE, color="grey", lw=0.8, ls="--", label="chance (4 choices)")
    ax.set_xticks(x, tiers)
    ax.set_xlabel("difficulty tier (easier to harder)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- all rows


def step_budget(paths, max_new_tokens: int) -> int:
    """Steps a model output can hold within `max_new_tokens`: the token budget over the mean tokens
    per step of the training paths (notebook 02's kept paths; at least 1)."""
    rows = paths.to_pandas() if hasattr(paths, "to_pandas") else pd.DataFrame(paths)
    if "kept" in rows:
        rows = rows[rows["kept"]]
    steps = int(rows["n_steps"].sum())
    if steps == 0:
        raise ValueError("the paths hold no step: run notebook 02 first")
    return max(1, int(max_new_tokens // (rows["reasoning_tokens"].sum() / steps)))


REFERENCES = ("chance", "greedy shortcut", "search teacher, no answer", "exact solver")


def reference_scores(questions, teacher, max_steps: int, seed: int = 0) -> pd.DataFrame:
    """The references of the stage table on the same questions (CountdownQuestions): one row per
    (reference, question). A searcher that ends without the answer guesses, so it scores 1/4.

    chance: 1/4; greedy shortcut: countdown.greedy_solve; search teacher, no answer:
    teachers.solve_unaided within `max_steps` steps (the models' step budget); exact solver: 1.
    """
    from steiner_lib.data import teachers
    from steiner_lib.tasks.countdown import greedy_solve

    rows = []
    for q in questions:
        unaided = teachers.solve_unaided(teacher, q, max_steps, seed)
        solved = {"chance": False, "greedy shortcut": greedy_solve(q.problem) is not None,
                  "search teacher, no answer": unaided["solved"], "exact solver": True}
        for name in REFERENCES:
            rows.append({"reference": name, "question_id": q.question_id, "solved": solved[name],
                         "correct": 1.0 if solved[name] else 0.25})
    return pd.DataFrame(rows)


def references_for(questions, teacher_params, paths, max_new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """reference_table on `questions` (CountdownQuestions), the teacher searching within the step
    budget of `max_new_tokens` (step_budget over notebook 02's paths); its `step_budget` attribute
    records that budget. teacher_params: the params section 01 ran with (StageWriter.input_params)."""
    from steiner_lib.data import teachers

    budget = step_budget(paths, max_new_tokens)
    table = reference_table(reference_scores(questions, teachers.search_teacher(teacher_params), budget, seed),
                            seed=seed)
    table.attrs["step_budget"] = budget
    return table


def reference_table(scores: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Accuracy (%, 95% bootstrap CI over questions) and solved share of each reference."""
    out = {}
    for name in REFERENCES:
        s = scores[scores["reference"] == name]
        if len(s):
            out[name] = {**_accuracy(s, n_boot, seed), "solved": 100 * float(s["solved"].mean()), "n": len(s)}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "reference"
    return table


def evaluate_stages(load: Callable, splits: dict[str, list], lp_setting: tuple[int, int], decoding: Decoding,
                    rows: Sequence[str] = ROWS) -> dict[str, dict[str, pd.DataFrame]]:
    """scores[split][row] for every row on every split; `load(stage, name)` returns (model, tokenizer).

    Each checkpoint is loaded once and sampled on all splits before the next one is loaded.
    """
    scores: dict[str, dict[str, pd.DataFrame]] = {split: {} for split in splits}
    loaded_key, model, tokenizer = None, None, None
    for row in rows:
        key = ROW_CHECKPOINTS[row]
        if key != loaded_key:
            model, tokenizer = load(*key)
            loaded_key = key
        processor = constraints_factory(tokenizer, *lp_setting) if row == "RL + logits processor" else None
        for split, questions in splits.items():
            scores[split][row] = sample_and_score(model, tokenizer, questions, decoding, processor,
                                                  letter_anywhere=(row == "base")).assign(stage=row, split=split)
    return scores


def all_scores(scores: dict[str, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """One long frame of every scored output (for saving), error_kinds as text."""
    frame = pd.concat([f for by_row in scores.values() for f in by_row.values()], ignore_index=True)
    return frame.assign(error_kinds=frame["error_kinds"].astype(str))


__all__ = ["ROWS", "ROW_CHECKPOINTS", "PAPER_DELTAS", "parse_int_grid", "lp_settings", "constraints_factory",
           "extract_letter_anywhere", "question_id", "score_completions", "with_letter_rule", "Decoding", "sample_and_score",
           "validation_grid", "choose_setting", "per_question_correct", "paired_delta", "stage_table", "readable_table",
           "split_tables", "metric_key", "stage_metrics", "headline_comparisons", "sample_sizes",
           "reproduction_paragraph", "against_chance", "chance_sentence", "CHANCE", "plot_stage_tables", "evaluate_stages", "all_scores"]

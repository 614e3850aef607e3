"""The run, summed up (notebook 08): the paper's claims against this run, and how the run was made.

Everything here is read from the run directory, never typed in: each stage's manifest.json
(metrics, seed, package versions, git commit, wall time), the runner's sidecars
executed/NN_name.json (the notebook's wall time and the preset it ran with) and the stage
tables (06_evaluation/stage_table.csv, control_table.csv, 07_inference_scaling/outputs.parquet).
Every verdict is verdicts.verdict's (reproduced, contradicted, inconclusive, not run).
A stage that has not finished gives a "not run" row, never an error, so the summary of a run
with only some notebooks executed is still a true summary.

    load_run(run_dir)            -> RunRecord (manifests, sidecars, stage tables of one run)
    claims_table(run)            -> one row per claim: the paper's figure, this run's (with CI), verdict
    notebook_times(run)          -> one row per notebook: wall time, seed, params hash, commit
    versions_table(run)          -> one row per package: the version each stage recorded
    hardware_table()             -> CPU model, cores, RAM, GPUs of the machine running this
    show_table(frame)            -> a display object: an HTML table, and a Markdown table for the PDF
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from steiner_lib.evaluation import scoring, verdicts
from steiner_lib.params import STAGES, run_dir
from steiner_lib.stages import MANIFEST, StageWriter, read_manifest

log = logging.getLogger("steiner_lib.report.summary")

SUMMARY_STAGE = "08_summary"
NOT_RUN = verdicts.NOT_RUN
SCALED = "scaled down by the preset"
SET_BY_PRESET = "set by the preset"
UNTESTED = (NOT_RUN, SCALED, SET_BY_PRESET)
# The effect that matters for the paper's claims of no change (the margin of verdicts.verdict).
MARGIN = verdicts.MARGIN
# The paper's data set (Ji 2024): what the synthesis of notebooks 01-02 is measured against.
PAPER_DATA = {"DAGs": 10_000, "paths": 50_000, "mean reasoning tokens": 1_600,
              "max reasoning tokens": 4_096, "max total tokens": 8_192}
CHAPTER = {"01_synthesis": "ch. 1", "02_dag": "ch. 2", "03_cpt": "ch. 3", "04_sft": "ch. 4", "05_rl": "ch. 5",
           "06_evaluation": "ch. 6", "07_inference_scaling": "ch. 7"}


# --------------------------------------------------------------------------- reading a run


@dataclass
class RunRecord:
    """What one run directory holds: manifests and runner sidecars by stage (None: not finished)."""

    path: Path
    manifests: dict[str, dict | None] = field(default_factory=dict)
    sidecars: dict[str, dict | None] = field(default_factory=dict)

    def finished(self, stage: str) -> bool:
        return self.manifests.get(stage) is not None

    def metrics(self, stage: str) -> dict:
        return (self.manifests.get(stage) or {}).get("metrics") or {}

    def csv(self, stage: str, name: str, **kwargs) -> pd.DataFrame | None:
        """A stage table, or None when the stage has not finished or did not write it."""
        p = self.path / stage / name
        return pd.read_csv(p, **kwargs) if self.finished(stage) and p.is_file() else None


def load_run(path: str | Path, stages: tuple[str, ...] = STAGES) -> RunRecord:
    """Read the manifests and sidecars of every stage of the run at `path` (missing ones as None)."""
    path = Path(path)
    run = RunRecord(path)
    for stage in stages:
        run.manifests[stage] = read_manifest(path / stage)
        try:
            run.sidecars[stage] = json.loads((path / "executed" / f"{stage}.json").read_text())
        except (OSError, ValueError):
            run.sidecars[stage] = None
    return run


def finished_stages(path: str | Path, before: str = SUMMARY_STAGE) -> tuple[str, ...]:
    """The stages before `before` that have a manifest in the run at `path`."""
    return tuple(s for s in STAGES if s < before and (Path(path) / s / MANIFEST).is_file())


def open_summary_stage(namespace: dict):
    """The setup cell of notebook 08: validate the run params, open the stage with every finished
    earlier stage as an input (so the runner reruns 08 when any of them changes), read the run.
    Returns (params, writer, RunRecord)."""
    from steiner_lib.params import from_notebook

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
    params = from_notebook(SUMMARY_STAGE, namespace)
    d = run_dir(params)
    writer = StageWriter(params, SUMMARY_STAGE, inputs=finished_stages(d))
    return params, writer, load_run(d, tuple(s for s in STAGES if s != SUMMARY_STAGE))


# --------------------------------------------------------------------------- the claims


def _points(x: float) -> str:
    return f"{x:+.2f}"


def _delta_text(row: pd.Series, questions: int | None = None) -> str:
    q = f"; {questions} questions" if questions else ""
    return (f"{_points(row['delta'])} points (95% CI {_points(row['delta_ci_low'])} to "
            f"{_points(row['delta_ci_high'])}, p {scoring.p_phrase(row['p_value'])}{q})")


def _not_run(claim: str, paper: str, stage: str, what: str = "") -> dict:
    return {"claim": claim, "paper": paper, "this run": f"{NOT_RUN}: notebook {stage} has not finished{what}",
            "verdict": NOT_RUN, "where": CHAPTER.get(stage, stage)}


def _stage_row(table: pd.DataFrame | None, name: str) -> pd.Series | None:
    if table is None or "stage" not in table.columns:
        return None
    rows = table[table["stage"] == name]
    return rows.iloc[0] if len(rows) else None


def _judged(claim: str, paper: str, text: str, row, effect: float, expect: str, where: str) -> dict:
    """A claims-table row whose verdict is verdicts.verdict of the row's delta and 95% interval."""
    return {"claim": claim, "paper": paper, "this run": text,
            "verdict": verdicts.verdict(row["delta"], row["delta_ci_low"], row["delta_ci_high"], effect, expect),
            "where": where}


def _stage_claim(run: RunRecord, claim: str, paper: str, row_name: str, effect: float, file: str = "stage_table.csv",
                 expect: str = "change") -> dict:
    table = run.csv("06_evaluation", file)
    row = _stage_row(table, row_name)
    if row is None:
        return _not_run(claim, paper, "06_evaluation", "" if table is None else f" (no {row_name!r} row in {file})")
    return _judged(claim, paper, _delta_text(row, int(row["questions"])), row, effect, expect, CHAPTER["06_evaluation"])


def _data_claims(run: RunRecord) -> list[dict]:
    if not run.finished("02_dag"):
        return [_not_run("data set: DAGs, paths, reasoning tokens", "10,000 DAGs, 50,000 paths, ~1,600 tokens",
                         "02_dag")]
    m = run.metrics("02_dag")
    p = (run.manifests["02_dag"] or {}).get("params") or {}
    tok = "this run's BPE" if not p.get("tokenizer_name_or_path") else p["tokenizer_name_or_path"]
    rows = []
    for claim, key, paper_key in (("data set: DAGs (one per question)", "n_dags", "DAGs"),
                                  ("data set: sampled reasoning paths", "n_paths_kept", "paths")):
        ours, paper = m.get(key), PAPER_DATA[paper_key]
        rows.append({"claim": claim, "paper": f"{paper:,}",
                     "this run": f"{ours:,} ({ours / paper:.1%} of the paper's)" if ours is not None else "not recorded",
                     "verdict": SCALED, "where": CHAPTER["02_dag"]})
    mean = m.get("mean_reasoning_tokens")
    cap_r, cap_t = p.get("dag_max_reasoning_tokens"), p.get("dag_max_total_tokens")
    rows.append({"claim": "data set: reasoning tokens per path", "paper": "about 1,600 (Qwen2.5 tokens)",
                 "this run": (f"{mean:,.0f} mean ({tok} tokenizer); caps {cap_r:,} reasoning / {cap_t:,} total; "
                              f"{m.get('share_filtered_out', 0):.1%} filtered out") if mean is not None else "not recorded",
                 "verdict": SCALED, "where": CHAPTER["02_dag"]})
    if m.get("n_dags"):
        asked = p.get("dag_paths_per_dag")
        rows.append({"claim": "data set: paths per DAG", "paper": f"{PAPER_DATA['paths'] / PAPER_DATA['DAGs']:.0f}",
                     "this run": f"{m['n_paths_kept'] / m['n_dags']:.2f} (dag_paths_per_dag: {asked}; small DAGs give "
                                 f"fewer distinct paths), {m.get('mean_backtracks_per_path', float('nan')):.2f} "
                                 f"backtracks per path",
                     "verdict": SET_BY_PRESET, "where": CHAPTER["02_dag"]})
    return rows


def _cpt_claim(run: RunRecord, no_cpt_run: RunRecord | None) -> dict:
    claim, paper = "CPT might be redundant (small models)", "suspected, no figure"
    if no_cpt_run is None or not no_cpt_run.finished("06_evaluation") or not run.finished("06_evaluation"):
        return {"claim": claim, "paper": paper,
                "this run": f"{NOT_RUN}: needs a second run with cpt_enabled: false (run_name: "
                            f"{run.path.name}_no_cpt), compared at the RL row",
                "verdict": NOT_RUN, "where": CHAPTER["03_cpt"]}
    from steiner_lib.evaluation import scoring, stage_table

    a = pd.read_parquet(no_cpt_run.path / "06_evaluation" / "scores.parquet")
    b = pd.read_parquet(run.path / "06_evaluation" / "scores.parquet")
    pick = lambda s: stage_table.per_question_correct(s[(s["split"] == "diamond") & (s["stage"] == "RL")])
    without, with_ = pick(a), pick(b)
    shared = without.index.intersection(with_.index)
    if not len(shared):
        return {"claim": claim, "paper": paper, "this run": f"{NOT_RUN}: the two runs share no diamond question",
                "verdict": NOT_RUN, "where": CHAPTER["03_cpt"]}
    diff, lo, hi, p = scoring.paired_bootstrap_diff(without[shared].to_numpy(), with_[shared].to_numpy())
    row = pd.Series({"delta": 100 * diff, "delta_ci_low": 100 * lo, "delta_ci_high": 100 * hi, "p_value": p})
    # redundant: dropping CPT loses no accuracy beyond the margin
    return _judged(claim, paper, f"RL accuracy without CPT minus with CPT: {_delta_text(row, len(shared))}; "
                   f"margin {MARGIN:g} points", row, MARGIN, "no loss", CHAPTER["03_cpt"])


def _scaling_claim(run: RunRecord, model: str = "RL") -> dict:
    """The paper's experiment: forcing more steps (min_steps), paired on the questions, for `model`
    (the last checkpoint 07 measured when `model` is not among them)."""
    claim, paper = "no inference-time scaling (forcing more steps)", "no gain on almost all benchmarks; declines on GPQA"
    where = CHAPTER["07_inference_scaling"]
    if not run.finished("07_inference_scaling"):
        return _not_run(claim, paper, "07_inference_scaling")
    path = run.path / "07_inference_scaling" / "outputs.parquet"
    outputs = pd.read_parquet(path) if path.is_file() else None
    if outputs is None or not {"model", "method", "value", "question_id", "correct"} <= set(outputs.columns):
        return {"claim": claim, "paper": paper, "this run": f"{NOT_RUN}: 07 wrote no outputs.parquet with the "
                f"scored outputs", "verdict": NOT_RUN, "where": where}
    from steiner_lib.evaluation import scaling

    forced = outputs[outputs["method"] == "min_steps"]
    models = list(dict.fromkeys(forced["model"]))
    name = model if model in models else (models[-1] if models else model)
    change = scaling.forcing_change(outputs, name) if models else None
    if change is None:
        return {"claim": claim, "paper": paper, "this run": f"{NOT_RUN}: 07's min_steps grid has fewer than two "
                f"settings", "verdict": NOT_RUN, "where": where}
    text = (f"{name}, min_steps {change['low']} -> {change['high']} ({change['tokens_low']:.0f} -> "
            f"{change['tokens_high']:.0f} reasoning tokens): {_delta_text(pd.Series(change), change['questions'])}; "
            f"margin {MARGIN:g} points")
    return _judged(claim, paper, text, change, MARGIN, "no gain", where)


def claims_table(run: RunRecord, no_cpt_run: RunRecord | None = None) -> pd.DataFrame:
    """The paper's claims, one row each: the paper's figure, this run's (with 95% CI), a verdict by
    verdicts.verdict (reproduced, contradicted, inconclusive, not run): changes against the paper's
    figure, claims of no change (or no loss, no gain) against the margin MARGIN. Data-set sizes are
    scaled down by the preset and say by how much."""
    from steiner_lib.evaluation.stage_table import PAPER_DELTAS

    rows = _data_claims(run)
    rows.append(_cpt_claim(run, no_cpt_run))
    rows.append(_stage_claim(run, "RL improves GPQA-Diamond", "+3.53 points", "RL", PAPER_DELTAS["RL"]))
    rows.append(_stage_claim(run, "the logits processor adds more", "+5.56 points (best setting)", "RL + logits processor",
                             PAPER_DELTAS["RL + logits processor"]))
    rows.append(_stage_claim(run, "RL leaves a no-search control unchanged (MMLU)", "MMLU unchanged", "RL", MARGIN,
                             file="control_table.csv", expect="none"))
    rows.append(_scaling_claim(run))
    return pd.DataFrame(rows).set_index("claim")


def claims_paragraph(claims: pd.DataFrame, stage_table: pd.DataFrame | None = None) -> str:
    """Markdown: how many claims reproduce, which are contradicted or inconclusive, which were not run
    (from the table); given 06's stage table, whether any stage is above chance, said plainly."""
    from steiner_lib.evaluation.stage_table import chance_sentence

    v = claims["verdict"]
    tested = v[~v.isin(UNTESTED)]
    ok = tested[tested == verdicts.REPRODUCED]
    lines = [f"Of {len(tested)} claims this run tests, **{len(ok)} reproduce{'s' if len(ok) == 1 else ''}**"
             + (f" ({', '.join(ok.index)})" if len(ok) else "") + "."]
    for name, what in ((verdicts.CONTRADICTED, "Contradicted"), (verdicts.INCONCLUSIVE, "Inconclusive")):
        these = tested[tested == name]
        if len(these):
            lines.append(f"{what}: {'; '.join(these.index)}.")
    if (tested == verdicts.INCONCLUSIVE).any():
        lines.append("An inconclusive verdict means the 95% interval is too wide at this run's sample sizes to "
                     "tell the paper's effect (or, for a claim of no change, one of the margin's size) from none.")
    skipped = v[v == NOT_RUN]
    if len(skipped):
        lines.append("Not run here: " + "; ".join(skipped.index) + ".")
    scaled = v[v == SCALED]
    if len(scaled):
        lines.append(f"{len(scaled)} data-set figures are scaled down by the preset (params/*.yaml sets them).")
    if stage_table is not None and {"acc_ci_low", "acc_ci_high"} <= set(stage_table.columns) and len(stage_table):
        lines.append("On the diamond split (notebook 06): " + chance_sentence(stage_table.set_index("stage")
                                                                         if "stage" in stage_table.columns else stage_table))
    return " ".join(lines)


# --------------------------------------------------------------------------- the reproducibility statement


def notebook_times(run: RunRecord) -> pd.DataFrame:
    """One row per notebook of the run: whether it ran, its wall time, the preset, seed, params hash, commit."""
    rows = []
    for stage, m in run.manifests.items():
        side = run.sidecars.get(stage) or {}
        if m is None:
            rows.append({"notebook": stage, "status": NOT_RUN})
            continue
        rows.append({
            "notebook": stage, "status": "finished",
            "notebook wall time (s)": side.get("seconds", np.nan),
            "stage wall time (s)": m.get("wall_time_s", np.nan),
            "preset": side.get("params_source", m.get("params_source", "")),
            "seed": str(m.get("seed", "")), "params hash": m.get("params_hash"),
            "git commit": (m.get("git_commit") or "unknown")[:10],
            "started (UTC)": str(m.get("started_at", ""))[:19].replace("T", " "),
        })
    frame = pd.DataFrame(rows).set_index("notebook")
    if "notebook wall time (s)" in frame:
        total = frame["notebook wall time (s)"].sum(min_count=1)
        frame.loc["total", "notebook wall time (s)"] = total
        frame.loc["total", "stage wall time (s)"] = frame["stage wall time (s)"].sum(min_count=1)
        frame.loc["total", "status"] = f"{int((frame['status'] == 'finished').sum())} finished"
    return frame  # empty cells stay NaN: show_table prints them blank


def versions_table(run: RunRecord) -> pd.DataFrame:
    """One row per package: the version every finished stage recorded, or each stage's where they differ."""
    seen: dict[str, dict[str, str]] = {}
    for stage, m in run.manifests.items():
        for pkg, version in ((m or {}).get("versions") or {}).items():
            seen.setdefault(pkg, {})[stage] = version
    rows = []
    for pkg, by_stage in seen.items():
        versions = sorted(set(by_stage.values()))
        rows.append({"package": pkg, "version": versions[0] if len(versions) == 1 else
                     "; ".join(f"{s}: {v}" for s, v in by_stage.items()),
                     "stages": len(by_stage), "same in every stage": len(versions) == 1})
    return pd.DataFrame(rows, columns=["package", "version", "stages", "same in every stage"]).set_index("package")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict:
    """The machine running this: OS, CPU model, logical cores, RAM, GPUs (via torch, if any)."""
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch or a broken CUDA install: report no GPU rather than fail the summary
        gpus = []
    ram = _ram_gb()
    return {"OS": f"{platform.system()} {platform.release()}", "Python": platform.python_version(),
            "CPU": _cpu_model(), "logical cores": os.cpu_count(),
            "RAM (GB)": round(ram, 1) if ram else "unknown", "GPUs": ", ".join(gpus) if gpus else "none"}


def hardware_table() -> pd.DataFrame:
    return pd.DataFrame({"value": {k: str(v) for k, v in hardware().items()}}).rename_axis("machine")


# --------------------------------------------------------------------------- tables for every output format


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (what Quarto's typst/PDF route and plain Markdown readers show), index first."""
    frame = frame.reset_index() if frame.index.name or not isinstance(frame.index, pd.RangeIndex) else frame

    def cell(v) -> str:
        if isinstance(v, float):
            v = "" if v != v else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}")
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule] + body)


class Table:
    """A DataFrame shown as a real table in every format: text/html for the HTML report and
    notebooks, text/markdown for Quarto's PDF (which otherwise falls back to printed text)."""

    def __init__(self, frame: pd.DataFrame, float_format: str = "{:,.2f}"):
        self.frame = frame
        self.float_format = float_format

    def _repr_html_(self) -> str:
        # One header row (the index as the first column), text left-aligned: a table to read, not a frame dump.
        frame = self.frame.reset_index() if self.frame.index.name else self.frame
        out = frame.to_html(float_format=lambda v: self.float_format.format(v), na_rep="", escape=True,
                            border=0, classes="dataframe steiner-table", index=not self.frame.index.name)
        style = ("<style>table.steiner-table th, table.steiner-table td { text-align: left !important; "
                 "vertical-align: top; }</style>")  # notebook themes right-align cells; prose reads left
        return style + out.replace('<tr style="text-align: right;">', '<tr style="text-align: left;">')

    def _repr_markdown_(self) -> str:
        return markdown_table(self.frame)

    def __repr__(self) -> str:
        return self.frame.to_string()


def show_table(frame: pd.DataFrame, float_format: str = "{:,.2f}") -> Table:
    """Wrap a frame for display (the last expression of a cell, or IPython.display.display)."""
    return Table(frame, float_format)


__all__ = ["RunRecord", "load_run", "finished_stages", "open_summary_stage", "MARGIN", "claims_table",
           "claims_paragraph", "notebook_times", "versions_table", "hardware", "hardware_table", "markdown_table",
           "Table", "show_table"]

"""Does the default recipe learn the task? Notebooks 01-04 on several seeds, one row per seed.

For each seed the runner executes 01_synthesis .. 04_sft (Papermill, the real notebooks) on the
preset plus `--set` overrides, into runs/<label>-s<seed>, and the row is read from the manifests
those notebooks wrote: the base model's arithmetic and copying accuracy (03), the held-out
valid-step share, format-valid share and solve rate after SFT (04), the training tokens and
tokens/s of each stage. Rows are appended to --out (benchmarks/results/learnability.csv), so
the limitations page can show the measurements that chose the defaults, with their seeds. The
points of 04's learning curve (held-out skills at evenly spaced SFT steps, sampling_curve.csv)
are appended to --curve-out (benchmarks/results/learning_curve.csv), labelled the same way, so
04 can draw valid-step share against training tokens for every recorded setting and seed.

    .venv/bin/python benchmarks/learnability.py --seeds 0,1
    .venv/bin/python benchmarks/learnability.py --seeds 0 --label facts0 --set base_fact_copies=0

A benchmark, not a test: it trains (minutes per seed on 2 cores). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steiner_lib import params as P  # noqa: E402
from steiner_lib.data import dataset  # noqa: E402

COLUMNS = ("label", "seed", "overrides", "base_facts_read", "base_facts_held_out", "base_copy", "base_sort",
           "base_take", "base_option_drill", "base_letter_of_written_value", "cpt_facts_read", "heldout_valid_step_share",
           "heldout_valid_step_share_ci", "heldout_greedy_valid_step_share", "heldout_greedy_valid_step_share_ci",
           "heldout_format_valid_share",
           "heldout_solve_rate", "heldout_solve_rate_ci", "heldout_target_reached", "heldout_target_reached_ci",
           "heldout_letter_holds_value", "heldout_letter_holds_value_ci", "teacher_solve_rate", "base_tokens",
           "cpt_tokens", "sft_tokens", "sft_tokens_per_s", "wall_time_s_01_04")


LETTER_HOLDS = "heldout_letter_holds_the_written_value"  # 04's manifest key (scoring.SUMMARY_METRICS)


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: write key=value, e.g. --set base_fact_copies=4")
        k, v = item.split("=", 1)
        value = yaml.safe_load(v)
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads "3e-3" (no dot) as a string; a number was meant
        out[k.strip()] = value
    return out


def run_seed(preset: Path, overrides: dict, label: str, seed: int) -> tuple[dict, Path]:
    """Notebooks 01-04 on the preset plus overrides as run <label>-s<seed>: its learnability row and
    its run directory."""
    values = yaml.safe_load(preset.read_text()) or {}
    values.update(overrides, run_name=f"{label}-s{seed}", run_seed=seed)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=ROOT / "runs") as f:
        yaml.safe_dump(values, f)
    try:
        cfg = P.load_preset(f.name)  # a clear error before any compute
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "steiner_lib", "run", "--params", f.name, "--only", "01,02,03,04",
                        "--no-progress"], cwd=ROOT, check=True)
        wall = time.perf_counter() - start
    finally:
        os.unlink(f.name)
    run = P.run_dir(cfg)
    return row_from_run(run, label, seed, overrides, wall), run


def stage_seconds(run: Path, stages=("01_synthesis", "02_dag", "03_cpt", "04_sft")) -> float:
    """The wall time the runner recorded for each stage of a run (runs/<name>/executed/<stage>.json), summed."""
    return sum(json.loads((run / "executed" / f"{s}.json").read_text())["seconds"] for s in stages)


def row_from_run(run: Path, label: str, seed: int, overrides: dict, wall: float | None = None) -> dict:
    """The learnability row of a finished run, read from the manifests 03 and 04 wrote (wall: 01-04's
    recorded stage times when not given)."""
    m3 = json.loads((run / "03_cpt" / "manifest.json").read_text())["metrics"]
    m4 = json.loads((run / "04_sft" / "manifest.json").read_text())["metrics"]
    ci = lambda k: f"[{m4.get(k + '_ci_low', float('nan')):.3f}, {m4.get(k + '_ci_high', float('nan')):.3f}]"  # noqa: E731
    return {
        "label": label, "seed": seed, "overrides": json.dumps(overrides, sort_keys=True),
        "base_facts_read": m3.get("base_accuracy_arithmetic_facts_read"),
        "base_facts_held_out": m3.get("base_accuracy_arithmetic_facts_held_out"),
        "base_copy": m3.get("base_accuracy_list_drill_copy"), "base_sort": m3.get("base_accuracy_list_drill_sort"),
        "base_take": m3.get("base_accuracy_list_drill_take"),
        "base_option_drill": m3.get("base_accuracy_option_drill_letter_of_a_value"),
        "base_letter_of_written_value": m3.get("base_accuracy_question_prompt_letter_of_a_written_value"),
        "cpt_facts_read": m3.get("cpt_accuracy_arithmetic_facts_read"),  # what CPT left of the facts
        "heldout_valid_step_share": m4.get("heldout_valid_step_share"),
        "heldout_valid_step_share_ci": ci("heldout_valid_step_share"),
        # The same questions decoded greedily: how much of the step error is the sampling.
        "heldout_greedy_valid_step_share": m4.get("heldout_greedy_valid_step_share"),
        "heldout_greedy_valid_step_share_ci": ci("heldout_greedy_valid_step_share"),
        "heldout_format_valid_share": m4.get("heldout_format_valid_share"),
        "heldout_solve_rate": m4.get("heldout_solve_rate"), "heldout_solve_rate_ci": ci("heldout_solve_rate"),
        # The search alone (the final state holds the target), and the answer's letter given the value it wrote.
        "heldout_target_reached": m4.get("heldout_target_reached"),
        "heldout_target_reached_ci": ci("heldout_target_reached"),
        "heldout_letter_holds_value": m4.get(LETTER_HOLDS), "heldout_letter_holds_value_ci": ci(LETTER_HOLDS),
        "teacher_solve_rate": m4.get("teacher_solve_rate"),
        "base_tokens": m3.get("base_tokens_seen"), "cpt_tokens": m3.get("cpt_tokens_seen"),
        "sft_tokens": m4.get("sft_train_tokens"), "sft_tokens_per_s": m4.get("sft_tokens_per_s"),
        "wall_time_s_01_04": round(stage_seconds(run) if wall is None else wall, 1),
    }


def curve_rows(run: Path, label: str, seed: int, overrides: dict) -> list[dict]:
    """04's learning-curve points of one run (sampling_curve.csv), labelled like its learnability row."""
    path = run / "04_sft" / "sampling_curve.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{"label": label, "seed": seed, "overrides": json.dumps(overrides, sort_keys=True), **r}
                for r in csv.DictReader(f)]


CURVE_COLUMNS = ("label", "seed", "overrides", "step", "tokens_seen", "valid step share", "format valid share",
                 "solve rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params" / "cpu.yaml"))
    ap.add_argument("--seeds", default="0,1", help="comma-separated run seeds")
    ap.add_argument("--label", default="default", help="run names are <label>-s<seed>")
    ap.add_argument("--set", action="append", default=[], help="key=value override of the preset (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learnability.csv"))
    ap.add_argument("--record-run", help="record an already finished run directory (runs/<name>) as seed --seeds "
                    "under --label, with --set naming its overrides, instead of training")
    ap.add_argument("--curve-out", default=str(ROOT / "benchmarks" / "results" / "learning_curve.csv"))
    args = ap.parse_args()
    overrides = parse_set(args.set)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    (ROOT / "runs").mkdir(exist_ok=True)
    out = Path(args.out)
    rows = []
    for seed in seeds:
        if args.record_run:
            run = Path(args.record_run)
            row = row_from_run(run, args.label, seed, overrides)
        else:
            row, run = run_seed(Path(args.params), overrides, args.label, seed)
        rows.append(row)
        dataset.append_recorded_rows(out, [row], COLUMNS)
        dataset.append_recorded_rows(Path(args.curve_out), curve_rows(run, args.label, seed, overrides), CURVE_COLUMNS)
        print(" | ".join(f"{k}={row[k]}" for k in ("label", "seed", "base_facts_read", "heldout_valid_step_share",
                                                   "heldout_format_valid_share", "heldout_solve_rate",
                                                   "heldout_target_reached", "heldout_letter_holds_value",
                                                   "teacher_solve_rate", "sft_tokens_per_s", "wall_time_s_01_04")),
              flush=True)
    print(f"\n{len(rows)} seed(s) appended to {out}")


if __name__ == "__main__":
    main()

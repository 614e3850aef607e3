"""The run summary of notebook 08: claims from a run's manifests and tables, "not run" rows for
missing stages, the reproducibility tables, and tables that show in HTML and in Markdown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from steiner_lib import summary
from steiner_lib.summary import NOT_RUN, claims_table, delta_verdict, load_run

VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6"}


def manifest(run, stage, metrics=None, params=None, wall=10.0, versions=VERSIONS, seconds=12.5):
    d = run / stage
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({
        "stage": stage, "metrics": metrics or {}, "params": params or {}, "seed": 0, "params_hash": "abc",
        "git_commit": "0123456789abcdef", "started_at": "2026-11-25T04:56:06.5+00:00", "wall_time_s": wall,
        "versions": versions}))
    (run / "executed").mkdir(exist_ok=True)
    (run / "executed" / f"{stage}.json").write_text(json.dumps({"seconds": seconds, "params_source": "params/x.yaml"}))
    return d


def stage_table(rows):
    cols = ["stage", "questions", "accuracy", "acc_ci_low", "acc_ci_high", "delta", "delta_ci_low",
            "delta_ci_high", "p_value"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "runs" / "cpu"
    manifest(run, "01_synthesis")
    manifest(run, "02_dag", metrics={"n_dags": 600, "n_paths_kept": 2860, "mean_reasoning_tokens": 246.2,
                                     "share_filtered_out": 0.0, "mean_backtracks_per_path": 1.18},
             params={"dag_max_reasoning_tokens": 1024, "dag_max_total_tokens": 2048, "tokenizer_name_or_path": None})
    d = manifest(run, "06_evaluation")
    stage_table([["base", 64, 30, 20, 40, np.nan, np.nan, np.nan, np.nan],
                 ["RL", 64, 40, 30, 50, 10.0, 2.0, 18.0, 0.01],
                 ["RL + logits processor", 64, 38, 28, 48, -2.0, -9.0, 5.0, 0.6]]).to_csv(d / "stage_table.csv", index=False)
    stage_table([["base", 48, 30, 20, 40, np.nan, np.nan, np.nan, np.nan],
                 ["RL", 48, 31, 20, 41, 1.0, -6.0, 8.0, 0.8]]).to_csv(d / "control_table.csv", index=False)
    return run


def test_paragraph_says_a_reproduced_claim_of_no_effect_is_weak_evidence():
    claims = pd.DataFrame({"verdict": ["reproduced", "reproduced"]},
                          index=["RL improves GPQA-Diamond", "RL leaves a no-search control unchanged (MMLU)"])
    text = summary.claims_paragraph(claims)
    assert "1 of these claims no effect (RL leaves a no-search control unchanged (MMLU))" in text
    assert "weak evidence" in text and "RL improves GPQA-Diamond)" not in text.split("weak evidence")[0].split("no effect")[1]


def test_delta_verdicts():
    assert delta_verdict(3.0, 0.5, 6.0) == "reproduced"
    assert delta_verdict(3.0, -0.5, 6.0) == "not reproduced (95% CI includes 0)"
    assert delta_verdict(-3.0, -6.0, -0.5) == "not reproduced (a loss)"
    assert delta_verdict(0.5, -2.0, 3.0, expect="none") == "reproduced"
    assert delta_verdict(4.0, 1.0, 7.0, expect="none") == "not reproduced (a gain)"
    assert delta_verdict(float("nan"), 0, 1) == "not measured"
    with pytest.raises(ValueError, match="expect"):
        delta_verdict(1, 0, 2, expect="more")


def test_claims_come_from_the_run_and_missing_stages_say_not_run(run):
    claims = claims_table(load_run(run))
    v = claims["verdict"]
    assert v["RL improves GPQA-Diamond"] == "reproduced"
    assert "+10.00 points (95% CI +2.00 to +18.00, p = 0.010; 64 questions)" == claims.loc["RL improves GPQA-Diamond", "this run"]
    assert v["the logits processor adds more"] == "not reproduced (95% CI includes 0)"
    assert v["RL leaves a no-search control unchanged (MMLU)"] == "reproduced"
    assert v["no inference-time scaling (forcing more steps)"] == NOT_RUN  # 07 never ran
    assert "07_inference_scaling" in claims.loc["no inference-time scaling (forcing more steps)", "this run"]
    assert v["CPT might be redundant (small models)"] == NOT_RUN and "cpt_enabled: false" in \
        claims.loc["CPT might be redundant (small models)", "this run"]
    assert claims.loc["data set: DAGs (one per question)", "this run"] == "600 (6.0% of the paper's)"
    paragraph = summary.claims_paragraph(claims)
    assert "Of 3 claims this run tests, **2 reproduce**" in paragraph and "Not run here" in paragraph


def test_an_empty_run_gives_only_not_run_rows(tmp_path):
    claims = claims_table(load_run(tmp_path / "nothing"))
    assert set(claims["verdict"]) == {NOT_RUN}
    times = summary.notebook_times(load_run(tmp_path / "nothing"))
    assert set(times.loc[times.index != "total", "status"]) == {NOT_RUN}


def test_scaling_claim_reads_the_curves(run):
    d = manifest(run, "07_inference_scaling")
    flat = pd.DataFrame({"model": "RL", "method": "min_steps", "value": [0, 2, 4], "tokens": [100, 200, 400],
                         "accuracy": [20, 22, 19], "ci_low": [10, 12, 9], "ci_high": [30, 32, 29]})
    flat.to_csv(d / "scaling_curves.csv", index=False)
    claim = claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)"]
    assert claim["verdict"] == "reproduced" and "0 of 1 curves (all methods) gain" in claim["this run"]
    flat.assign(accuracy=[20, 40, 60], ci_low=[15, 35, 55], ci_high=[25, 45, 65]).to_csv(d / "scaling_curves.csv", index=False)
    assert claims_table(load_run(run)).loc["no inference-time scaling (forcing more steps)", "verdict"] \
        == "not reproduced (accuracy scales)"


def test_cpt_claim_compares_two_runs_question_by_question(run, tmp_path):
    other = tmp_path / "runs" / "cpu_no_cpt"
    manifest(other, "06_evaluation")
    qs = [f"q{i}" for i in range(40)]
    scores = lambda correct: pd.DataFrame({"question_id": qs, "split": "diamond", "stage": "RL", "correct": correct})
    scores([True] * 20 + [False] * 20).to_parquet(run / "06_evaluation" / "scores.parquet")
    scores([True] * 19 + [False] * 21).to_parquet(other / "06_evaluation" / "scores.parquet")
    row = claims_table(load_run(run), no_cpt_run=load_run(other)).loc["CPT might be redundant (small models)"]
    assert row["verdict"] == "reproduced" and "-2.50 points" in row["this run"] and "40 questions" in row["this run"]
    scores([False] * 40).to_parquet(other / "06_evaluation" / "scores.parquet")
    row = claims_table(load_run(run), no_cpt_run=load_run(other)).loc["CPT might be redundant (small models)"]
    assert row["verdict"] == "not reproduced (CPT helps)"


def test_reproducibility_tables(run):
    r = load_run(run)
    times = summary.notebook_times(r)
    assert times.loc["02_dag", "notebook wall time (s)"] == 12.5 and times.loc["02_dag", "git commit"] == "0123456789"
    assert times.loc["total", "notebook wall time (s)"] == 37.5 and times.loc["total", "status"] == "3 finished"
    assert times.loc["04_sft", "status"] == NOT_RUN
    manifest(run, "03_cpt", versions={**VERSIONS, "torch": "2.14.0"})
    versions = summary.versions_table(load_run(run))
    assert versions.loc["numpy", "same in every stage"] and versions.loc["numpy", "version"] == "2.4.6"
    assert not versions.loc["torch", "same in every stage"] and "03_cpt: 2.14.0" in versions.loc["torch", "version"]
    hw = summary.hardware()
    assert set(hw) == {"OS", "Python", "CPU", "logical cores", "RAM (GB)", "GPUs"} and hw["logical cores"] >= 1


def test_tables_show_as_html_and_markdown():
    frame = pd.DataFrame({"claim": ["a | b", "c"], "value": [1.23456, float("nan")]}).set_index("claim")
    t = summary.show_table(frame)
    html = t._repr_html_()
    assert "<table" in html and "<th>claim</th>" in html and "1.23" in html and "nan" not in html.lower()
    md = t._repr_markdown_().splitlines()
    assert md[0] == "| claim | value |" and md[1] == "|---|---|" and md[2] == "| a \\| b | 1.23 |" and md[3] == "| c |  |"


def test_finished_stages_lists_only_earlier_finished_ones(run):
    assert summary.finished_stages(run) == ("01_synthesis", "02_dag", "06_evaluation")
    assert summary.finished_stages(run, before="02_dag") == ("01_synthesis",)

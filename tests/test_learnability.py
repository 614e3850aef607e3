"""benchmarks/learnability.py reads its rows from the manifests a finished run wrote (also with --record-run)."""

import json
from pathlib import Path

import pytest
from helpers import load_benchmark


def _module():
    return load_benchmark("learnability")


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "x"
    for stage, metrics in (("03_cpt", {"base_accuracy_arithmetic_facts_read": 0.5, "base_tokens_seen": 100,
                                       "cpt_accuracy_arithmetic_facts_read": 0.125}),
                           ("04_sft", {"heldout_valid_step_share": 0.25, "heldout_valid_step_share_ci_low": 0.2,
                                       "heldout_valid_step_share_ci_high": 0.3, "sft_train_tokens": 7,
                                       "heldout_letter_holds_the_written_value": 0.9,
                                       "heldout_target_reached": 0.05})):
        (run / stage).mkdir(parents=True)
        (run / stage / "manifest.json").write_text(json.dumps({"metrics": metrics}))
    (run / "executed").mkdir()
    for i, stage in enumerate(("01_synthesis", "02_dag", "03_cpt", "04_sft")):
        (run / "executed" / f"{stage}.json").write_text(json.dumps({"seconds": 10.0 * (i + 1)}))
    return run


def test_row_from_run_reads_the_manifests_and_the_recorded_stage_times(tmp_path):
    mod = _module()
    row = mod.row_from_run(_fake_run(tmp_path), "lab", 3, {"sft_steps": 9})
    assert set(row) == set(mod.COLUMNS)
    assert (row["label"], row["seed"], json.loads(row["overrides"])) == ("lab", 3, {"sft_steps": 9})
    assert row["base_facts_read"] == 0.5 and row["heldout_valid_step_share"] == 0.25
    assert row["cpt_facts_read"] == 0.125
    assert row["heldout_valid_step_share_ci"] == "[0.200, 0.300]"
    assert row["heldout_letter_holds_value"] == 0.9 and row["heldout_target_reached"] == 0.05
    assert row["heldout_solve_rate"] is None and row["heldout_solve_rate_ci"] == "[nan, nan]"  # not in this manifest
    assert row["sft_tokens"] == 7 and row["wall_time_s_01_04"] == 100.0  # 10 + 20 + 30 + 40


def test_row_from_run_names_a_missing_manifest(tmp_path):
    run = _fake_run(tmp_path)
    (run / "04_sft" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="04_sft"):
        _module().row_from_run(run, "lab", 0, {})


def test_set_reads_exponent_numbers_as_numbers():
    parsed = _module().parse_set(["sft_learning_rate=3e-3", "base_steps=1500", "tokenizer_numbers=spaced",
                                  "run_name=1e3x"])
    assert parsed == {"sft_learning_rate": 0.003, "base_steps": 1500, "tokenizer_numbers": "spaced",
                      "run_name": "1e3x"}

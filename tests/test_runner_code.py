"""A stage reruns when its code changed: the library sources and key package versions in the runner's record.

No notebook runs here: `fake_stage` does what a notebook and `execute_stage` leave behind (the stage's
manifest through StageWriter, the executed notebook and its record), so the runner's decisions can be
checked in milliseconds on a copy of the library that the tests edit.
"""

import json
import shutil
from functools import partial

import pytest
from helpers import preset

from steiner_lib import params as P
from steiner_lib import runner
from steiner_lib.runner import code_changes, code_record
from steiner_lib.stages import StageWriter

LIB = {"steiner_lib/training/rl.py": "aa", "steiner_lib/training/sft.py": "bb"}
PKGS = {"trl": "1.16.0", "torch": "2.5.0", "peft": None}


def record(library=LIB, packages=PKGS):
    return {"library": dict(library), "packages": dict(packages)}


# --------------------------------------------------------------------------- code_changes


def test_no_change_is_no_reason():
    assert code_changes(record(), record()) == []


def test_an_edited_file_is_named():
    assert code_changes(record(), record({**LIB, "steiner_lib/training/rl.py": "cc"})) == [
        "library changed: steiner_lib/training/rl.py"]


def test_an_added_and_a_removed_file_are_named_as_such():
    now = {"steiner_lib/training/rl.py": "aa", "steiner_lib/new.py": "dd"}
    assert code_changes(record(), record(now)) == [
        "library changed: steiner_lib/new.py (added), steiner_lib/training/sft.py (removed)"]


def test_more_than_three_files_are_counted():
    before = {f"steiner_lib/m{i}.py": "aa" for i in range(5)}
    after = {name: "bb" for name in before}
    assert code_changes(record(before), record(after)) == [
        "library changed: steiner_lib/m0.py, steiner_lib/m1.py, steiner_lib/m2.py and 2 more"]


def test_a_package_version_change_is_named_with_both_versions():
    assert code_changes(record(), record(packages={**PKGS, "trl": "1.17.0"})) == ["package changed: trl 1.16.0 -> 1.17.0"]
    assert code_changes(record(), record(packages={**PKGS, "peft": "0.13.0"})) == [
        "package changed: peft not installed -> 0.13.0"]


def test_library_and_package_changes_are_both_reported():
    now = record({**LIB, "steiner_lib/training/sft.py": "cc"}, {**PKGS, "torch": "2.6.0"})
    assert code_changes(record(), now) == ["library changed: steiner_lib/training/sft.py",
                                           "package changed: torch 2.5.0 -> 2.6.0"]


def test_a_record_of_an_older_runner_is_not_finished():
    old = {"stage": "01_synthesis", "params_hash": "x", "source_hash": "y", "manifest_hash": "z"}
    assert code_changes(old, record()) == ["no library record (written by an older runner)"]


# --------------------------------------------------------------------------- code_record


def test_code_record_covers_every_library_file_and_the_key_packages():
    code = code_record()
    assert "steiner_lib/runner.py" in code["library"] and "steiner_lib/tasks/countdown.py" in code["library"]
    assert "steiner_lib/training/rl.py" in code["library"]  # the stage subpackages too
    assert set(code["packages"]) == set(runner.CODE_PACKAGES)
    assert code["packages"]["torch"]  # installed here
    assert code_record() == code  # deterministic


# --------------------------------------------------------------------------- the runner on a copy of the library


@pytest.fixture
def library_copy(tmp_path):
    """A copy of steiner_lib to edit, and the runner pointed at it (run() reads code_record() at call time)."""
    copy = tmp_path / "lib" / "steiner_lib"
    shutil.copytree(runner.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def fake_stage(params, stage, source, progress=False, *, code):
    """What a notebook plus execute_stage leave behind, without a kernel: a manifest that records the
    previous stage as its input, the executed notebook and the runner's record."""
    order = list(runner.notebook_sources())
    inputs = tuple(order[:order.index(stage)][-1:])
    manifest = StageWriter(params, stage, inputs=inputs).finish()
    runner.executed_dir(params).mkdir(parents=True, exist_ok=True)
    (runner.executed_dir(params) / f"{stage}.ipynb").write_text("{}")
    runner.write_executed_record(params, stage, source, manifest, 0.0, code)
    return 0.0


@pytest.fixture
def fake_run(tmp_path, library_copy, monkeypatch):
    """run() on a smoke preset with fake stages and the library copy: returns run(only, force) -> {stage: outcome}."""
    monkeypatch.setattr(runner, "execute_stage", fake_stage)
    monkeypatch.setattr(runner, "code_record", partial(code_record, package_dir=library_copy))
    path = preset(tmp_path)

    def go(only=None, force=False):
        return {o.stage: o for o in runner.run(path, only=only, force=force, progress=False)}

    return go


def edit(path):
    path.write_text(path.read_text() + "\n# edited\n")


def test_editing_a_library_file_unfinishes_the_stage_and_names_the_file(tmp_path, library_copy):
    params = P.load_preset(preset(tmp_path))
    stage, source = next(iter(runner.notebook_sources().items()))
    fake_stage(params, stage, source, code=code_record(library_copy))
    assert runner._is_finished(params, stage, source, code_record(library_copy))[0]
    edit(library_copy / "training" / "rl.py")
    assert runner._is_finished(params, stage, source, code_record(library_copy)) == (
        False, "library changed: steiner_lib/training/rl.py")


def test_the_runner_reruns_the_edited_librarys_stages_and_skips_them_after(fake_run, library_copy):
    stages = list(runner.notebook_sources())
    assert {o.status for o in fake_run().values()} == {"ran"}
    assert {o.status for o in fake_run().values()} == {"skipped"}
    edit(library_copy / "training" / "rl.py")
    outcomes = fake_run()
    assert {o.status for o in outcomes.values()} == {"ran"}
    assert outcomes[stages[0]].reason == "library changed: steiner_lib/training/rl.py"
    # Each later stage is checked after the one before it reran: its recorded input is no longer on disk.
    assert [outcomes[s].reason for s in stages[1:]] == [f"input {s} changed" for s in stages[:-1]]
    assert {o.status for o in fake_run().values()} == {"skipped"}


def test_a_stage_after_a_rerun_one_reruns_because_its_input_changed(fake_run, library_copy):
    first, second = list(runner.notebook_sources())[:2]
    fake_run()
    edit(library_copy / "tasks" / "countdown.py")
    assert fake_run(only=first)[first].reason == "library changed: steiner_lib/tasks/countdown.py"
    # The second stage is stale twice over (its input and the library); the input check comes first.
    assert fake_run(only=second)[second].reason == f"input {first} changed"
    assert fake_run(only=second)[second].status == "skipped"


def test_force_reruns_and_an_older_record_is_not_finished(fake_run, tmp_path):
    first = next(iter(runner.notebook_sources()))
    fake_run()
    assert {o.reason for o in fake_run(force=True).values()} == {"forced"}
    params = P.load_preset(preset(tmp_path))
    sidecar = runner.executed_dir(params) / f"{first}.json"
    old = {k: v for k, v in json.loads(sidecar.read_text()).items() if k not in ("library", "packages")}
    sidecar.write_text(json.dumps(old))
    assert fake_run(only=first)[first].reason == "no library record (written by an older runner)"

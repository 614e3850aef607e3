"""Run the notebooks in order with Papermill, skipping stages whose params and code did not change.

A stage is *finished* when its artifact manifest exists with the params hash the current
preset gives it, the upstream manifests it records are the ones on disk now, and its
executed notebook was produced from the current notebook source, the current `steiner_lib`
sources and the current versions of the key packages (`code_record`). A stage that is not
finished runs, and so does every selected stage after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from steiner_lib.params import STAGES, Params, load_preset, project_root, run_dir
from steiner_lib.stages import atomic_write_json, installed_version, manifest_hash, read_manifest, stage_dir

log = logging.getLogger("steiner_lib.runner")

PACKAGE_DIR = Path(__file__).resolve().parent
# The packages whose upgrade can change what a stage computes; a change reruns the stage.
CODE_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "jupytext",
                 "numpy", "pandas")


class RunnerError(RuntimeError):
    pass


@dataclass
class StageOutcome:
    stage: str
    status: str  # "ran" | "skipped"
    seconds: float
    reason: str


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def notebook_sources() -> dict[str, Path]:
    """stage name -> jupytext source, for every notebook that exists, in stage order."""
    found = {p.stem: p for p in sorted(notebooks_dir().glob("[0-9][0-9]_*.py"))}
    unknown = sorted(set(found) - set(STAGES))
    if unknown:
        raise RunnerError(f"notebooks {unknown} have no entry in steiner_lib.params.STAGE_SECTIONS")
    return {s: found[s] for s in STAGES if s in found}


def source_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def code_record(package_dir: Path = PACKAGE_DIR) -> dict:
    """The code a stage runs with besides its notebook: a hash per library source file (so a change
    can be named) and the versions of CODE_PACKAGES (None: not installed)."""
    package_dir = Path(package_dir)
    files = sorted(p for p in package_dir.rglob("*.py") if not p.name.startswith("."))  # no editor temp files
    return {
        "library": {p.relative_to(package_dir.parent).as_posix(): source_hash(p) for p in files},
        "packages": {name: installed_version(name) for name in CODE_PACKAGES},
    }


def _listed(items: list[str], limit: int = 3) -> str:
    """The first `limit` items, then how many more, so a log line stays one line."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _file_change(name: str, old: dict, new: dict) -> str:
    return name if name in old and name in new else f"{name} ({'added' if name in new else 'removed'})"


def code_changes(recorded: dict, current: dict) -> list[str]:
    """What differs between the code a stage ran with (`recorded`, its executed record) and `current`
    (a `code_record`): at most one "library changed: ..." and one "package changed: ..."; empty if none."""
    if "library" not in recorded:
        return ["no library record (written by an older runner)"]
    changes = []
    old, new = recorded["library"] or {}, current["library"]
    files = [_file_change(f, old, new) for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]
    if files:
        changes.append(f"library changed: {_listed(files)}")
    old, new = recorded.get("packages") or {}, current["packages"]
    moved = [f"{n} {old.get(n) or 'not installed'} -> {new.get(n) or 'not installed'}"
             for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    if moved:
        changes.append(f"package changed: {_listed(moved)}")
    return changes


def to_ipynb(source: Path, out: Path | None = None) -> Path:
    """Convert a jupytext percent script to an .ipynb with a python3 kernelspec (Papermill needs one)."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    out = Path(out) if out else source.with_suffix(".ipynb")
    tmp = out.with_name(f".{out.stem}.tmp-{uuid.uuid4().hex[:8]}.ipynb")
    jupytext.write(nb, tmp, fmt="ipynb")
    os.replace(tmp, out)
    return out


def executed_dir(params: Params) -> Path:
    return run_dir(params) / "executed"


def _is_finished(params: Params, stage: str, source: Path, code: dict | None = None) -> tuple[bool, str]:
    """(finished, why): the first thing that makes the stage's recorded result stale, if any.
    `code` is the current `code_record()` (computed here when not given)."""
    manifest = read_manifest(stage_dir(params, stage))
    if manifest is None:
        return False, "no finished artifacts"
    if manifest.get("params_hash") != params.stage_hash(stage):
        return False, "params changed"
    for upstream, recorded in (manifest.get("inputs") or {}).items():
        current = read_manifest(stage_dir(params, upstream))
        if current is None or manifest_hash(current) != recorded:
            return False, f"input {upstream} changed"
    sidecar = executed_dir(params) / f"{stage}.json"
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False, "no executed notebook"
    if not (executed_dir(params) / f"{stage}.ipynb").exists():
        return False, "no executed notebook"
    if record.get("source_hash") != source_hash(source):
        return False, "notebook source changed"
    changes = code_changes(record, code_record() if code is None else code)
    if changes:
        return False, "; ".join(changes)
    if record.get("manifest_hash") != manifest_hash(manifest):
        return False, "artifacts changed since the notebook ran"
    return True, "finished, params and code unchanged"


def _failure_message(stage: str, err, failed_path: Path) -> str:
    tb = "\n".join(getattr(err, "traceback", None) or [])
    # Papermill tracebacks carry ANSI colours; strip them for a readable terminal and log.
    import re

    tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)
    cell = getattr(err, "exec_count", None)
    return (
        f"notebook {stage} failed in cell [{cell}]: {getattr(err, 'ename', type(err).__name__)}: "
        f"{getattr(err, 'evalue', err)}\n{tb}\nThe partly executed notebook is {failed_path}"
    )


def write_executed_record(params: Params, stage: str, source: Path, manifest: dict, seconds: float,
                          code: dict) -> None:
    """The sidecar runs/<run>/executed/<stage>.json: what `_is_finished` compares on the next run."""
    atomic_write_json(executed_dir(params) / f"{stage}.json", {
        "stage": stage, "params_hash": params.stage_hash(stage), "source_hash": source_hash(source),
        "manifest_hash": manifest_hash(manifest), "seconds": round(seconds, 2),
        "params_source": params.source, **code,
    })


def execute_stage(params: Params, stage: str, source: Path, progress: bool = True,
                  code: dict | None = None) -> float:
    """Run one notebook with Papermill; `code` is the code_record() it runs with (computed when not given)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from steiner_lib import distributed

    ipynb = to_ipynb(source)
    if not distributed.is_main_process():  # under accelerate launch: compute in step with rank 0, keep nothing
        import tempfile

        with tempfile.TemporaryDirectory(prefix=f"steiner-rank{distributed.rank()}-") as scratch:
            t0 = time.time()
            pm.execute_notebook(str(ipynb), str(Path(scratch) / f"{stage}.ipynb"), parameters=params.for_stage(stage),
                                kernel_name="python3", cwd=str(project_root()), progress_bar=False, log_output=False)
            return time.time() - t0
    out_dir = executed_dir(params)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{stage}.tmp-{uuid.uuid4().hex[:8]}.ipynb"
    t0 = time.time()
    try:
        pm.execute_notebook(
            str(ipynb), str(tmp), parameters=params.for_stage(stage), kernel_name="python3",
            cwd=str(project_root()), progress_bar=progress, log_output=False,
        )
    except PapermillExecutionError as err:
        failed = out_dir / f"{stage}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        raise RunnerError(_failure_message(stage, err, failed)) from None
    seconds = time.time() - t0
    manifest = read_manifest(stage_dir(params, stage))
    if manifest is None or manifest.get("params_hash") != params.stage_hash(stage):
        raise RunnerError(f"notebook {stage} ran but did not finish its stage (no manifest with the current "
                          f"params hash in {stage_dir(params, stage)}): its last cell must call finish()")
    os.replace(tmp, out_dir / f"{stage}.ipynb")
    write_executed_record(params, stage, source, manifest, seconds, code_record() if code is None else code)
    return seconds


def parse_only(only: str | None, available: list[str]) -> list[str]:
    if not only:
        return list(available)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        match = [s for s in available if s == w or s.startswith(w + "_") or s[:2] == w.zfill(2)]
        if not match:
            raise RunnerError(f"--only {w!r} names no notebook; notebooks are {', '.join(available)}")
        chosen += match
    return [s for s in available if s in chosen]


def run(params_path: str | Path, only: str | None = None, force: bool = False,
        progress: bool = True) -> list[StageOutcome]:
    from steiner_lib import distributed

    params = load_preset(params_path)  # validates before any compute
    if distributed.world_size() > 1 and not force:
        # Every process must run the same stages in step; a skip decided per process could differ.
        log.info("launched as %d processes: every selected stage runs (as with --force)", distributed.world_size())
        force = True
    sources = notebook_sources()
    selected = parse_only(only, list(sources))
    if distributed.world_size() > 1 and len(selected) != 1:
        # Each notebook's kernel opens its own process group; a second one in the same launch hangs.
        raise RunnerError(f"launched as {distributed.world_size()} processes with {len(selected)} stages: launch one "
                          f"stage at a time, e.g. accelerate launch ... -m steiner_lib run --params <preset> --only 04")
    code = code_record()  # once, before any notebook runs: the code every stage of this run starts with
    outcomes: list[StageOutcome] = []
    rerun_rest = force
    for stage in selected:
        finished, reason = _is_finished(params, stage, sources[stage], code)
        if finished and not rerun_rest:
            log.info("%s: skipped (%s)", stage, reason)
            outcomes.append(StageOutcome(stage, "skipped", 0.0, reason))
            continue
        why = "forced" if force else ("an earlier stage ran" if finished else reason)
        log.info("%s: running (%s) with %s", stage, why, params.source)
        seconds = execute_stage(params, stage, sources[stage], progress=progress, code=code)
        log.info("%s: done in %.1f s", stage, seconds)
        outcomes.append(StageOutcome(stage, "ran", seconds, why))
        rerun_rest = True
    return outcomes

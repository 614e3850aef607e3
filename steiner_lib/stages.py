"""Stage artifacts: `runs/<run_name>/NN_<stage>/`, written atomically, with a manifest.

Notebook NN opens a `StageWriter` in its setup cell: everything it writes goes into a
temporary directory beside the final one, and `finish()` writes `manifest.json` and
renames the directory into place in one step. A killed run therefore leaves only a
`.tmp-*` directory, which nothing ever reads as finished. Later stages read earlier
artifacts through `require()`, which names the notebook to run when one is missing.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steiner_lib.params import Params, hash_mapping, project_root, run_dir

log = logging.getLogger("steiner_lib.stages")

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "papermill", "networkx",
            "numpy", "pandas", "scikit-learn", "sentence-transformers", "tokenizers")


class StageMissingError(RuntimeError):
    """An earlier stage's artifacts are missing or incomplete."""


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str]:
    found = {name: installed_version(name) for name in PACKAGES}
    return {"python": platform.python_version(), **{k: v for k, v in found.items() if v is not None}}


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def stage_dir(params: Params, stage: str) -> Path:
    return run_dir(params) / stage


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def manifest_hash(manifest: dict) -> str:
    # The identity of a finished stage: what made it, not when.
    keep = {k: manifest.get(k) for k in ("stage", "params_hash", "inputs", "finished_id")}
    return hash_mapping(keep)


def require(params: Params, stage: str) -> tuple[Path, dict]:
    """The directory and manifest of a finished earlier stage, or a clear error saying what to run."""
    d = stage_dir(params, stage)
    manifest = read_manifest(d)
    if manifest is None:
        raise StageMissingError(
            f"{d} is missing or incomplete: notebook {stage} has not finished for run "
            f"{params.values['run_name']!r}. Run it first: python -m steiner_lib run --params "
            f"<your preset>.yaml --only {stage[:2]}"
        )
    return d, manifest


class StageWriter:
    """Collects one stage's artifacts in a temporary directory; `finish()` publishes them."""

    def __init__(self, params: Params, stage: str, inputs: tuple[str, ...] = ()):
        self.params, self.stage = params, stage
        self.final_dir = stage_dir(params, stage)
        self.inputs = {s: manifest_hash(require(params, s)[1]) for s in inputs}
        self.input_dirs = {s: stage_dir(params, s) for s in inputs}
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir = self.final_dir.parent / f".tmp-{stage}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.started = time.time()
        log.info("stage %s: writing into %s", stage, self.dir)

    def input_params(self, stage: str) -> Params:
        """The validated params an input stage ran with (from its manifest), e.g. 01's teacher for 06."""
        from steiner_lib.params import stage_keys, validate

        if stage not in self.input_dirs:
            raise ValueError(f"{stage} is not an input of {self.stage}: add it to the inputs of open_notebook_stage")
        recorded = read_manifest(self.input_dirs[stage])["params"]
        return validate(recorded, source=f"{stage}'s manifest", allowed=stage_keys(stage))

    def path(self, name: str) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path(name)
        atomic_write_json(p, obj)
        return p

    def finish(self, metrics: dict | None = None) -> dict:
        """Write the manifest and move the directory into place atomically."""
        manifest = {
            "stage": self.stage,
            "run_name": self.params.values["run_name"],
            "params_source": self.params.source,
            "params": self.params.for_stage(self.stage),
            "params_hash": self.params.stage_hash(self.stage),
            "inputs": self.inputs,
            "seed": self.params.values["run_seed"],
            "processes": _process_group_size(),  # > 1: trained by several processes (batch sizes are per process)
            "versions": package_versions(),
            "git_commit": git_commit(),
            "started_at": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "wall_time_s": round(time.time() - self.started, 2),
            "finished_id": uuid.uuid4().hex,
            "metrics": metrics or {},
            "files": sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file()),
        }
        atomic_write_json(self.dir / MANIFEST, manifest)
        from steiner_lib import distributed

        if not distributed.is_main_process():  # under accelerate launch only rank 0 publishes the stage
            shutil.rmtree(self.dir, ignore_errors=True)
            log.info("stage %s: rank %d computed it; rank 0 publishes it", self.stage, distributed.rank())
            return manifest
        old = None
        if self.final_dir.exists():
            old = self.final_dir.parent / f".old-{self.stage}-{uuid.uuid4().hex[:8]}"
            os.replace(self.final_dir, old)
        os.replace(self.dir, self.final_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.dir = self.final_dir
        log.info("stage %s: finished in %.1f s -> %s", self.stage, manifest["wall_time_s"], self.final_dir)
        return manifest


def _process_group_size() -> int:
    """Processes in the torch.distributed group a Trainer of this stage opened (1 when none)."""
    import sys

    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    return dist.get_world_size() if dist is not None and dist.is_available() and dist.is_initialized() else 1


def figures_dir(params: Params) -> Path:
    from steiner_lib import distributed

    if not distributed.is_main_process():  # under accelerate launch only rank 0 writes the figures
        import tempfile

        d = Path(tempfile.gettempdir()) / f"steiner-figures-{params.values['run_name']}-rank{distributed.rank()}"
        d.mkdir(parents=True, exist_ok=True)
        return d
    d = project_root() / "figures" / params.values["run_name"]
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_notebook_stage(stage: str, namespace: dict, inputs: tuple[str, ...] = ()):
    """The setup cell of every notebook: log to the notebook, validate the parameter globals
    (a clear error before any compute), open the stage's directory (checking its inputs are
    finished) and the run's figure directory. Returns (params, writer, figures directory)."""
    from steiner_lib.params import from_notebook

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
    params = from_notebook(stage, namespace)
    return params, StageWriter(params, stage, inputs=inputs), figures_dir(params)

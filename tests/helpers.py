"""Fixtures shared by test files (imported as `from helpers import ...`; tests/ is on sys.path)."""

import random
from pathlib import Path

import yaml

from steiner_lib.tasks.choice import CountdownQuestion, make_countdown_question
from steiner_lib.tasks.countdown import generate_problem

ROOT = Path(__file__).resolve().parents[1]


def preset(tmp_path: Path, **overrides) -> Path:
    """params/smoke.yaml with its run root under tmp_path and the given overrides, as a new file."""
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    values.update(run_root=str(tmp_path / "runs"), **overrides)
    path = tmp_path / f"smoke-{abs(hash(tuple(sorted(overrides.items()))))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def make_questions(n: int, seed: int = 0, n_numbers: int = 4, max_number: int = 25, min_steps: int = 2,
                   max_steps: int = 3, prefix: str = "q") -> list[CountdownQuestion]:
    """n random Countdown questions, deterministic for a seed; ids f"{prefix}{seed}-{i:04d}"."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = generate_problem(rng, n_numbers, max_number, min_steps, max_steps)
        q = make_countdown_question(p, rng, f"{prefix}{seed}-{len(out):04d}")
        if q is not None:
            out.append(q)
    return out

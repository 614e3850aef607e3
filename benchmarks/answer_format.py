"""Which visible answer can a small base model learn to end with the right letter?

A finished run's base model (03) is trained further on option drills alone (`knowledge.option_drills`:
four options, a few worked lines, a value, then the visible answer in one of `tasks.text.ANSWER_FORMATS`)
and probed on fresh drills every `--probe-every` steps: greedy continuation after the value, scored
by its "Answer: X" (`knowledge.letter_accuracy`). Chance is 25%.

- letter: "Answer: B" straight after the value: the letter has to be looked up in one token from the
  prompt's list (the option holding the value, two tokens before it).
- scan: the options from A, each "no" or "yes" against the value, then "Answer: B".

Rows (format, seed, the run's training steps, the step probed, accuracy with a 95% bootstrap CI)
are appended to --out (benchmarks/results/answer_format.csv). A benchmark, not a test: minutes per format and seed.

    .venv/bin/python benchmarks/answer_format.py --runs runs/b15n3k-s0,runs/b15n3k-s1 --steps 400
    .venv/bin/python benchmarks/answer_format.py --runs runs/b15n3k-s1 --seeds 1 --steps 1000 --probe-every 250
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steiner_lib.data import dataset  # noqa: E402
from steiner_lib.evaluation import scoring  # noqa: E402
from steiner_lib.tasks import knowledge  # noqa: E402
from steiner_lib.tasks.text import ANSWER_FORMATS  # noqa: E402
from steiner_lib.training import checkpoints, pretraining  # noqa: E402

COLUMNS = ("answer_format", "base", "seed", "train_steps", "step", "probes", "letter_accuracy", "ci_low", "ci_high",
           "seconds")


def _project_path(path: Path) -> str:
    """A path relative to the project when it lies inside it: rows name the same base on every checkout."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def measure(base: Path, seed: int, answer_format: str, steps: int, probe_every: int, max_value: int,
            n_probes: int = 200) -> list[dict]:
    from transformers import TrainerCallback

    model, tokenizer = checkpoints.load_checkpoint(base)
    n_drills = steps * 8 * 512 // 30 + 1000  # more than the steps can read: no drill is seen twice
    drills = [p + c for p, c, _ in knowledge.option_drills(n_drills, max_value, seed=seed, answer_format=answer_format)]
    texts = ["\n\n".join(drills[i:i + 8]) for i in range(0, len(drills), 8)]
    probes = knowledge.option_drills(n_probes, max_value, seed=seed + 10_000, answer_format=answer_format)
    rows, start = [], time.perf_counter()

    def probe(step: int) -> None:
        model.eval()
        right = knowledge.letter_accuracy(model, tokenizer, [p for p, _, _ in probes], [c for _, _, c in probes])
        model.train()
        mean, lo, hi = scoring.bootstrap_ci([float(r) for r in right], n_boot=2000, seed=0)
        rows.append({"answer_format": answer_format, "base": _project_path(base), "seed": seed, "train_steps": steps,
                     "step": step, "probes": len(right), "letter_accuracy": round(mean, 4), "ci_low": round(lo, 4),
                     "ci_high": round(hi, 4), "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % probe_every == 0 and state.global_step < steps:
                probe(state.global_step)

    probe(0)
    cfg = pretraining.LMTrainConfig(max_steps=steps, batch_size=8, seq_len=512, learning_rate=3e-3,
                                    eval_every=10**9, seed=seed)
    pretraining.train_lm(model, tokenizer, texts, None, cfg, progress=False, callbacks=[Probe()])
    probe(steps)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="comma-separated finished runs, whose 03 base models are trained")
    ap.add_argument("--seeds", help="comma-separated seed of each run, in order (default 0, 1, ...)")
    ap.add_argument("--formats", default=",".join(reversed(ANSWER_FORMATS)))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--probe-every", type=int, default=200)
    ap.add_argument("--max-value", type=int, default=60, help="the task's cap on results")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "answer_format.csv"))
    args = ap.parse_args()
    formats = args.formats.split(",")
    unknown = [f for f in formats if f not in ANSWER_FORMATS]
    if unknown:
        raise SystemExit(f"--formats {unknown}: expected some of {ANSWER_FORMATS}")
    out = Path(args.out)
    runs = args.runs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(len(runs)))
    if len(seeds) != len(runs):
        raise SystemExit(f"--seeds gives {len(seeds)} seeds for {len(runs)} runs: give one seed per run")
    for seed, run in zip(seeds, runs):
        base = (ROOT / run / "03_cpt" / "base").resolve()
        if not (base / "config.json").exists():
            raise SystemExit(f"{base} holds no model: run notebooks 01-03 for {run} first")
        for answer_format in formats:
            rows = measure(base, seed, answer_format, args.steps, args.probe_every, args.max_value)
            dataset.append_recorded_rows(out, rows, COLUMNS)


if __name__ == "__main__":
    main()

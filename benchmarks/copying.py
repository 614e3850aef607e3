"""Can the base stand-in learn to copy? Fresh models trained on copy drills alone, with a learning curve.

Every step of the task needs the numbers held to be copied from the context; a development run's
base model copied no list at all (notebook 03's knowledge probe). This benchmark isolates that skill:
for each model shape and learning rate it trains a fresh model on pages of copy drills
(tasks.knowledge, "Copy 23, 12, 19: 23, 12, 19.") and, every --curve-every steps, measures the
teacher-forced accuracy on the copied number tokens of 40 unseen drills (each scored after one
other drill, so positions stay inside the trained block length). Rows (config, step, tokens,
accuracy, seconds) are printed as they come and appended to --out.

    .venv/bin/python benchmarks/copying.py --tokenizer runs/cpu/02_dag/tokenizer \\
        --configs 128x4@1e-2,128x2@1e-2 --steps 3000 --curve-every 500

A benchmark, not a test: minutes per configuration on 2 cores. Accuracy over the 158 (spaced numbers)
to 280 (digits) scored tokens of 40 drills: about +-6 to +-8 points (binomial 95%).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steiner_lib.tasks import knowledge  # noqa: E402
from steiner_lib.training import checkpoints, modeling  # noqa: E402
from steiner_lib.training import pretraining as P  # noqa: E402

COLUMNS = ("tokenizer", "config", "step", "tokens", "copy_accuracy", "n_scored", "seconds")


def copy_accuracy(model, tok, n: int = 40, seed: int = 99_999) -> tuple[float, int]:
    """Teacher-forced accuracy on the number tokens after the colon of `n` unseen copy drills."""
    import torch

    drills = [p + a for p, a in knowledge.drills(n + 1, 25, 100, seed=seed, kinds=("copy",))]
    was_training = model.training
    model.eval()
    ok = scored = 0
    with torch.no_grad():
        for before, drill in zip(drills, drills[1:]):
            ids = tok(before + "\n" + drill, return_tensors="pt", add_special_tokens=False)["input_ids"]
            pred = model(ids).logits[0].argmax(-1)[:-1].tolist()
            gold = ids[0][1:].tolist()
            pieces = tok.convert_ids_to_tokens(gold)
            start = len(pieces) - 1 - pieces[::-1].index(":")  # the last colon: this drill's answer
            for i in range(start + 1, len(pieces)):
                if pieces[i] not in ("Ġ", ",") and not pieces[i].startswith("."):
                    ok, scored = ok + int(pred[i] == gold[i]), scored + 1
    model.train(was_training)
    return ok / max(scored, 1), scored


def main() -> None:
    from transformers import TrainerCallback

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a run's tokenizer directory (runs/<run>/02_dag/tokenizer)")
    ap.add_argument("--configs", default="128x4@1e-2,128x2@1e-2", help="hidden x layers @ learning rate, comma-separated")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--curve-every", type=int, default=250, help="steps between accuracy measurements")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "copying.csv"))
    args = ap.parse_args()
    tok = checkpoints.load_tokenizer(args.tokenizer)
    texts = ["\n".join(p + a for p, a in knowledge.drills(32, 25, 100, seed=s, kinds=("copy",))) for s in range(2000)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    print(" ".join(f"{c:>14}" for c in COLUMNS), flush=True)
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        for spec in args.configs.split(","):
            shape, lr = spec.split("@")
            hidden, layers = (int(x) for x in shape.split("x"))
            cfg = modeling.ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2,
                                       intermediate_size=4 * hidden, max_position_embeddings=2048)
            model = modeling.build_model(tok, cfg, seed=0)
            start = time.perf_counter()

            def record(step: int) -> None:
                acc, n = copy_accuracy(model, tok)
                row = dict(tokenizer=Path(args.tokenizer).parent.parent.name, config=spec, step=step,
                           tokens=step * args.batch_size * args.seq_len, copy_accuracy=round(acc, 4), n_scored=n,
                           seconds=round(time.perf_counter() - start))
                writer.writerow(row)
                f.flush()
                print(" ".join(f"{row[c]!s:>14}" for c in COLUMNS), flush=True)

            class Curve(TrainerCallback):
                def on_step_end(self, _args, state, control, **kwargs):
                    if state.global_step % args.curve_every == 0 and state.global_step < args.steps:
                        record(state.global_step)

            P.train_lm(model, tok, texts, [], P.LMTrainConfig(max_steps=args.steps, batch_size=args.batch_size,
                                                             seq_len=args.seq_len, learning_rate=float(lr),
                                                             eval_batches=0, eval_every=args.steps,
                                                             logging_steps=50),
                       progress=False, callbacks=[Curve()])
            record(args.steps)


if __name__ == "__main__":
    main()

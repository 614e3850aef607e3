"""Can the base stand-in learn to copy? Fresh models trained on copy drills alone, side by side.

Every step of the task needs the numbers held to be copied from the context; a development run's
base model copied no list at all (notebook 03's knowledge probe). This benchmark isolates that skill:
for each model shape and learning rate it trains a fresh model on pages of copy drills
(tasks.knowledge, "Copy 23, 12, 19: 23, 12, 19.") for a fixed number of steps and prints the
teacher-forced accuracy on the copied numbers of unseen drills, with the training time.

    .venv/bin/python benchmarks/copying.py --tokenizer runs/cpu/02_dag/tokenizer \\
        --configs 128x4@3e-3,128x2@1e-2 --steps 1000

A benchmark, not a test: minutes per configuration on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steiner_lib import checkpoints, modeling  # noqa: E402
from steiner_lib import pretraining as P  # noqa: E402
from steiner_lib.tasks import knowledge  # noqa: E402


def copy_accuracy(model, tok, seed: int = 99_999) -> float:
    """Teacher-forced accuracy on the answer tokens (after the colon) of 30 unseen copy drills."""
    import torch

    page = "\n".join(p + a for p, a in knowledge.drills(30, 25, 100, seed=seed, kinds=("copy",)))
    ids = tok(page, return_tensors="pt", add_special_tokens=False)["input_ids"]
    model.eval()
    with torch.no_grad():
        pred = model(ids).logits[0].argmax(-1)[:-1]
    gold = ids[0][1:]
    ok = n = 0
    answer = False
    for i, piece in enumerate(tok.convert_ids_to_tokens(gold.tolist())):
        if piece == ":":
            answer = True
            continue
        if piece.startswith("."):
            answer = False
        if answer and piece not in ("Ġ", ","):
            ok, n = ok + int(pred[i] == gold[i]), n + 1
    return ok / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a run's tokenizer directory (runs/<run>/02_dag/tokenizer)")
    ap.add_argument("--configs", default="128x4@3e-3,128x2@1e-2", help="hidden x layers @ learning rate, comma-separated")
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    tok = checkpoints.load_tokenizer(args.tokenizer)
    texts = ["\n".join(p + a for p, a in knowledge.drills(32, 25, 100, seed=s, kinds=("copy",))) for s in range(600)]
    print(f"{'config':>14} {'params':>9} {'copy acc':>9} {'seconds':>8}")
    for spec in args.configs.split(","):
        shape, lr = spec.split("@")
        hidden, layers = (int(x) for x in shape.split("x"))
        cfg = modeling.ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2,
                                   intermediate_size=4 * hidden, max_position_embeddings=2048)
        model = modeling.build_model(tok, cfg, seed=0)
        start = time.perf_counter()
        P.train_lm(model, tok, texts, [], P.LMTrainConfig(max_steps=args.steps, batch_size=8, seq_len=256,
                                                         learning_rate=float(lr), eval_batches=0,
                                                         eval_every=args.steps, logging_steps=50), progress=False)
        print(f"{spec:>14} {modeling.count_parameters(model):>9,} {copy_accuracy(model, tok):>9.3f} "
              f"{time.perf_counter() - start:>8.0f}", flush=True)


if __name__ == "__main__":
    main()

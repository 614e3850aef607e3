"""Generation speed: batched `inference.generate` against per-sample `inference.generate_one_by_one`.

Both run in the same process, side by side, on the same prompts, model and settings:
  (a) `inference.generate`: prompts left-padded into batches of --batch-size, one KV cache per batch;
  (b) `inference.generate_one_by_one`: one model.generate call (with its own KV cache) per sequence.
Each of four settings (greedy and sampled decoding, Steiner's logits processor off and on) is
timed --repeats times, (a) and (b) alternating so that a change in load hits both; the table gives
the median tokens/s of each and the speed-up (median over median). Tokens are the real generated
tokens, up to and excluding the stop token (<|im_end|>): the padding of rows that finished early
is not counted, although the batch computes it ("batch slots" shows how many positions it computed).
Target (issue 4): a speed-up of at least 5x.

Then batched generation alone at several batch sizes (--sweep) on --sweep-prompts prompts, to
choose the evaluation batch size.

Model: the default preset's SFT checkpoint (runs/cpu/04_sft/sft) when it exists, else a model
built here with that preset's model config and a BPE tokenizer trained on the fly (untrained: it
rarely stops, so its outputs run to max_new_tokens). Prompts: the preset's diamond questions
(runs/cpu/01_synthesis/diamond.csv, else generated with the preset's task settings), as 06 asks them.
The machine has 2 cores: other processes lower every number; the load average is printed.

    .venv/bin/python benchmarks/generation.py [--prompts 32] [--batch-size 32] [--max-new-tokens 640]
        [--repeats 3] [--temperature 0.7] [--sweep 1,4,16,32,64] [--sweep-prompts 64] [--threads N]
        [--sweep-only] [--quick]
On a loaded machine, --threads 1 avoids the stalls of two torch threads fighting other processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from steiner_lib import checkpoints, evaluation, inference, modeling, params as P
from steiner_lib.backends import StepConstraints


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: other processes on the 2 cores lower every number here."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------- model and prompts


def load_prompts(cfg: P.Params, n: int, seed: int) -> tuple[list[str], str]:
    """n ChatML prompts of the run's diamond questions, as notebook 06 asks them."""
    from steiner_lib.tasks import choice, gpqa

    csv = P.run_dir(cfg) / "01_synthesis" / "diamond.csv"
    if csv.exists():
        questions, source = gpqa.load_choice_questions(str(csv)), str(csv)
    else:
        questions = choice.splits_for(cfg.task, seed, n_train=0, n_validation=0, n_diamond=n, n_hard=0,
                                      n_control=0)["diamond"]
        source = "diamond questions generated here (no 01_synthesis/diamond.csv)"
    if len(questions) < n:
        raise SystemExit(f"{source} holds {len(questions)} questions, fewer than the {n} asked: "
                         f"lower --prompts / --sweep-prompts")
    prompts, _ = evaluation.heldout_prompts(questions[:n], seed)
    return prompts, source


def load_model(cfg: P.Params, checkpoint: Path, prompts: list[str]):
    """(model, tokenizer, description): the checkpoint if it exists, else a model built here."""
    if (checkpoint / "config.json").exists():
        model, tokenizer = checkpoints.load_checkpoint(checkpoint)
        return model, tokenizer, f"checkpoint {checkpoint}"
    tokenizer = modeling.train_bpe_tokenizer(prompts + modeling.regular_text(), vocab_size=cfg.tokenizer.vocab_size)
    model = modeling.build_model(tokenizer, checkpoints.model_config(cfg.model), seed=0)
    return model, tokenizer, f"untrained model built here (no {checkpoint}; cpu preset's model config)"


# ---------------------------------------------------------------------------- timing


def timed(fn, model, tokenizer, prompts, **kwargs) -> tuple[dict, list[list[str]]]:
    """One generation call: its stats (sequences, new_tokens, seconds, tokens_per_s) and its texts."""
    stats: dict = {}
    texts = fn(model, tokenizer, prompts, progress=False, stats=stats, **kwargs)
    return stats, texts


def median_and_range(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def side_by_side(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int,
                 temperature: float, repeats: int, lp_steps: tuple[int, int]) -> pd.DataFrame:
    """Batched against one-by-one, in four settings: greedy / sampled x logits processor off / on."""
    rows = []
    for decoding, temp in (("greedy", 0.0), (f"sampled T={temperature:g}", temperature)):
        for lp_name, lp in (("off", None), (f"on {lp_steps}", StepConstraints(tokenizer, *lp_steps))):
            kwargs = dict(max_new_tokens=max_new_tokens, temperature=temp, logits_processor=lp, seed=0)
            batched, single, load = [], [], []
            for r in range(repeats):
                # alternate which goes first, so a drift in load does not favour one of them
                order = ("batched", "single") if r % 2 == 0 else ("single", "batched")
                for which in order:
                    if which == "batched":
                        stats, b_texts = timed(inference.generate, model, tokenizer, prompts,
                                               batch_size=batch_size, **kwargs)
                        batched.append(stats)
                    else:
                        stats, s_texts = timed(inference.generate_one_by_one, model, tokenizer, prompts, **kwargs)
                        single.append(stats)
                load.append(os.getloadavg()[0])
            b_rate = [s["tokens_per_s"] for s in batched]
            s_rate = [s["tokens_per_s"] for s in single]
            row = {
                "decoding": decoding, "logits processor": lp_name, "batch size": batch_size,
                "prompts": len(prompts), "max_new_tokens": max_new_tokens,
                "tokens batched": batched[-1]["new_tokens"], "tokens one by one": single[-1]["new_tokens"],
                "batch slots": batched[-1].get("batch_slots", float("nan")),
                "tokens/s batched": median_and_range(b_rate),
                "tokens/s one by one": median_and_range(s_rate),
                "speed-up": round(statistics.median(b_rate) / statistics.median(s_rate), 2),
                "same texts": b_texts == s_texts if temp == 0 else "n/a (sampled)",
                "load (1 min)": f"{min(load):.2f}-{max(load):.2f}",
            }
            rows.append(row)
            print({k: row[k] for k in ("decoding", "logits processor", "tokens/s batched", "tokens/s one by one",
                                       "speed-up", "same texts")}, flush=True)
    return pd.DataFrame(rows)


def batch_sweep(model, tokenizer, prompts: list[str], batch_sizes: list[int], max_new_tokens: int,
                repeats: int, lp_steps: tuple[int, int]) -> pd.DataFrame:
    """Batched greedy generation with the logits processor (06's commonest setting) at each batch size."""
    rows = []
    for batch_size in batch_sizes:
        runs = [timed(inference.generate, model, tokenizer, prompts, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, temperature=0.0,
                      logits_processor=StepConstraints(tokenizer, *lp_steps))[0] for _ in range(repeats)]
        rates = [s["tokens_per_s"] for s in runs]
        rows.append({"batch size": batch_size, "prompts": len(prompts), "tokens": runs[-1]["new_tokens"],
                     "batch slots": runs[-1].get("batch_slots", float("nan")),
                     "tokens/s": round(statistics.median(rates)),
                     "seconds": round(statistics.median(s["seconds"] for s in runs), 1),
                     "load (1 min)": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).set_index("batch size")
    if batch_sizes[0] == 1:
        table["x batch 1"] = (table["tokens/s"] / table["tokens/s"].iloc[0]).round(2)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/cpu.yaml", help="preset whose run, model and task settings are used")
    ap.add_argument("--checkpoint", default=None, help="model directory (default: <run>/04_sft/sft)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's eval_max_new_tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7, help="of the sampled runs")
    ap.add_argument("--lp-steps", default="0,10", help="min_steps,max_steps of the logits processor")
    ap.add_argument("--sweep", default="1,4,16,32,64", help="batch sizes of the sweep ('' to skip it)")
    ap.add_argument("--sweep-prompts", type=int, default=64)
    ap.add_argument("--sweep-repeats", type=int, default=1)
    ap.add_argument("--sweep-only", action="store_true", help="skip the side-by-side comparison")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the core count)")
    ap.add_argument("--quick", action="store_true", help="16 prompts, batch 16, 128 tokens, 1 repeat, sweep 1,16")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.batch_size, args.max_new_tokens, args.repeats = 16, 16, 128, 1
        args.sweep, args.sweep_prompts = "1,16", 16
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = P.load_preset(args.params)
    max_new_tokens = args.max_new_tokens or cfg.eval.max_new_tokens
    lp_steps = tuple(int(x) for x in args.lp_steps.split(","))
    sweep = [int(b) for b in args.sweep.split(",") if b.strip()]
    n_prompts = max(([] if args.sweep_only else [args.prompts]) + ([args.sweep_prompts] if sweep else []) or [1])
    prompts, source = load_prompts(cfg, n_prompts, cfg.run.seed)
    checkpoint = Path(args.checkpoint) if args.checkpoint else P.run_dir(cfg) / "04_sft" / "sft"
    model, tokenizer, model_source = load_model(cfg, checkpoint, prompts)
    model.eval()

    t0 = time.perf_counter()
    print(f"load average before the run: {load_average()} (on {os.cpu_count()} cores, {torch.get_num_threads()} "
          f"torch threads)")
    print(f"model: {model_source}, {modeling.count_parameters(model):,} parameters, vocabulary {len(tokenizer)}")
    mean_prompt = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
    print(f"prompts: {source}; mean prompt {mean_prompt:.0f} tokens")
    inference.generate(model, tokenizer, prompts[:4], max_new_tokens=8, temperature=0.0, batch_size=4,
                       progress=False)  # warm-up (first-call allocations)

    if not args.sweep_only:
        table = side_by_side(model, tokenizer, prompts[:args.prompts], args.batch_size, max_new_tokens,
                             args.temperature, args.repeats, lp_steps)
        print(f"\n== batched inference.generate (batch {args.batch_size}, KV cache) against generate_one_by_one, "
              f"{args.prompts} prompts, max_new_tokens={max_new_tokens}, median (min-max) of {args.repeats} "
              f"run(s); tokens are real ones, up to the stop token; target speed-up >= 5x ==")
        print(table.to_string(index=False))
    if sweep:
        print()
        sweep_table = batch_sweep(model, tokenizer, prompts[:args.sweep_prompts], sweep, max_new_tokens,
                                  args.sweep_repeats, lp_steps)
        print(f"\n== batched greedy generation with the logits processor {lp_steps}, {args.sweep_prompts} prompts, "
              f"max_new_tokens={max_new_tokens}, median of {args.sweep_repeats} run(s) per batch size ==")
        print(sweep_table.to_string())
    print(f"\nload average after the run: {load_average()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

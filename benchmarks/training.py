"""Training speed on this machine: tokens/s, model FLOP/s and MFU, stage by stage.

MFU (model FLOPs utilisation) = model FLOP/s / peak FLOP/s, where model FLOP/s =
modeling.model_flops_per_token(model, seq_len) x tokens/s, and the peak is a dense
torch.matmul of large matrices measured in the same run (best of several), right before each
variant and in the dtype the model's matmuls run in (float32, or bfloat16 under autocast). Throughput is read over the
steady-state steps only: the first `--skip` steps (allocator warm-up, torch.compile) are left out.

Stages (one function each; SFT and RL sections are left for their owners to add):
  pretraining  the default small model (ModelConfig defaults) on packed regular text with
               pretraining.train_lm, in several variants (threads, batch, dtype, attention, compile).
Target (issue 3): MFU >= 25% for the pretraining default.

    .venv/bin/python benchmarks/training.py [--steps 30] [--batch 16] [--seq-len 512]
        [--variants default,threads1,batch32,bf16,threads1_bf16,eager,compile]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import pandas as pd
import torch

from steiner_lib import modeling, pretraining


# ---------------------------------------------------------------------------- the peak


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 7) -> float:
    """Best-of-`repeats` FLOP/s of an n x n by n x n torch.matmul (2 n^3 FLOPs) at the current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def peak(dtype: str, threads: int) -> float:
    """The dense-matmul peak (FLOP/s) in `dtype` at `threads` threads: best over two sizes."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return max(matmul_peak(getattr(torch, dtype), n) for n in (2048, 3072))
    finally:
        torch.set_num_threads(old)


def load_average() -> str:
    """The 1-minute load average: other processes on the 2 cores lower every number here."""
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------- pretraining


class StepTimer:
    """A TrainerCallback that records the wall-clock time at the end of every optimiser step."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter())

        self.times: list[float] = []
        self.callback = _CB()

    def steady_seconds_per_step(self, skip: int) -> float:
        t = self.times[skip:]
        if len(t) < 2:
            raise ValueError(f"only {len(self.times)} steps timed: run more steps than --skip={skip} + 1")
        return (t[-1] - t[0]) / (len(t) - 1)


VARIANTS = {
    # name: (ModelConfig changes, LMTrainConfig changes)
    "default": ({}, {}),
    "threads1": ({}, {"num_threads": 1}),
    "batch32": ({}, {"batch_size": 32}),
    "bf16": ({}, {"bf16": True}),
    "threads1_bf16": ({}, {"num_threads": 1, "bf16": True}),
    "eager": ({"attn_implementation": "eager"}, {}),
    "compile": ({}, {"torch_compile": True}),
}


def bench_pretraining(variants: list[str], steps: int, batch: int, seq_len: int, skip: int,
                      threads: int) -> pd.DataFrame:
    """Train the default model for `steps` steps per variant; the matmul peak is measured right
    before each variant (in the dtype its matmuls run in), so a change in load between variants
    moves both numbers of its MFU together."""
    tokenizer = modeling.train_bpe_tokenizer(modeling.regular_text(), vocab_size=1024)
    texts = modeling.regular_text()
    probe = modeling.build_model(tokenizer, modeling.ModelConfig())
    print(f"default model: {modeling.count_parameters(probe):,} parameters (vocabulary {len(tokenizer)}), "
          f"{modeling.model_flops_per_token(probe, seq_len) / 1e6:.2f} MFLOP per token at seq_len {seq_len}")
    rows = []
    for name in variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}: choose from {', '.join(VARIANTS)}")
        model_changes, train_changes = VARIANTS[name]
        torch.set_num_threads(threads)
        model = modeling.build_model(tokenizer, modeling.ModelConfig(**model_changes), seed=0)
        cfg = pretraining.LMTrainConfig(**{
            "max_steps": steps, "batch_size": batch, "seq_len": seq_len, "eval_batches": 0,
            "logging_steps": max(1, steps // 3), "num_threads": threads, **train_changes})
        dtype = "bfloat16" if cfg.bf16 or model.dtype == torch.bfloat16 else "float32"
        peak_flops, load = peak(dtype, threads), load_average()
        timer = StepTimer()
        t0 = time.perf_counter()
        try:
            result = pretraining.train_lm(model, tokenizer, texts, None, cfg, progress=False,
                                          callbacks=[timer.callback])
        except Exception as e:  # a variant that cannot run here is reported, not fatal
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            continue
        wall = time.perf_counter() - t0
        tokens_per_s = cfg.batch_size * cfg.seq_len / timer.steady_seconds_per_step(skip)
        flops = modeling.model_flops_per_token(result.model, cfg.seq_len) * tokens_per_s
        rows.append({
            "variant": name, "threads": cfg.num_threads, "batch": cfg.batch_size, "seq_len": cfg.seq_len,
            "tokens/s": round(tokens_per_s), "tokens/s (all steps)": round(result.tokens_per_second),
            "model GFLOP/s": round(flops / 1e9, 1), "peak GFLOP/s": round(peak_flops / 1e9, 1),
            "peak dtype": dtype, "MFU": round(flops / peak_flops, 3),
            "first loss": round(float(result.history["train_loss"].dropna().iloc[0]), 3),
            "last loss": round(float(result.history["train_loss"].dropna().iloc[-1]), 3),
            "wall s": round(wall, 1), "load avg": load,
        })
        print(rows[-1], flush=True)
    return pd.DataFrame(rows).set_index("variant")


# ---------------------------------------------------------------------------- SFT, RL
# (added by the SFT and RL owners: one bench_<stage> function each, called from main)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--skip", type=int, default=3, help="first steps left out of the throughput")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", default="default,threads1,batch32,bf16,threads1_bf16,eager,compile")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    t0 = time.perf_counter()
    print(f"load average before the run: {load_average()} (on {os.cpu_count()} cores)")
    for threads in sorted({1, args.threads}):
        print(f"matmul peak at {threads} thread(s): float32 {peak('float32', threads) / 1e9:.1f} GFLOP/s, "
              f"bfloat16 {peak('bfloat16', threads) / 1e9:.1f} GFLOP/s")

    table = bench_pretraining(args.variants.split(","), args.steps, args.batch, args.seq_len, args.skip,
                              args.threads)
    print(f"\n== pretraining (train_lm), {args.steps} steps, throughput over steps {args.skip + 1}.."
          f"{args.steps}; MFU against the {args.threads}-thread matmul peak measured just before each variant ==")
    print(table.to_string())
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Training speed on this machine: tokens/s, model FLOP/s and MFU, stage by stage.

MFU (model FLOPs utilisation) = model FLOP/s / peak FLOP/s, where model FLOP/s =
modeling.model_flops_per_token(model, seq_len) x tokens/s, and the peak is a dense
torch.matmul of large matrices measured in the same run (best of several), right before each
variant and in the dtype the model's matmuls run in (float32, or bfloat16 under autocast). Throughput is read over the
steady-state steps only, from the end of step `--skip` + 1 to the end of the last: the first
`--skip` + 1 steps (allocator warm-up, torch.compile) are left out.

Stages (one function each):
  pretraining  the default small model (ModelConfig defaults) on packed regular text with
               pretraining.train_lm, in several variants (threads, batch, dtype, attention, compile).
               CPT runs the same code path (train_lm), so these figures stand for it too.
  sft          `--sft-steps` steps of sft.train_sft from the run's 03_cpt checkpoint on its 02_dag paths,
               with the preset's sft_* settings (no held-out evaluation: it would fall between timed steps).
  rl           `--rl-steps` steps of rl.train_rl (StepGRPOTrainer) from the run's 04_sft checkpoint on the
               01_synthesis training questions and their 02_dag DAGs, with the preset's rl_* settings.
Target (issue 3): MFU >= 25% for the pretraining default.

Other processes on the cores lower every figure (the load average is printed), and more than
their share: with more runnable threads than cores, OpenMP's default active waiting stalls every
op of this small model at its thread barriers (measured at load 6 on 2 cores: 580 ms per decode
step at 2 threads, 18 ms with OMP_WAIT_POLICY=PASSIVE). Setting it shows how much is contention.

Model FLOPs. model_flops_per_token(model, T) = 6 N + 12 L d T is one training pass (forward +
backward) per token of a length-T sequence; a forward pass alone is a third of it, 2 N + 4 L d T.
Only useful tokens are counted (padding and the rows of finished sequences that batched
generation keeps computing are not), so MFU is the share of the peak spent on the model's work.
  sft  every non-padding token of a batch (prompt included: the loss is masked, the compute is
       not): T x model_flops_per_token(model, T) per sequence of T tokens, T its own length.
  rl   per rollout of P prompt and C completion tokens, T = P + C:
       generation  prefill, a forward pass over the prompt, P x (2N + 4 L d P); then KV-cache decoding
                   of the C - 1 sampled tokens fed back, each a forward pass of one token that reads
                   the t keys before it: sum over t = P+1..P+C-1 of (2N + 4 L d t)
                   = (C - 1)(2N + 4 L d (P + C/2));
       reference   the reference model's forward pass over the whole sequence, T (2N + 4 L d T)
                   (beta > 0), and one more for the old policy's log-probs when TRL computes them
                   (it does not when a step trains on its own fresh rollouts, the default);
       update      the policy's forward and backward over the whole sequence, T x (6N + 12 L d T):
                   the loss falls on completion tokens, but they attend to the prompt, so the
                   backward runs through every position.
       TRL (logits_to_keep) and generate's prefill compute the output projection on completion
       positions only, so the prompt positions' share of it (V h = 131k of N = 1.1M parameters
       for the default model) is counted but not done: with the default run's 116 prompt and
       ~300 completion tokens per rollout, an overcount of about 2.4% of the RL FLOPs.
       The RL table has one row for the whole step (completion tokens/s, the headline figure,
       and MFU of all the FLOPs above) and one per phase, timed inside the trainer: generation
       (TRL's _generate: tokenising, generate, decoding; completion tokens/s), scoring + reference
       (the rest of _generate_and_score_completions: rewards, advantages, reference forward;
       sequence tokens/s) and update (the rest of the step: policy forward, backward, optimizer;
       sequence tokens/s).

    .venv/bin/python benchmarks/training.py [--stages pretraining,sft,rl] [--run runs/cpu]
        [--steps 30] [--batch 16] [--seq-len 512]
        [--variants default,threads1,batch32,bf16,threads1_bf16,eager,compile]
        [--sft-steps 20] [--rl-steps 8] [--params params/cpu.yaml]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import pandas as pd
import torch

from steiner_lib.params import load_preset, project_root
from steiner_lib.stages import MANIFEST, read_manifest
from steiner_lib.training import modeling, pretraining


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


# ---------------------------------------------------------------------------- shared by the stages


class StepTimer:
    """A TrainerCallback that records the wall-clock time at the end of every optimiser step, and
    what hooks inside the trainer `note` during each step (batch lengths, phase times)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter())
                timer.notes.append(dict(timer._open))
                timer._open = defaultdict(list)

        self.times: list[float] = []
        self.notes: list[dict[str, list]] = []  # one per step: key -> the values noted during it
        self._open: defaultdict[str, list] = defaultdict(list)
        self.callback = _CB()

    def note(self, key: str, *values) -> None:
        """Add `values` under `key` to the step in progress."""
        self._open[key].extend(values)

    def steady(self, skip: int) -> tuple[float, list[dict[str, list]]]:
        """(seconds, the steps' notes) of the steady-state window: from the end of step skip + 1 to the
        end of the last step, i.e. steps skip + 2 .. N (see window_label)."""
        if len(self.times) < skip + 2:
            raise ValueError(f"only {len(self.times)} steps timed: run more steps than --skip={skip} + 1")
        return self.times[-1] - self.times[skip], self.notes[skip + 1:]

    def steady_seconds_per_step(self, skip: int) -> float:
        seconds, steps = self.steady(skip)
        return seconds / len(steps)

    @staticmethod
    def values(steps: list[dict[str, list]], key: str) -> list:
        """Every value noted under `key` in these steps, in order."""
        return [v for step in steps for v in step.get(key, [])]


def window_label(skip: int, steps: int) -> str:
    return f"throughput over steps {skip + 2}..{steps} (the first {skip + 1} left out)"


def matmul_dtype(model, bf16: bool) -> str:
    """The dtype the model's matmuls run in: the peak is measured in it."""
    return "bfloat16" if bf16 or model.dtype == torch.bfloat16 else "float32"


def mfu_columns(tokens_per_s: float, flops_per_s: float, peak_flops: float, dtype: str) -> dict:
    return {"tokens/s": round(tokens_per_s), "model GFLOP/s": round(flops_per_s / 1e9, 2),
            "peak GFLOP/s": round(peak_flops / 1e9, 1), "peak dtype": dtype,
            "MFU": round(flops_per_s / peak_flops, 4)}


def forward_flops(model, lengths) -> float:
    """Forward-pass FLOPs over whole sequences of these lengths: per token a third of
    model_flops_per_token (6 N + 12 L d T = 3 (2 N + 4 L d T)), T the token's sequence length."""
    return sum(n * modeling.model_flops_per_token(model, n) / 3 for n in lengths)


def train_flops(model, lengths) -> float:
    """Forward + backward FLOPs over whole sequences of these lengths (model_flops_per_token per token)."""
    return 3 * forward_flops(model, lengths)


def decode_flops(model, prompt_lengths, completion_lengths) -> float:
    """KV-cache decoding after the prefill: the C - 1 sampled tokens fed back, the one at position t a
    forward pass that reads t cached keys, 2 N + 4 L d t; summed over t = P+1..P+C-1 this is
    (C - 1) forward passes at the mean position P + C / 2."""
    return sum(max(c - 1, 0) * modeling.model_flops_per_token(model, p + c / 2) / 3
               for p, c in zip(prompt_lengths, completion_lengths))


# ---------------------------------------------------------------------------- pretraining


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
        dtype = matmul_dtype(model, cfg.bf16)
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
            **mfu_columns(tokens_per_s, flops, peak_flops, dtype),
            "tokens/s (all steps)": round(result.tokens_per_second),
            "first loss": round(float(result.history["train_loss"].dropna().iloc[0]), 3),
            "last loss": round(float(result.history["train_loss"].dropna().iloc[-1]), 3),
            "wall s": round(wall, 1), "load avg": load,
        })
        print(rows[-1], flush=True)
    return pd.DataFrame(rows).set_index("variant")


# ---------------------------------------------------------------------------- SFT, RL: inputs from a finished run

MAKE_RUN = "make run  (or: .venv/bin/python -m steiner_lib run --params params/cpu.yaml --only 01,02,03,04)"
NEEDS = {  # stage -> the run artifacts it reads, as <stage dir>/<artifact>
    "sft": ("02_dag/paths", "03_cpt/cpt"),
    "rl": ("01_synthesis/train.csv", "02_dag/dags.jsonl", "04_sft/sft"),
}


def check_run(run: Path, stages: list[str]) -> None:
    """Exit, before any compute, naming every missing artifact the chosen stages read. A stage
    directory counts only once finished, i.e. with its manifest.json (written last)."""
    missing = []
    for rel in dict.fromkeys(rel for stage in stages for rel in NEEDS.get(stage, ())):
        stage_dir = run / rel.split("/")[0]
        if not (stage_dir / MANIFEST).exists():
            missing.append(f"{stage_dir / MANIFEST}  (stage {stage_dir.name} has not finished)")
        elif not (run / rel).exists():
            missing.append(str(run / rel))
    if missing and not run.is_dir():
        missing = [f"{run}  (no such directory)"]
    if missing:
        raise SystemExit(f"--stages {','.join(stages)} reads a finished run of the default preset "
                         f"(--run {run}); missing:\n  "
                         + "\n  ".join(dict.fromkeys(missing))
                         + f"\nMake it with: {MAKE_RUN}, which writes runs/cpu, or pass --run DIR of such a run.")


def compare_with_run(run: Path, stage_dir: str, params, keys: tuple[str, ...]) -> None:
    """Warn when the run's stage was trained with other values of these keys (the ones the benchmark
    configures its stage with) than the preset benchmarked."""
    ran = (read_manifest(run / stage_dir) or {}).get("params", {})
    diff = [f"{k}={ran[k]!r} (preset {params.values[k]!r})" for k in keys
            if k in ran and k in params.values and ran[k] != params.values[k]]
    if diff:
        print(f"note: {run / stage_dir} was made with {', '.join(diff)}; the benchmark uses the preset's values")


# ---------------------------------------------------------------------------- SFT


def bench_sft(run: Path, params, steps: int, skip: int, threads: int) -> pd.DataFrame:
    """`steps` steps of sft.train_sft from the run's CPT checkpoint on its 02_dag paths, configured as
    notebook 04 does from the preset's sft_* keys, minus the held-out loss (eval_ds=None: its
    evaluations would fall between timed steps). sft.make_trainer is wrapped so the Trainer gets the
    step timer and every batch's non-padding lengths are noted where it enters training_step."""
    import datasets

    from steiner_lib.training import checkpoints, sft

    torch.set_num_threads(threads)
    compare_with_run(run, "04_sft", params,
                     ("run_seed", *(f"sft_{k}" for k in sft.FROM_PARAMS.values() if k != "steps")))
    model, tokenizer = checkpoints.load_checkpoint(run / "03_cpt" / "cpt")
    timer = StepTimer()
    make_trainer = sft.make_trainer

    def timed_make_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_callback(timer.callback)
        training_step = trainer.training_step

        def noting_training_step(model, inputs, *rest, **kw):
            mask = inputs["attention_mask"]
            timer.note("lengths", *mask.sum(1).tolist())
            timer.note("padded", mask.numel())
            return training_step(model, inputs, *rest, **kw)

        trainer.training_step = noting_training_step
        return trainer

    with tempfile.TemporaryDirectory(prefix="bench-sft-") as out:
        cfg = sft.stage_config(params.sft, params.run.seed, max_steps=steps, logging_steps=max(1, steps // 3),
                               progress=False, output_dir=out)
        train_ds, _ = sft.sft_splits(datasets.load_from_disk(str(run / "02_dag" / "paths")), cfg)
        dtype = matmul_dtype(model, cfg.bf16)
        peak_flops, load = peak(dtype, threads), load_average()
        t0 = time.perf_counter()
        with mock.patch.object(sft, "make_trainer", timed_make_trainer):
            result = sft.train_sft(model, tokenizer, train_ds, None, cfg)
        wall = time.perf_counter() - t0
    seconds, window = timer.steady(skip)
    lengths = StepTimer.values(window, "lengths")
    tokens, flops = sum(lengths), train_flops(model, lengths)
    print(f"SFT: {modeling.count_parameters(model):,} parameters, {result.n_train} training examples "
          f"({result.n_dropped_too_long} too long, dropped); steady window: {len(window)} steps, "
          f"{len(lengths)} sequences of {tokens / len(lengths):.0f} tokens on average")
    losses = result.history["loss"].dropna()
    row = {
        "stage": "sft", "threads": torch.get_num_threads(), "batch": cfg.batch_size * cfg.gradient_accumulation_steps,
        "steps": result.steps, **mfu_columns(tokens / seconds, flops / seconds, peak_flops, dtype),
        "tokens/s (all steps)": round(result.tokens_per_s),
        "padding share": round(1 - tokens / sum(StepTimer.values(window, "padded")), 3),
        "mean length": round(tokens / len(lengths)),
        "first loss": round(float(losses.iloc[0]), 3), "last loss": round(float(losses.iloc[-1]), 3),
        "wall s": round(wall, 1), "load avg": load,
    }
    print(row, flush=True)
    return pd.DataFrame([row]).set_index("stage")


# ---------------------------------------------------------------------------- RL


def bench_rl(run: Path, params, steps: int, skip: int, threads: int) -> pd.DataFrame:
    """`steps` steps of rl.train_rl from the run's SFT checkpoint on the 01_synthesis training questions
    and their 02_dag DAGs, configured as notebook 05 does from the preset's rl_* keys. rl.StepGRPOTrainer
    is replaced, for the call, by a subclass that adds the step timer and times TRL's generation
    (_generate) and the whole rollout (_generate_and_score_completions), noting each rollout's prompt and
    completion lengths and whether a reference / old-policy forward pass ran. FLOPs: module docstring."""
    from steiner_lib.data import dataset
    from steiner_lib.training import checkpoints, rewards, rl

    torch.set_num_threads(threads)
    compare_with_run(run, "05_rl", params, ("run_seed", *(f"rl_{k}" for k in rl.FROM_PARAMS if k != "steps")))
    model, tokenizer = checkpoints.load_checkpoint(run / "04_sft" / "sft")
    questions = dataset.load_countdown_questions(run / "01_synthesis" / "train.csv")
    graphs = dataset.load_dags(run / "02_dag" / "dags.jsonl")
    weights = rewards.RewardWeights.from_params(params.rl)
    timer = StepTimer()

    class TimedStepGRPOTrainer(rl.StepGRPOTrainer):
        def __init__(self, *args, **kwargs):
            from transformers import PrinterCallback

            super().__init__(*args, **kwargs)
            self.add_callback(timer.callback)
            self.remove_callback(PrinterCallback)  # with progress off it prints every log dict

        def _generate(self, prompts):
            t = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                timer.note("generate_s", time.perf_counter() - t)

        def _generate_and_score_completions(self, inputs):
            t = time.perf_counter()
            output = super()._generate_and_score_completions(inputs)
            timer.note("rollout_s", time.perf_counter() - t)
            timer.note("prompt", *output["prompt_mask"].sum(1).tolist())
            timer.note("completion", *output["completion_mask"].sum(1).tolist())
            timer.note("forward_passes", sum(k in output for k in ("ref_per_token_logps", "old_per_token_logps")))
            return output

    with tempfile.TemporaryDirectory(prefix="bench-rl-") as out:
        cfg = rl.stage_config(params.rl, params.run.seed, steps=steps, logging_steps=max(1, steps // 3),
                              progress=False, output_dir=out)
        dtype = matmul_dtype(model, cfg.bf16)
        peak_flops, load = peak(dtype, threads), load_average()
        t0 = time.perf_counter()
        with mock.patch.object(rl, "StepGRPOTrainer", TimedStepGRPOTrainer):
            result = rl.train_rl(model, tokenizer, questions, graphs, weights, cfg)
        wall = time.perf_counter() - t0

    seconds, window = timer.steady(skip)
    prompt, completion = StepTimer.values(window, "prompt"), StepTimer.values(window, "completion")
    total = [p + c for p, c in zip(prompt, completion)]
    gen_s, rollout_s = sum(StepTimer.values(window, "generate_s")), sum(StepTimer.values(window, "rollout_s"))
    n_passes = [step["forward_passes"][0] for step in window]  # reference (+ old policy) passes, per step
    gen = forward_flops(model, prompt) + decode_flops(model, prompt, completion)
    ref = sum(k * forward_flops(model, [p + c for p, c in zip(step["prompt"], step["completion"])])
              for k, step in zip(n_passes, window))
    update = train_flops(model, total)
    phases = [  # name, tokens counted, tokens, FLOPs, seconds
        ("whole step", "completion", sum(completion), gen + ref + update, seconds),
        ("generation", "completion", sum(completion), gen, gen_s),
        ("scoring + reference", "prompt+completion", sum(total), ref, rollout_s - gen_s),
        ("update", "prompt+completion", sum(total), update, seconds - rollout_s),
    ]
    print(f"RL: {modeling.count_parameters(model):,} parameters, {torch.get_num_threads()} threads, "
          f"{cfg.batch_size} rollouts per step ({cfg.num_generations} per prompt), {result.steps} steps in "
          f"{wall:.0f} s, mean reward {float(result.log['mean_reward'].mean()):.3f}; steady window: {len(window)} "
          f"steps, {len(completion)} rollouts of {sum(prompt) / len(prompt):.0f} prompt + "
          f"{sum(completion) / len(completion):.0f} completion tokens on average (at most "
          f"{cfg.max_completion_length}); {n_passes[0]} forward-only pass(es) per rollout besides generation "
          f"(reference{', old policy' if n_passes[0] > 1 else ''}); model GFLOP per step: generation "
          f"{gen / len(window) / 1e9:.2f}, reference {ref / len(window) / 1e9:.2f}, "
          f"update {update / len(window) / 1e9:.2f}",
          flush=True)
    rows = [{"phase": name, "tokens": counted, **mfu_columns(tokens / s, flops / s, peak_flops, dtype),
             "s/step": round(s / len(window), 2), "share of step": round(s / seconds, 3), "load avg": load}
            for name, counted, tokens, flops, s in phases]
    return pd.DataFrame(rows).set_index("phase")


# ---------------------------------------------------------------------------- main

STAGES = ("pretraining", "sft", "rl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of " + ", ".join(STAGES))
    ap.add_argument("--steps", type=int, default=30, help="pretraining steps per variant")
    ap.add_argument("--batch", type=int, default=16, help="pretraining blocks per step")
    ap.add_argument("--seq-len", type=int, default=512, help="pretraining tokens per block")
    ap.add_argument("--skip", type=int, default=3,
                    help="throughput is read from the end of step skip + 1 to the last step (every stage)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", default="default,threads1,batch32,bf16,threads1_bf16,eager,compile",
                    help="pretraining variants")
    ap.add_argument("--run", type=Path, default=project_root() / "runs" / "cpu",
                    help="a finished run of the default preset (sft reads its 02_dag, 03_cpt; "
                         "rl its 01_synthesis, 02_dag, 04_sft)")
    ap.add_argument("--params", type=Path, default=project_root() / "params" / "cpu.yaml",
                    help="preset whose sft_* and rl_* keys configure the SFT and RL stages")
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--rl-steps", type=int, default=8)
    args = ap.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise SystemExit(f"--stages {args.stages!r}: choose from {', '.join(STAGES)}")
    check_run(args.run, stages)
    params = load_preset(args.params) if {"sft", "rl"} & set(stages) else None
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)

    t0 = time.perf_counter()
    print(f"load average before the run: {load_average()} (on {os.cpu_count()} cores; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})")
    for threads in sorted({1, args.threads}):
        print(f"matmul peak at {threads} thread(s): float32 {peak('float32', threads) / 1e9:.1f} GFLOP/s, "
              f"bfloat16 {peak('bfloat16', threads) / 1e9:.1f} GFLOP/s")

    tables = []
    if "pretraining" in stages:
        table = bench_pretraining(args.variants.split(","), args.steps, args.batch, args.seq_len, args.skip,
                                  args.threads)
        tables.append((f"pretraining and CPT (train_lm), {args.steps} steps, {window_label(args.skip, args.steps)}; "
                       f"MFU against the {args.threads}-thread matmul peak measured just before each variant", table))
    if "sft" in stages:
        table = bench_sft(args.run, params, args.sft_steps, args.skip, args.threads)
        tables.append((f"SFT (sft.train_sft from {args.run / '03_cpt' / 'cpt'}), {args.sft_steps} steps, "
                       f"{window_label(args.skip, args.sft_steps)}; tokens: non-padding prompt + completion", table))
    if "rl" in stages:
        table = bench_rl(args.run, params, args.rl_steps, args.skip, args.threads)
        tables.append((f"RL (rl.train_rl, GRPO, from {args.run / '04_sft' / 'sft'}), {args.rl_steps} steps, "
                       f"{window_label(args.skip, args.rl_steps)}; phases timed inside the trainer", table))
    for title, table in tables:
        print(f"\n== {title} ==")
        print(table.to_string())
    print(f"\nload average after the run: {load_average()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

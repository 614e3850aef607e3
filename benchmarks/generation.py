"""Generation speed: the candidates for batched generation, side by side (issue 14), and a batch-size sweep.

Candidates, each on the same prompts, model, batch size and settings, in one process:
  current          inference.generate(backend="transformers"): model.generate, a preallocated DynamicCache
  hf-static        model.generate with transformers' static cache (cache_implementation="static")
  hf-static+compile  the same with transformers' own torch.compile of the decode step (CompileConfig,
                   enabled on CPU with _compile_all_devices; its compile time is spent in an untimed warm-up)
  ctranslate2      CTranslate2 (pip install ctranslate2; the checkpoint converted by its
                   TransformersConverter): no logits-processor hook, so only the settings without one
  lean             inference.generate(backend="lean"): steiner_lib.generation.lean_decode (the CPU default)
  one-by-one       inference.generate_one_by_one (issue 4's baseline; --one-by-one, slow)
Each setting (greedy / sampled x Steiner's logits processor off / on) is timed --repeats times with
the candidates' order rotated between repeats, so that a change in load hits all; the table gives
the median tokens/s, the speed-up over `current` and the share of the matmul peak. Tokens are the
real generated tokens, up to and excluding the stop token (<|im_end|>): the padding of rows that
finished early is not counted, although most candidates compute it. "same texts" compares greedy
texts with `current`.

Share of the peak: the decode FLOPs of the generated tokens (benchmarks/training.py's decode_flops:
2 per weight per token, plus QK^T and AV over the cached positions) per second, over the dense
fp32 matmul peak measured in the same run (training.peak: the best of 2048 and 3072 square matmuls
at the run's threads).

Then batched generation alone at several batch sizes (--sweep, --sweep-backend) on --sweep-prompts prompts.

Model: the default preset's SFT checkpoint (runs/cpu/04_sft/sft) when it exists, else a model
built here with that preset's model config and a BPE tokenizer trained on the fly (untrained: it
rarely stops, so its outputs run to max_new_tokens). Prompts: the preset's diamond questions
(runs/cpu/01_synthesis/diamond.csv, else generated with the preset's task settings), as 06 asks them.
The machine has 2 cores: other processes lower every number; the load average is printed.

    .venv/bin/python benchmarks/generation.py [--prompts 64] [--batch-size 64] [--max-new-tokens 640]
        [--repeats 2] [--temperature 0.7] [--candidates current,hf-static,...] [--settings ...]
        [--sweep 1,4,16,32,64] [--sweep-prompts 64] [--threads N] [--sweep-only] [--quick]
On a loaded machine, --threads 1 avoids the stalls of two torch threads fighting other processes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from steiner_lib import params as P
from steiner_lib.evaluation import scoring
from steiner_lib.generation import inference
from steiner_lib.generation.backends import StepConstraints
from steiner_lib.training import checkpoints, modeling

import training  # benchmarks/training.py: the matmul peak and the decode FLOPs


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
    prompts, _ = scoring.heldout_prompts(questions[:n], seed)
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


# ---------------------------------------------------------------------------- candidates


def batched_with(engine):
    """inference.generate's batching, seeding and decoding around another batch engine."""

    def generate(model, tokenizer, prompts, max_new_tokens, temperature, batch_size, seed=0, logits_processor=None,
                 progress=False, stats=None):
        jobs = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
        kwargs = inference._generation_kwargs(tokenizer, max_new_tokens, temperature, 1.0, True)
        texts = inference.run_batches(model, tokenizer, jobs, kwargs, seed, logits_processor, progress, "bench",
                                      stats, engine)
        return [[t] for t in texts]

    return generate


def hf_static_engine(compiled: bool):
    from transformers import CompileConfig

    def engine(model, enc, gen_kwargs, processors):
        extra = {}
        if compiled:  # transformers compiles only on GPUs unless told otherwise
            config = CompileConfig(fullgraph=False, dynamic=False, mode="default")
            config._compile_all_devices = True
            extra = dict(compile_config=config, disable_compile=False)
        return model.generate(**enc, **gen_kwargs, logits_processor=processors, cache_implementation="static", **extra)

    return engine


def ctranslate2_engine(checkpoint_dir: Path, tokenizer, threads: int):
    """CTranslate2 on the converted checkpoint; None (with the reason printed) when it cannot be used."""
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError:
        print("ctranslate2: not installed (pip install ctranslate2): skipped")
        return None
    out = Path(tempfile.mkdtemp(prefix="ct2-"))
    try:
        TransformersConverter(str(checkpoint_dir)).convert(str(out), force=True)
    except Exception as e:  # an architecture or version it cannot convert: say so and go on
        print(f"ctranslate2: cannot convert {checkpoint_dir}: {e!r}: skipped")
        return None
    generator = ctranslate2.Generator(str(out), device="cpu", intra_threads=threads)

    def engine(model, enc, gen_kwargs, processors):
        if len(processors):
            raise NotImplementedError("CTranslate2 has no logits-processor hook")
        ids = enc["input_ids"]
        starts = [tokenizer.convert_ids_to_tokens(row[m.bool()].tolist()) for row, m in zip(ids, enc["attention_mask"])]
        sample = gen_kwargs["do_sample"]
        ctranslate2.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))  # from the seeded torch RNG
        results = generator.generate_batch(
            starts, max_length=gen_kwargs["max_new_tokens"], include_prompt_in_result=False,
            end_token=list(gen_kwargs["eos_token_id"]), return_end_token=True,
            sampling_topk=0 if sample else 1, sampling_temperature=gen_kwargs.get("temperature", 1.0) if sample else 1.0,
            sampling_topp=gen_kwargs.get("top_p", 1.0) if sample else 1.0)
        pad = gen_kwargs["pad_token_id"]
        rows = [r.sequences_ids[0] for r in results]
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=ids.dtype)
        return torch.cat([ids, new], dim=1)

    return engine


def make_candidates(names: list[str], model, tokenizer, checkpoint_dir: Path) -> dict:
    """name -> generate(model, tokenizer, prompts, max_new_tokens, temperature, batch_size, ...)."""
    made = {}
    for name in names:
        if name == "current":
            made[name] = functools.partial(inference.generate, backend="transformers")
        elif name == "lean":
            made[name] = functools.partial(inference.generate, backend="lean")
        elif name in ("hf-static", "hf-static+compile"):
            made[name] = batched_with(hf_static_engine(compiled=name.endswith("compile")))
        elif name == "ctranslate2":
            engine = ctranslate2_engine(checkpoint_dir, tokenizer, torch.get_num_threads())
            if engine is not None:
                made[name] = batched_with(engine)
        elif name == "one-by-one":
            made[name] = lambda m, t, p, batch_size, **kw: inference.generate_one_by_one(m, t, p, **kw)
        else:
            raise SystemExit(f"unknown candidate {name!r}: choose from {', '.join(CANDIDATES)}")
    return made


CANDIDATES = ("current", "hf-static", "hf-static+compile", "ctranslate2", "lean", "one-by-one")
SETTINGS = {"greedy+lp": (0.0, True), "sampled+lp": (None, True), "sampled": (None, False), "greedy": (0.0, False)}


def decode_share(model, tokenizer, prompts, texts, seconds: float, peak_flops: float) -> float:
    """Decode FLOP/s of these outputs over the peak (the module docstring)."""
    prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    completion_lengths = [len(tokenizer(t[0], add_special_tokens=False)["input_ids"]) + 1 for t in texts]
    return training.decode_flops(model, prompt_lengths, completion_lengths) / seconds / peak_flops


def side_by_side(model, tokenizer, prompts: list[str], candidates: dict, settings: list[str], batch_size: int,
                 max_new_tokens: int, temperature: float, repeats: int, lp_steps: tuple[int, int],
                 peak_flops: float) -> pd.DataFrame:
    """Every candidate in every setting, repeats rotated; one row per (setting, candidate)."""
    rows = []
    for setting in settings:
        temp, lp_on = SETTINGS[setting]
        temp = temperature if temp is None else temp
        lp = StepConstraints(tokenizer, *lp_steps) if lp_on else None
        kwargs = dict(max_new_tokens=max_new_tokens, temperature=temp, logits_processor=lp, seed=0,
                      batch_size=batch_size)
        names = [n for n in candidates if not (lp_on and n == "ctranslate2")]
        runs: dict[str, list] = {n: [] for n in names}
        warm = {}
        for n in names:  # untimed: first-call allocations; the compiled candidate compiles for these very shapes
            t = time.perf_counter()
            timed(candidates[n], model, tokenizer, prompts[:batch_size],
                  **(kwargs if n.endswith("compile") else {**kwargs, "max_new_tokens": 8}))
            warm[n] = time.perf_counter() - t
        load = []
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for n in order:
                runs[n].append(timed(candidates[n], model, tokenizer, prompts, **kwargs))
            load.append(os.getloadavg()[0])
        base = statistics.median(s["tokens_per_s"] for s, _ in runs["current"]) if "current" in runs else None
        for n in names:
            rates = [s["tokens_per_s"] for s, _ in runs[n]]
            stats, texts = runs[n][-1]
            seconds = statistics.median(s["seconds"] for s, _ in runs[n])
            row = {"setting": setting, "candidate": n, "tokens": stats["new_tokens"],
                   "batch slots": stats.get("batch_slots", float("nan")),
                   "tokens/s": median_and_range(rates),
                   "x current": round(statistics.median(rates) / base, 2) if base else float("nan"),
                   "share of peak": f"{100 * decode_share(model, tokenizer, prompts, texts, seconds, peak_flops):.2f}%",
                   "same texts": (texts == runs["current"][-1][1]) if temp == 0 and "current" in runs else "n/a",
                   "warm-up s": round(warm[n], 1), "load (1 min)": f"{min(load):.2f}-{max(load):.2f}"}
            rows.append(row)
            print({k: row[k] for k in ("setting", "candidate", "tokens/s", "x current", "share of peak",
                                       "same texts")}, flush=True)
    if "ctranslate2" in candidates:
        print("ctranslate2: no logits-processor hook in its generate_batch (4.8), so it is absent where the "
              "processor is on")
    return pd.DataFrame(rows)


def batch_sweep(model, tokenizer, prompts: list[str], batch_sizes: list[int], max_new_tokens: int,
                repeats: int, lp_steps: tuple[int, int], backend: str) -> pd.DataFrame:
    """Batched greedy generation with the logits processor (06's commonest setting) at each batch size."""
    rows = []
    for batch_size in batch_sizes:
        runs = [timed(inference.generate, model, tokenizer, prompts, batch_size=batch_size, backend=backend,
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
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="default: the evaluation's (stage_table.Decoding)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's eval_max_new_tokens")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--candidates", default="current,hf-static,hf-static+compile,ctranslate2,lean",
                    help=f"comma-separated, of {', '.join(CANDIDATES)}")
    ap.add_argument("--settings", default="greedy+lp,sampled+lp,sampled", help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--temperature", type=float, default=0.7, help="of the sampled runs")
    ap.add_argument("--lp-steps", default="0,10", help="min_steps,max_steps of the logits processor")
    ap.add_argument("--sweep", default="1,4,16,32,64", help="batch sizes of the sweep ('' to skip it)")
    ap.add_argument("--sweep-backend", default="lean", choices=inference.IN_PROCESS_BACKENDS)
    ap.add_argument("--sweep-prompts", type=int, default=64)
    ap.add_argument("--sweep-repeats", type=int, default=1)
    ap.add_argument("--sweep-only", action="store_true", help="skip the side-by-side comparison")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the core count)")
    ap.add_argument("--quick", action="store_true", help="16 prompts, batch 16, 128 tokens, 1 repeat, sweep 1,16")
    ap.add_argument("--out", default=None, help="also write the tables to this file (e.g. benchmarks/results/generation.txt)")
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
    report = [f"load average before the run: {load_average()} ({os.cpu_count()} cores, "
              f"{torch.get_num_threads()} torch threads); model: {model_source}, "
              f"{modeling.count_parameters(model):,} parameters; prompts: {source}, mean {mean_prompt:.0f} tokens"]

    if not args.sweep_only:
        peak_flops = training.peak("float32", torch.get_num_threads())
        print(f"matmul peak (fp32, {torch.get_num_threads()} threads, this run): {peak_flops / 1e9:.0f} GFLOP/s")
        if not (checkpoint / "config.json").exists():  # CTranslate2 converts from a directory
            checkpoint = Path(tempfile.mkdtemp(prefix="bench-model-"))
            checkpoints.save_checkpoint(model, tokenizer, checkpoint)
        candidates = make_candidates(args.candidates.split(","), model, tokenizer, checkpoint)
        table = side_by_side(model, tokenizer, prompts[:args.prompts], candidates, args.settings.split(","),
                             args.batch_size, max_new_tokens, args.temperature, args.repeats, lp_steps, peak_flops)
        report += [f"\n== generation candidates, batch {args.batch_size}, {args.prompts} prompts, max_new_tokens="
                   f"{max_new_tokens}, temperature {args.temperature:g} when sampled, logits processor {lp_steps} "
                   f"(lp); median (min-max) tokens/s of {args.repeats} run(s); tokens are real ones, up to the stop "
                   f"token; share of the fp32 matmul peak of {peak_flops / 1e9:.0f} GFLOP/s measured in this run ==",
                   table.to_string(index=False)]
        print("\n".join(report[-2:]))
    if sweep:
        print()
        sweep_table = batch_sweep(model, tokenizer, prompts[:args.sweep_prompts], sweep, max_new_tokens,
                                  args.sweep_repeats, lp_steps, args.sweep_backend)
        report += [f"\n== batched greedy generation ({args.sweep_backend}) with the logits processor {lp_steps}, "
                   f"{args.sweep_prompts} prompts, max_new_tokens={max_new_tokens}, median of {args.sweep_repeats} "
                   f"run(s) per batch size ==", sweep_table.to_string()]
        print("\n".join(report[-2:]))
    report.append(f"\nload average after the run: {load_average()}; total {time.perf_counter() - t0:.0f} s")
    print(report[-1])
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()

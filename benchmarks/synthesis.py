"""Synthesis speed at the paper's scale: 10,000 DAGs and 50,000 paths with the search teacher.

Runs the same library calls as notebooks 01 and 02 (questions, shortcut and augmented
traces, exact clustering, one DAG per question, path sampling and rendering, token counts
and length filters) and prints the time of each phase, DAGs/s and paths/s.
Target (issue 2): the whole thing in 120 s or less on a 2-core machine.

    .venv/bin/python benchmarks/synthesis.py [--questions 10000] [--paths-per-dag 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from steiner_lib import params as P
from steiner_lib.data import dataset, synthesis, teachers
from steiner_lib.tasks import choice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=10_000)
    ap.add_argument("--paths-per-dag", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-tokenizer", action="store_true", help="skip tokenizer training and length filters")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = P.validate({"task_n_train": args.questions, "dag_paths_per_dag": args.paths_per_dag,
                      "synthesis_workers": args.workers}, source="benchmark")
    t, times = cfg.task, {}

    start = time.perf_counter()
    splits = choice.splits_for(t, 0, n_validation=1, n_diamond=1, n_hard=1, n_control=1)
    train = splits["train"]
    letters = [choice.format_prompt(q.to_choice(), seed=0)[1] for q in train]
    times["questions (generate, solve, classify)"] = time.perf_counter() - start

    t0 = time.perf_counter()
    trajectories = synthesis.synthesize(
        train, letters, teachers.make_teacher(cfg.teacher),
        augmentations_per_question=cfg.synthesis.augmentations_per_question, seed=0,
        workers=args.workers, progress=False)
    times["traces (shortcut + truncation augmentation)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    by_question = dataset.group_by_question(trajectories)
    questions = {q.question_id: q for q in train}
    graphs = dataset.build_dags(by_question, questions, clusterer="exact", progress=False)
    times["DAGs (exact clustering, build, features)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    examples, _ = dataset.sample_examples(graphs, by_question, questions, n_paths=cfg.dag.paths_per_dag,
                                       max_backtracks=cfg.dag.max_backtracks,
                                       explore_prob=cfg.dag.explore_prob, seed=0, progress=False)
    times["paths (sample, render)"] = time.perf_counter() - t0

    if not args.no_tokenizer:
        t0 = time.perf_counter()
        tokenizer = dataset.run_tokenizer(cfg.tokenizer, trajectories)
        examples = dataset.measure_and_filter(examples, tokenizer, cfg.dag.max_reasoning_tokens,
                                              cfg.dag.max_total_tokens)
        times["tokenizer training + length filters"] = time.perf_counter() - t0
    total = time.perf_counter() - start

    print(f"paper-scale synthesis: {len(graphs)} DAGs, {len(examples)} paths, "
          f"{len(trajectories)} teacher traces, {args.workers} worker(s), {os.cpu_count()} cores")
    for name, s in times.items():
        print(f"  {name:<45s} {s:8.1f} s")
    print(f"  {'total':<45s} {total:8.1f} s   (target: <= 120 s)")
    print(f"DAGs/s: {len(graphs) / total:.0f}   paths/s: {len(examples) / total:.0f}")


if __name__ == "__main__":
    main()

"""Notebook 02's pipeline: questions and traces -> DAGs -> sampled paths -> a filtered data set.

The pieces (clustering, DAGs, sampling, rendering) live in `dag`, `format` and `tasks`;
this module strings them together over many questions and measures the result beside
the paper's data set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from tqdm import tqdm

from steiner_lib.data import dag
from steiner_lib.data.traces import Trajectory
from steiner_lib.format import render, render_reasoning
from steiner_lib.stages import atomic_write_text
from steiner_lib.tasks import choice, text
from steiner_lib.tasks.countdown import Problem
from steiner_lib.training import modeling

log = logging.getLogger("steiner_lib.data.dataset")

# The paper's data set (Ji 2024), for the comparison table.
PAPER = {"DAGs": 10_000, "paths": 50_000, "mean reasoning tokens": 1_600,
         "reasoning token cap": 4_096, "total token cap": 8_192}


def stable_seed(*parts) -> int:
    """A seed derived from its parts, the same in every process (unlike hash())."""
    return int(hashlib.sha256("-".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def recorded_benchmark(name: str) -> pd.DataFrame:
    """A table a benchmark recorded under benchmarks/results/ (read as written), or a one-row frame
    saying it has not been recorded on this checkout."""
    from steiner_lib.params import project_root

    path = project_root() / "benchmarks" / "results" / name
    if not path.is_file():
        return pd.DataFrame({"note": [f"benchmarks/results/{name} not recorded on this checkout: run "
                                      f"benchmarks/{name.split('.')[0]}.py"]})
    return pd.read_csv(path)


def append_recorded_rows(path, rows: list[dict], columns) -> None:
    """Append a benchmark's rows to its CSV (header written once), so a stopped sweep keeps the rows it
    finished. A file written before columns were added is rewritten once with them (old rows blank)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header, old_rows = reader.fieldnames or [], list(reader)
        if list(header) != list(columns):
            if not set(header) <= set(columns):
                raise SystemExit(f"{path} has columns {sorted(set(header) - set(columns))} that this benchmark "
                                 "does not write: move the file aside or record into another --out")
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(old_rows)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        if new:
            w.writeheader()
        w.writerows(rows)


def load_countdown_questions(csv_path) -> dict[str, choice.CountdownQuestion]:
    """The Countdown questions of a GPQA-schema CSV written by notebook 01, by question id."""
    out = {}
    for cq in choice.read_gpqa_csv(csv_path):
        numbers = choice.parse_question_text(cq.question)
        if numbers is None:
            raise ValueError(f"{csv_path}: question {cq.record_id} is not a Countdown question")
        problem = Problem(numbers, int(cq.correct), choice.parse_question_cap(cq.question))
        out[cq.record_id] = choice.CountdownQuestion(problem, tuple(int(x) for x in cq.incorrect), cq.record_id)
    return out


def group_by_question(trajectories: list[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for tr in trajectories:
        groups[tr.question_id].append(tr)
    return dict(groups)


def _records(trajs: list[Trajectory]):
    return [r for tr in trajs for r in tr.records]


def _split_labels(trajs: list[Trajectory], flat_labels: list[int]) -> list[list[int]]:
    out, i = [], 0
    for tr in trajs:
        out.append(list(flat_labels[i:i + len(tr.records)]))
        i += len(tr.records)
    return out


def score_embedding_clusterer(by_question, n_questions: int, threshold: float, field: str) -> pd.DataFrame:
    """Embedding clusters against exact clusters, per question and pooled (labels made question-unique)."""
    qids = sorted(by_question)[:n_questions]
    if not qids:
        return pd.DataFrame([{"scope": "none scored", "questions": 0}])
    clusterer = dag.EmbeddingClusterer(threshold=threshold, field=field)
    rows, pooled_exact, pooled_embed = [], [], []
    for qid in tqdm(qids, desc="embedding clusterer"):
        recs = _records(by_question[qid])
        exact = dag.cluster_exact(recs)
        embed = clusterer.cluster(recs)
        rows.append({"question_id": qid, **dag.cluster_agreement(exact, embed)})
        pooled_exact += [f"{qid}/{l}" for l in exact]
        pooled_embed += [f"{qid}/{l}" for l in embed]
    per_q = pd.DataFrame(rows)
    codes = lambda xs: pd.factorize(pd.Series(xs))[0].tolist()  # noqa: E731
    pooled = {"scope": f"pooled over {len(qids)} questions",
              **dag.cluster_agreement(codes(pooled_exact), codes(pooled_embed))}
    mean = {"scope": "mean per question", **per_q.drop(columns=["question_id"]).mean(numeric_only=True).to_dict()}
    table = pd.DataFrame([pooled, mean]).set_index("scope")
    return table.round(3)


def build_dags(by_question, questions, clusterer: str = "exact", threshold: float = 0.1,
               field: str = "summary", progress: bool = True) -> dict[str, nx.DiGraph]:
    embedder = dag.EmbeddingClusterer(threshold=threshold, field=field) if clusterer == "embedding" else None
    graphs = {}
    for qid in tqdm(sorted(by_question), desc="DAGs", disable=not progress):
        trajs = by_question[qid]
        recs = _records(trajs)
        flat = dag.cluster_exact(recs) if embedder is None else embedder.cluster(recs)
        q = questions[qid]
        graphs[qid] = dag.build_dag(qid, q.problem.numbers, q.problem.target, trajs, _split_labels(trajs, flat),
                                    max_result=q.problem.max_result)
    return graphs


def feature_table(graphs: dict[str, nx.DiGraph]) -> pd.DataFrame:
    frames = []
    for qid, g in graphs.items():
        df = dag.node_features(g)
        df.insert(0, "question_id", qid)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def save_dags(graphs: dict[str, nx.DiGraph], path) -> None:
    """One node-link JSON object per line (networkx's format), written atomically."""
    lines = []
    for qid, g in graphs.items():
        data = nx.node_link_data(g, edges="edges")
        lines.append(json.dumps({"question_id": qid, "graph": data}, default=_json_default))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def load_dags(path) -> dict[str, nx.DiGraph]:
    out = {}
    for line in Path(path).read_text().splitlines():
        obj = json.loads(line)
        out[obj["question_id"]] = nx.node_link_graph(obj["graph"], edges="edges")
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return str(o)


def run_tokenizer(tokenizer_params, trajectories: list[Trajectory], max_traces: int = 3000, questions=None):
    """This run's tokenizer: trained here (BPE on traces + regular text) or a pretrained one by name.

    questions (the training questions): their arithmetic facts (tasks.knowledge, one copy) join the
    corpus, so every value of the task is as frequent as the base corpus of notebook 03 makes it.
    """
    if tokenizer_params.name_or_path:
        return modeling.load_tokenizer(tokenizer_params.name_or_path)
    # A BPE vocabulary of ~1K tokens is settled by a few thousand traces: more only costs time.
    step = max(1, len(trajectories) // max_traces)
    sample = trajectories[::step][:max_traces]
    corpus = [render(tr.trace()) for tr in sample] + modeling.regular_text()
    if questions:
        from steiner_lib.tasks import knowledge

        corpus += knowledge.corpus_for_questions(questions, fact_copies=1, n_drills=0, seed=0).texts
    return modeling.train_bpe_tokenizer(corpus, vocab_size=tokenizer_params.vocab_size,
                                        numbers=tokenizer_params.numbers)


def tokenizer_label(tokenizer_params) -> str:
    if tokenizer_params.name_or_path:
        return f"{tokenizer_params.name_or_path} tokenizer"
    return f"byte-level BPE trained here ({tokenizer_params.vocab_size} tokens)"


def sample_examples(graphs, by_question, questions, n_paths: int, max_backtracks: int,
                    explore_prob: float, seed: int, backtrack_by: str = "label", progress: bool = True,
                    answer_format: str = "letter"):
    """Sample paths from every DAG and render each as a prompt + reasoning + answer example
    (`answer_format`: tasks.text.ANSWER_FORMATS, whether the visible answer scans the options).

    Returns the examples (a Hugging Face dataset) and the sampled paths by (question id, index).
    """
    import datasets

    if answer_format not in text.ANSWER_FORMATS:
        raise ValueError(f"answer_format={answer_format!r}: expected one of {text.ANSWER_FORMATS}")
    rows, sampled = [], {}
    for qid in tqdm(sorted(graphs), desc="sampling paths", disable=not progress):
        rng = np.random.default_rng(stable_seed(seed, "paths", qid))
        q = questions[qid]
        paths = dag.sample_paths(graphs[qid], by_question[qid], n_paths=n_paths, rng=rng,
                                 max_backtracks=max_backtracks, explore_prob=explore_prob)
        for i, path in enumerate(paths):
            sampled[(qid, i)] = path
            # A seeded shuffle per path: the correct letter varies across a question's paths.
            prompt, letter, shown = choice.format_prompt_and_choices(q, seed=seed * 1000 + i)
            ops = dag.path_operations(path)
            answer = text.answer_text(ops, q.problem.target, letter, shown if answer_format == "scan" else None)
            traj = dag.path_to_trajectory(path, answer, backtrack_by=backtrack_by)
            rows.append({
                "question_id": qid, "path_index": i, "prompt": prompt,
                "reasoning": render_reasoning(traj.trace()), "answer": answer, "letter": letter,
                "n_steps": len(traj.records), "n_backtracks": traj.n_backtracks,
                "path_nodes": [int(n) for n in path.nodes],
            })
    return datasets.Dataset.from_list(rows), sampled


def measure_and_filter(examples, tokenizer, max_reasoning_tokens: int, max_total_tokens: int):
    """Token counts and the paper's two length filters (reasoning cap, prompt + reasoning + answer cap)."""
    reasoning = modeling.count_tokens(tokenizer, examples["reasoning"])
    full = [modeling.chat_text(p, r + "\n" + a) for p, r, a in
            zip(examples["prompt"], examples["reasoning"], examples["answer"])]
    total = modeling.count_tokens(tokenizer, full)
    kept = [r <= max_reasoning_tokens and t <= max_total_tokens for r, t in zip(reasoning, total)]
    examples = examples.add_column("reasoning_tokens", reasoning).add_column("total_tokens", total)
    return examples.add_column("kept", kept)


def compare_with_paper(graphs, examples, tokenizer_name: str) -> pd.DataFrame:
    df = examples.to_pandas()
    kept = df[df["kept"]]
    ours = {
        "DAGs": len(graphs),
        "paths": len(kept),
        "mean reasoning tokens": round(float(kept["reasoning_tokens"].mean()), 1) if len(kept) else float("nan"),
        "median reasoning tokens": float(kept["reasoning_tokens"].median()) if len(kept) else float("nan"),
        "mean backtracks per path": round(float(kept["n_backtracks"].mean()), 2) if len(kept) else float("nan"),
        "share with a backtrack": round(float((kept["n_backtracks"] > 0).mean()), 3) if len(kept) else float("nan"),
        "share filtered out": round(1 - len(kept) / max(len(df), 1), 4),
    }
    paper = {"DAGs": PAPER["DAGs"], "paths": PAPER["paths"], "mean reasoning tokens": PAPER["mean reasoning tokens"],
             "median reasoning tokens": "not reported", "mean backtracks per path": "not reported",
             "share with a backtrack": "not reported", "share filtered out": "not reported"}
    def show(v):  # one readable string per cell: counts without decimals, shares and means with
        if isinstance(v, str):
            return v
        if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v == v and v.is_integer() and v > 10):
            return f"{int(v):,}"
        return f"{v:.3g}"

    table = pd.DataFrame({"paper (Qwen2.5 tokens)": pd.Series({k: show(v) for k, v in paper.items()}),
                          f"this run ({tokenizer_name})": pd.Series({k: show(v) for k, v in ours.items()})})
    table.index.name = "quantity"
    return table


def pick_dags_to_draw(graphs, kept_examples, sampled, n: int):
    """A few readable DAGs (8-40 nodes, with dead ends if possible), each with one sampled path
    (the one with most backtracks). Returns (graph, dag.SampledPath) pairs."""
    df = kept_examples.to_pandas()
    best = df.sort_values(["n_backtracks", "path_index"], ascending=[False, True]).drop_duplicates("question_id")
    candidates = []
    for _, row in best.iterrows():
        g = graphs[row["question_id"]]
        size_ok = 8 <= g.number_of_nodes() <= 40
        dead = sum(1 for _, d in g.nodes(data=True) if not d.get("answer_reachable", True))
        candidates.append((not size_ok, -min(int(row["n_backtracks"]), 2), -min(dead, 3), row["question_id"],
                           int(row["path_index"])))
    candidates.sort()
    return [(graphs[qid], sampled[(qid, i)]) for *_, qid, i in candidates[:n]]


def summary_metrics(graphs, examples, agreement: pd.DataFrame) -> dict:
    df = examples.to_pandas()
    kept = df[df["kept"]]
    out = {
        "n_dags": len(graphs), "n_paths_sampled": len(df), "n_paths_kept": len(kept),
        "mean_reasoning_tokens": float(kept["reasoning_tokens"].mean()) if len(kept) else None,
        "median_reasoning_tokens": float(kept["reasoning_tokens"].median()) if len(kept) else None,
        "mean_backtracks_per_path": float(kept["n_backtracks"].mean()) if len(kept) else None,
        "share_filtered_out": 1 - len(kept) / max(len(df), 1),
    }
    if "ari" in agreement.columns and len(agreement):
        out["embedding_vs_exact_ari_pooled"] = float(agreement["ari"].iloc[0])
        out["embedding_vs_exact_purity_pooled"] = float(agreement["purity"].iloc[0])
    return out

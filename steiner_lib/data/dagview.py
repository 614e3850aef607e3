"""An interactive view of one question's DAG: follow a sampled path, read any step's text on demand.

`DagView(G, path, trajectories)` displays as a self-contained HTML block (an SVG drawn here, a
few lines of plain JavaScript, no library, no network): hover a node for its state and features
(an SVG <title> tooltip, which needs no script), click it to read the texts of the steps clustered
into it, and open the sampled path's steps one by one below the drawing. The same object also
carries a static PNG (plots.draw_dag), which Quarto's PDF route and any reader without HTML use:
Jupyter front ends and nbconvert pick the HTML, Quarto's typst/PDF format the PNG.

    DagView(G, path=None, trajectories=None, title=None)   the display object
    dag_view_html(G, path=None, trajectories=None, ...)     the HTML alone (a string)
"""

from __future__ import annotations

import hashlib
import html
import io
import math

import networkx as nx

from steiner_lib.data import dag as dag_lib
from steiner_lib.data.dag import BacktrackTo, SampledPath
from steiner_lib.report import plots

X_STEP, Y_STEP, MARGIN = 190, 64, 48  # pixels between layers, between rows, around the drawing
MARKERS = {"question": "square", "answer": "star", "hallucinated": "cross", "dead end": "circle", "step": "circle"}
MAX_MEMBER_TEXTS = 4  # distinct step texts listed per node (the rest are counted)


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _steps(v) -> str:
    """A distance in steps, or 'no path' when the node cannot reach (or be reached from) it."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "no path"
    return f"{int(v)} step{'s' if int(v) != 1 else ''}"


def _node_shape(kind: str, x: float, y: float, color: str) -> str:
    style = f'fill="{color}" stroke="white" stroke-width="1.5"'
    if MARKERS[kind] == "square":
        return f'<rect x="{x - 9:.1f}" y="{y - 9:.1f}" width="18" height="18" {style}/>'
    if MARKERS[kind] == "star":
        pts = " ".join(f"{x + r * math.sin(a):.1f},{y - r * math.cos(a):.1f}"
                       for i in range(10) for r, a in [((13 if i % 2 == 0 else 5.5), i * math.pi / 5)])
        return f'<polygon points="{pts}" {style}/>'
    if MARKERS[kind] == "cross":
        d = 7
        return (f'<path d="M{x - d},{y - d} L{x + d},{y + d} M{x - d},{y + d} L{x + d},{y - d}" '
                f'stroke="{color}" stroke-width="5" stroke-linecap="round"/>'
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="transparent"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" {style}/>'


def _step_html(step, heading: str) -> str:
    fields = "".join(f"<dt><em>{f}</em></dt><dd style='margin:0'>{_esc(getattr(step, f))}</dd>" for f in dag_lib.STEP_FIELDS)
    return (f"<p style='margin:.4em 0 .1em'><strong>{_esc(heading)}</strong></p>"
            f"<dl style='display:grid;grid-template-columns:max-content 1fr;gap:0 .8em;margin:0'>{fields}</dl>")


def _member_texts(G: nx.DiGraph, n: int, trajectories) -> str:
    """The distinct texts of the steps clustered into node n (first few), or a note when unavailable."""
    members = G.nodes[n].get("members") or []
    if not members:
        return "<p>The question: no step is clustered here.</p>"
    if trajectories is None:
        return f"<p>{len(members)} step(s) clustered here (pass the trajectories to read them).</p>"
    seen, parts = set(), []
    for t, s in members:
        try:
            step = trajectories[int(t)].records[int(s)].step
        except (IndexError, AttributeError):
            continue
        key = (step.name, step.thought, step.summary, step.reflection)
        if key in seen:
            continue
        seen.add(key)
        if len(parts) < MAX_MEMBER_TEXTS:
            parts.append(_step_html(step, f"step {int(s) + 1} of trace {int(t)}"))
    more = len(seen) - len(parts)
    head = (f"<p>{len(members)} step{'s are' if len(members) != 1 else ' is'} clustered here, {len(seen)} "
            f"distinct text{'s' if len(seen) != 1 else ''}") + (
        f"; the first {len(parts)}:" if more > 0 else ":") + "</p>"
    return head + "".join(parts)


def dag_view_html(G: nx.DiGraph, path: SampledPath | None = None, trajectories=None, title: str | None = None,
                  max_width: int = 1100) -> str:
    """Self-contained HTML: the DAG as an SVG (layers = steps from the question), `path` highlighted
    with numbered steps and dashed backtracks, node tooltips, click-to-read step texts, and the
    path's steps as an ordered list of expandable items. trajectories: the question's trajectories
    in the order the DAG was built from (their step texts fill the click panel)."""
    if G.number_of_nodes() == 0:
        raise ValueError("dag_view_html got an empty graph: build it with dag.build_dag first")
    if path is not None and any(n not in G for n in path.nodes):
        raise ValueError(f"the path visits nodes {[n for n in path.nodes if n not in G]} that are not in this DAG: "
                         f"pass the path sampled from this graph (question {G.graph.get('question_id')!r})")
    pos = plots.layered_layout(G)  # also fills the node features
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    x0, y1 = min(xs), max(ys)
    px = {n: (MARGIN + 60 + (x - x0) * X_STEP, MARGIN + (y1 - y) * Y_STEP) for n, (x, y) in pos.items()}
    width = int(MARGIN * 2 + 120 + (max(xs) - x0) * X_STEP)
    height = int(MARGIN * 2 + (y1 - min(ys)) * Y_STEP + 56)  # + room for the axis below
    uid = "dagview-" + hashlib.sha1(repr((G.graph.get("question_id"), getattr(path, "nodes", None),
                                           G.number_of_nodes())).encode()).hexdigest()[:10]
    target = G.graph.get("target", "?")

    svg = [f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
           f'aria-label="{_esc(title or "reasoning DAG")}" xmlns="http://www.w3.org/2000/svg">',
           f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
           f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{plots.EDGE_COLOR}"/></marker>'
           f'<marker id="{uid}-parrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" '
           f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{plots.PATH_COLOR}"/></marker></defs>']
    for layer in range(int(x0), int(max(xs)) + 1):  # the axis: steps from the question
        x = MARGIN + 60 + (layer - x0) * X_STEP
        svg.append(f'<text x="{x:.0f}" y="{height - 26}" text-anchor="middle" font-size="12" fill="#555">{layer}</text>')
    svg.append(f'<text x="{width / 2:.0f}" y="{height - 8}" text-anchor="middle" font-size="12" fill="#555">'
               f'steps from the question</text>')

    def shrink(a, b, by=12.0):
        (x1, y1_), (x2, y2) = a, b
        d = math.hypot(x2 - x1, y2 - y1_) or 1.0
        return (x1 + (x2 - x1) * by / d, y1_ + (y2 - y1_) * by / d), (x2 - (x2 - x1) * by / d, y2 - (y2 - y1_) * by / d)

    for u, v in G.edges():
        (ax, ay), (bx, by_) = shrink(px[u], px[v])
        svg.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by_:.1f}" stroke="{plots.EDGE_COLOR}" '
                   f'stroke-width="1.2" marker-end="url(#{uid}-arrow)"/>')
    steps_html = []
    if path is not None:
        numbers: dict[tuple[int, int], list[str]] = {}
        for i, ((u, v), jump) in enumerate(dag_lib._replay(path)):
            numbers.setdefault((u, v), []).append(str(i + 1))
            if jump is not None:
                (ax, ay), (bx, by_) = shrink(px[jump[0]], px[jump[1]])
                mx, my = (ax + bx) / 2, max(ay, by_) + 40 + 0.15 * abs(bx - ax)  # bow below, like the PNG
                svg.append(f'<path d="M{ax:.1f},{ay:.1f} Q{mx:.1f},{my:.1f} {bx:.1f},{by_:.1f}" fill="none" '
                           f'stroke="{plots.PATH_COLOR}" stroke-width="1.8" stroke-dasharray="6 4" '
                           f'marker-end="url(#{uid}-parrow)"><title>backtrack after step {i + 1}</title></path>')
        for (u, v), nums in numbers.items():
            (ax, ay), (bx, by_) = shrink(px[u], px[v])
            svg.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by_:.1f}" stroke="{plots.PATH_COLOR}" '
                       f'stroke-width="3.2" marker-end="url(#{uid}-parrow)"><title>path step {", ".join(nums)}</title></line>')
            mx, my = (ax + bx) / 2, (ay + by_) / 2
            label = ",".join(nums)
            svg.append(f'<rect x="{mx - 4 - 3.5 * len(label):.1f}" y="{my - 8:.1f}" width="{8 + 7 * len(label):.1f}" '
                       f'height="16" rx="4" fill="white" stroke="{plots.PATH_COLOR}" stroke-width="0.8"/>'
                       f'<text x="{mx:.1f}" y="{my + 4:.1f}" text-anchor="middle" font-size="11" '
                       f'fill="{plots.PATH_COLOR}">{label}</text>')
        # The step texts as the model is trained on them: unique names, backtrack reasons about this path.
        trained = dag_lib.path_to_trajectory(path, answer="").records
        for i, ((record, move), shown) in enumerate(zip(path.steps, trained)):
            after = ("then backtracks to " + ("the question" if move.step is None else f"step {move.step + 1}")
                     if isinstance(move, BacktrackTo) else "then proceeds" if move == "proceed" else "ends here")
            state = plots.state_label(record.state, 8)
            ok = "" if record.arithmetic_ok else " (wrong arithmetic)"
            steps_html.append(f'<li><details><summary>{_esc(shown.step.name)} &rarr; [{_esc(state)}]{ok}; '
                              f'{_esc(after)}</summary>{_step_html(shown.step, f"step {i + 1}")}</details></li>')

    panels = []
    for n, data in G.nodes(data=True):
        cat = plots.node_category(data)
        x, y = px[n]
        state = plots.state_label(data["state"], 8)
        label = f"[{state}] → {target}" if data["kind"] == "question" else state
        members = data.get("n_members", 0)
        features = (f"in-degree {data.get('in_degree')}, out-degree {data.get('out_degree')}; "
                    f"{_steps(data.get('dist_from_question'))} from the question, "
                    f"{_steps(data.get('dist_to_answer'))} to an answer; "
                    f"{members} step{'s' if members != 1 else ''} clustered here")
        tip = f"{label}: {plots.NODE_STYLES[cat]['label']}; {features} (click to read them)"
        svg.append(f'<g class="node" data-node="{n}" tabindex="0" style="cursor:pointer"><title>{_esc(tip)}</title>'
                   f'{_node_shape(cat, x, y, plots.NODE_STYLES[cat]["color"])}'
                   f'<text x="{x:.1f}" y="{y - 14:.1f}" text-anchor="middle" font-size="11" fill="#222">{_esc(label)}</text></g>')
        panels.append(f'<div class="panel" data-node="{n}" hidden><p><strong>{_esc(label)}</strong> '
                      f'({_esc(plots.NODE_STYLES[cat]["label"])}): {_esc(features)}.</p>'
                      f'{_member_texts(G, n, trajectories)}</div>')
    svg.append("</svg>")

    legend = " · ".join(f'<span style="color:{s["color"]}">{"■★✖●●"[i]}</span> {_esc(s["label"])}'
                        for i, s in enumerate(plots.NODE_STYLES.values()))
    if path is not None:
        legend += (f' · <span style="color:{plots.PATH_COLOR}">━</span> sampled path (step numbers)'
                   f' · <span style="color:{plots.PATH_COLOR}">╌</span> backtrack ({path.n_backtracks})')
    s = dag_lib.dag_summary(G)
    heading = title or f"{s['question_id']}: {s['n_nodes']} nodes, {s['n_edges']} edges"
    path_part = (f'<p><strong>The sampled path</strong>, {len(path.steps)} steps and {path.n_backtracks} backtracks '
                 f'(open a step to read it):</p><ol>{"".join(steps_html)}</ol>') if path is not None else ""
    script = f"""<script>(function() {{
  var root = document.getElementById("{uid}");
  if (!root) return;
  function show(n) {{
    root.querySelectorAll(".panel").forEach(function(p) {{ p.hidden = p.getAttribute("data-node") !== n; }});
    root.querySelector(".hint").hidden = true;
  }}
  root.querySelectorAll("g.node").forEach(function(g) {{
    g.addEventListener("click", function() {{ show(g.getAttribute("data-node")); }});
    g.addEventListener("keydown", function(e) {{ if (e.key === "Enter") show(g.getAttribute("data-node")); }});
  }});
}})();</script>"""
    return (f'<div id="{uid}" class="steiner-dagview" style="max-width:{max_width}px;font-family:system-ui,sans-serif;'
            f'font-size:14px;line-height:1.4">'
            f'<p style="margin:.2em 0"><strong>{_esc(heading)}</strong>: hover a node for its features, click it for '
            f'the texts of its steps.</p><div style="overflow-x:auto">{"".join(svg)}</div>'
            f'<p style="font-size:12px;margin:.2em 0">{legend}</p>'
            f'<div style="border:1px solid #ddd;padding:.4em .8em;margin:.4em 0;max-height:22em;overflow-y:auto">'
            f'<p class="hint" style="color:#666;margin:.2em 0">Click a node to read its steps here.</p>{"".join(panels)}</div>'
            f'{path_part}{script}</div>')


class DagView:
    """One question's DAG for display: HTML (interactive) and PNG (static) representations."""

    def __init__(self, G: nx.DiGraph, path: SampledPath | None = None, trajectories=None, title: str | None = None):
        self.G, self.path, self.trajectories, self.title = G, path, trajectories, title

    def _repr_html_(self) -> str:
        return dag_view_html(self.G, self.path, self.trajectories, self.title)

    def _repr_png_(self) -> bytes:
        import matplotlib.pyplot as plt

        fig = plots.draw_dag(self.G, self.path, title=self.title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    def __repr__(self) -> str:
        s = dag_lib.dag_summary(self.G)
        return f"DagView({s['question_id']}: {s['n_nodes']} nodes, {s['n_edges']} edges)"


__all__ = ["DagView", "dag_view_html"]

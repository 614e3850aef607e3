"""The report: copy a run's executed notebooks into the Quarto book, check it, render it.

    prepare_report(run_dir)        runs/<run>/executed/NN_*.ipynb -> report/notebooks/ (+ chapter list)
    check_quarto_project(report)   what Quarto itself lets through (see its docstring)
    render_report(report, out)     Quarto: the HTML book and a PDF; without Quarto, plain nbconvert pages

The chapter list is generated, not hand-written: report/_quarto.yml lists only index.qmd and
names `notebooks/_chapters.yml` in `metadata-files`. Quarto merges that file into the project
config and concatenates lists, so the book is index.qmd followed by the notebooks this run
actually executed, and a run with only 01-02 renders as well as a run with all seven.
Figures and tables are code cells carrying Quarto options (`#| label: fig-x`, `#| fig-cap: ...`);
prose refers to them as `@fig-x`.

The book is: index.qmd (the opening page; it embeds the results table of notebook 08), the stage
notebooks 01-07 as chapters, then limitations.qmd, then notebook 08_summary (the claims table and
the reproducibility statement, computed by the run) as an appendix. The copies in report/notebooks
are tidied for readers (tidy_notebook): log records, progress bars and library warnings dropped,
repeated lines collapsed, paths made relative, table headers spelled out; the executed notebooks
under runs/ are never changed.

The PDF: Quarto 1.7 renders books to HTML (and LaTeX) but skips typst for books, so pdf_notebook
assembles the same pages into one notebook (preface, chapters, limitations, appendix) and Quarto
renders that single document with typst (options in report/_pdf.yml). No TeX installation is
needed; Quarto's typst comes with it.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger("steiner_lib.report.book")

CHAPTERS_FILE = "notebooks/_chapters.yml"  # relative to the report dir; written by prepare_report
PDF_OPTIONS_FILE = "_pdf.yml"              # the PDF's front matter, relative to the report dir
PDF_NAME = "steiner-report.pdf"
NO_QUARTO_MESSAGE = ("quarto not found on PATH: rendering plain nbconvert pages instead of the book "
                     "(get Quarto with `pip install quarto-cli`, or ../shared/quarto/install.sh .quarto)")

STAGE_NOTEBOOK = re.compile(r"^(\d+)_[A-Za-z0-9_-]+\.ipynb$")  # 02_dag.ipynb; not 02_dag.failed.ipynb
EMBED = re.compile(r"(?<!\{)\{\{<\s*embed\s+([^\s>]+)[^>]*>\}\}(?!\})")
# @fig-x, [@fig-x], [-@fig-x], @Fig-x; not a@fig-x (an e-mail) and not inside code (stripped first).
REFERENCE = re.compile(r"(?<![\w@])(-?)@([Ff]ig|[Tt]bl)-([A-Za-z0-9_-]*[A-Za-z0-9_])")
ATTRIBUTE_LABEL = re.compile(r"\{#((?:fig|tbl)-[A-Za-z0-9_-]*[A-Za-z0-9_])[\s}.]")  # ::: {#fig-x} / ![..](..){#fig-x}
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
YAML_HEADER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)
QMD_CHUNK = re.compile(r"^```\{[a-zA-Z]+[^}]*\}[^\n]*\n(.*?)^```", re.M | re.S)
CAPTION_KEY = {"fig": "fig-cap", "tbl": "tbl-cap"}
APPENDIX_STAGES = ("08_summary",)      # notebooks that run last and go to the book's appendices
BACK_CHAPTERS = ("limitations.qmd",)   # .qmd chapters after the notebooks, when they exist
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")  # tqdm: "name:  40%|████      | 4/10 [...]"
LIBRARY_WARNING = re.compile(r"site-packages/\S+:\d+: \w*Warning: ")
LOG_RECORD = re.compile(r"^[A-Za-z_][\w]*(\.[\w]+)*: ")  # stderr "steiner_lib.stages: stage 02_dag: ..."
TRAINER_LOG = re.compile(r"^\{'[\w/]+': ")                # transformers' Trainer printing {'loss': ...}

# Table headers as the book shows them. Any other snake_case header has its underscores turned into
# spaces; the arguments of reasoning_constraints keep their names, which the prose uses.
COLUMN_NAMES = {
    "acc_ci_low": "95% CI low", "acc_ci_high": "95% CI high", "ci_low": "95% CI low", "ci_high": "95% CI high",
    "format_error_rate": "format errors %", "mean_steps": "steps per output",
    "ari": "adjusted Rand index", "n_clusters_exact": "clusters (exact)", "n_clusters_other": "clusters (embedding)",
    "n_steps": "steps", "norm_before": "norm before CPT", "norm_after": "norm after CPT",
    "cosine_before_after": "cosine, before vs after", "neighbours_before": "nearest tokens before CPT",
    "neighbours_after": "nearest tokens after CPT", "w_in_degree": "weight: in-degree",
    "w_out_degree": "weight: out-degree", "w_dist_question": "weight: distance from question",
    "w_dist_answer": "weight: distance to answer", "unreachable_value": "value of an unreachable node",
}
KEPT_NAMES = frozenset({"min_steps", "max_steps"})
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
TABLE_HEADER = re.compile(r"(<th\b[^>]*>)\s*([^<]*?)\s*(</th>)")


class ReportError(RuntimeError):
    pass


# ---------------------------------------------------------------- notebooks and cell options

def collect_notebooks(run_dir: str | Path) -> list[Path]:
    """The executed notebooks under run_dir/executed, in stage order (by their NN_ prefix)."""
    executed = Path(run_dir) / "executed"
    if not executed.is_dir():
        raise ReportError(f"no executed notebooks: {executed} does not exist. Run the notebooks first "
                          f"(python -m steiner_lib run --params params/<preset>.yaml).")
    found = [p for p in executed.iterdir() if p.is_file() and STAGE_NOTEBOOK.match(p.name)]
    return sorted(found, key=lambda p: (int(STAGE_NOTEBOOK.match(p.name).group(1)), p.name))


def cell_options(cell) -> dict:
    """Quarto options of a notebook code cell: its leading `#| key: value` lines (YAML) over the same
    keys in its metadata (Quarto accepts both). Raises ValueError when the `#|` lines are not YAML."""
    return parse_options(cell.source, cell.get("metadata", {}))


def parse_options(source: str, metadata: dict | None = None) -> dict:
    """Options of a code cell or ```{python} chunk given its source (see cell_options)."""
    metadata = metadata or {}
    options = {k: metadata[k] for k in ("label", "fig-cap", "tbl-cap") if k in metadata}
    lines = []
    for line in source.splitlines():
        if not line.startswith("#|"):
            break
        lines.append(line[3:] if line.startswith("#| ") else line[2:])
    if lines:
        try:
            parsed = yaml.safe_load("\n".join(lines))
        except yaml.YAMLError as e:
            raise ValueError(f"its `#|` option lines are not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(parsed, dict):
            raise ValueError("its `#|` option lines are not `key: value` pairs")
        options.update(parsed)
    return options


def notebook_title(nb, default: str) -> str:
    """The first markdown heading of a notebook (a chapter's title), without Quarto attributes."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        m = re.search(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", strip_code(cell.source), re.M)
        if m:
            return re.sub(r"\s*\{[^}]*\}\s*$", "", m.group(1)).strip()
    return default


def strip_code(markdown: str) -> str:
    """Markdown with fenced and inline code removed (Quarto resolves no references inside code)."""
    return INLINE_CODE.sub("", FENCED_CODE.sub("", markdown))


def _read_notebook(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


# ---------------------------------------------------------------- the Quarto project config

def _merge_config(base, extra):
    """Merge two YAML configs the way Quarto merges metadata-files: dicts recursively, lists
    concatenated without duplicates, scalars replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = _merge_config(base[k], v) if k in base else v
        return out
    if isinstance(base, list) or isinstance(extra, list):
        if base is None or extra is None:
            return extra if base is None else base
        merged = []
        for item in (base if isinstance(base, list) else [base]) + (extra if isinstance(extra, list) else [extra]):
            if all(json.dumps(item, sort_keys=True) != json.dumps(m, sort_keys=True) for m in merged):
                merged.append(item)
        return merged
    return extra


def load_quarto_config(report_dir: str | Path) -> dict:
    """_quarto.yml merged with the metadata-files it names that exist (as Quarto does).
    Raises ReportError when _quarto.yml is missing or not a YAML mapping."""
    report_dir = Path(report_dir)
    path = report_dir / "_quarto.yml"
    if not path.is_file():
        raise ReportError(f"_quarto.yml: not found in {report_dir} (is this the report/ directory?)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ReportError(f"_quarto.yml: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ReportError("_quarto.yml: not a YAML mapping (expected keys project, book, format)")
    extra = ([config["metadata-file"]] if config.get("metadata-file") else []) + list(config.get("metadata-files") or [])
    for name in extra:
        f = report_dir / name
        if f.is_file():  # Quarto silently skips a missing metadata file; so do we
            try:
                config = _merge_config(config, yaml.safe_load(f.read_text()) or {})
            except yaml.YAMLError as e:
                raise ReportError(f"{name}: not valid YAML: {e}") from None
    return config


def _flatten_chapters(entries) -> list[str]:
    files = []
    for entry in entries or []:
        if isinstance(entry, str):
            files.append(entry)
        elif isinstance(entry, dict):
            part = entry.get("part")
            if isinstance(part, str) and part.endswith((".qmd", ".ipynb", ".md")):
                files.append(part)
            files += _flatten_chapters(entry.get("chapters"))
    return files


def book_chapters(report_dir: str | Path) -> list[str]:
    """The book's chapter files (paths relative to report_dir) in order, parts flattened, appendices last."""
    book = load_quarto_config(report_dir).get("book") or {}
    return _flatten_chapters(book.get("chapters")) + _flatten_chapters(book.get("appendices"))


# ---------------------------------------------------------------- tidy outputs for readers

def tidy_stream(text: str, root: str | Path | None = None) -> str:
    """A stream output as a reader should see it: carriage-return overwrites applied (a progress
    bar's final state), ANSI codes removed, progress bars and warnings from installed libraries
    dropped, runs of identical lines collapsed into one with a count, `root/` paths made relative."""
    root = str(root if root is not None else _default_report_dir().parent)
    lines, skip_indented = [], False
    for line in ANSI.sub("", text).split("\n"):
        line = line.rstrip("\r").split("\r")[-1]
        if skip_indented and line.startswith("  "):
            continue  # the source line that follows a warning
        skip_indented = bool(LIBRARY_WARNING.search(line))
        if skip_indented or PROGRESS_BAR.search(line):
            continue
        lines.append(line.replace(root + "/", ""))
    out: list[list] = []
    for line in lines:
        if out and out[-1][0] == line and line.strip():
            out[-1][1] += 1
        else:
            out.append([line, 1])
    text = "\n".join(line if n == 1 else f"{line}  [repeated {n} times]" for line, n in out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + ("\n" if text.strip() else "")


def readable_header(name: str) -> str:
    """A table header as a reader should see it: COLUMN_NAMES, else snake_case spelled with spaces."""
    if name in COLUMN_NAMES:
        return COLUMN_NAMES[name]
    return name.replace("_", " ") if SNAKE_CASE.fullmatch(name) and name not in KEPT_NAMES else name


def readable_table_html(table_html: str) -> str:
    """An HTML table with its header cells (<th>) passed through readable_header."""
    return TABLE_HEADER.sub(lambda m: m.group(1) + html.escape(readable_header(html.unescape(m.group(2))),
                                                              quote=False) + m.group(3), table_html)


def tidy_notebook(nb, root: str | Path | None = None):
    """A copy of an executed notebook fit for the book: the default `parameters` cell dropped when
    Papermill injected the run's values below it, consecutive stream outputs merged and tidied
    (tidy_stream; log records on stderr and the Trainer's printed log dicts dropped too), empty ones
    dropped, the Trainer's HTML progress widgets dropped (the loss curves are the figures), table
    headers spelled out (readable_header). Figures and every other output are kept as they are."""
    import nbformat

    nb = copy.deepcopy(nb)
    tags = lambda c: c.get("metadata", {}).get("tags", [])
    if any("injected-parameters" in tags(c) for c in nb.cells):
        # Papermill's injected cell holds the values this run used; the defaults above it would only mislead.
        nb.cells = [c for c in nb.cells if "parameters" not in tags(c)]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if merged and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == out["name"]:
                    merged[-1]["text"] += out["text"]
                else:
                    merged.append(nbformat.from_dict({"output_type": "stream", "name": out["name"], "text": out["text"]}))
                continue
            data = out.get("data") or {}
            html_text = "".join(data.get("text/html", ""))
            if "<progress" in html_text:
                continue
            if "<table" in html_text:
                data["text/html"] = readable_table_html(html_text)
            merged.append(out)
        outputs = []
        for out in merged:
            if out.get("output_type") == "stream":
                drop = LOG_RECORD if out["name"] == "stderr" else TRAINER_LOG
                text = "".join(line for line in out["text"].splitlines(keepends=True) if not drop.match(line))
                out["text"] = tidy_stream(text, root)
                if not out["text"].strip():
                    continue
            outputs.append(out)
        cell.outputs = outputs
    return nb


# ---------------------------------------------------------------- prepare

@contextmanager
def _replaced_atomically(target: Path):
    """Yield a fresh sibling directory; on success it takes target's place (the old one is removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is meant to be read
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _default_report_dir() -> Path:
    from steiner_lib.params import project_root  # the repository, not this subpackage (also named report)

    return project_root() / "report"


def prepare_report(run_dir: str | Path, report_dir: str | Path | None = None) -> Path:
    """Copy run_dir's executed notebooks into report_dir/notebooks (replaced as a whole, atomically)
    with the chapter list notebooks/_chapters.yml that _quarto.yml merges in. Returns report_dir
    (default: the repository's report/)."""
    report_dir = Path(report_dir) if report_dir is not None else _default_report_dir()
    notebooks = collect_notebooks(run_dir)
    if not notebooks:
        raise ReportError(f"no executed notebooks (NN_name.ipynb) in {Path(run_dir) / 'executed'}: "
                          f"run the notebooks first (python -m steiner_lib run --params params/<preset>.yaml)")
    if not (report_dir / "_quarto.yml").is_file():
        raise ReportError(f"{report_dir} has no _quarto.yml: pass the report/ directory of the repository")
    import nbformat

    with _replaced_atomically(report_dir / "notebooks") as tmp:
        for nb in notebooks:
            try:  # fail here, naming the file, rather than later inside Quarto
                book_copy = tidy_notebook(_read_notebook(nb))
            except Exception as e:  # nbformat raises several kinds; all mean "not a notebook"
                raise ReportError(f"{nb}: not a readable notebook ({e}); rerun its stage") from None
            nbformat.write(book_copy, str(tmp / nb.name))
            log.info("chapter %s <- %s", nb.name, nb)
        appendix = [nb for nb in notebooks if nb.stem in APPENDIX_STAGES]
        book = {"chapters": [f"notebooks/{nb.name}" for nb in notebooks if nb not in appendix]
                + [q for q in BACK_CHAPTERS if (report_dir / q).is_file()]}
        if appendix:
            book["appendices"] = [f"notebooks/{nb.name}" for nb in appendix]
        header = ("# Written by steiner_lib.report.book.prepare_report: the executed notebooks in stage order, "
                  "then the back chapters; the summary notebook as an appendix.\n")
        (tmp / Path(CHAPTERS_FILE).name).write_text(header + yaml.safe_dump({"book": book}, sort_keys=False))
    log.info("%d chapters copied into %s and listed in %s", len(notebooks), report_dir / "notebooks",
             CHAPTERS_FILE)
    return report_dir


# ---------------------------------------------------------------- static check

@dataclass
class _Doc:
    """What one source file of the book defines and uses."""
    path: str                       # relative to the report dir
    labels: list[tuple[str, dict]]  # (label, options) of labelled code cells / chunks / {#fig-x} blocks
    references: list[str]           # fig-x / tbl-x referred to with @


def _prose_doc(rel: str, markdown: str, cells: list[dict]) -> _Doc:
    """markdown: the file's prose; cells: the options of its code cells (unparseable ones are Quarto's to report)."""
    prose = strip_code(markdown)
    labels = [(str(o["label"]), o) for o in cells if "label" in o]
    labels += [(lab, {"block": True}) for lab in ATTRIBUTE_LABEL.findall(prose + " ")]
    return _Doc(rel, labels, [f"{m.group(2).lower()}-{m.group(3)}" for m in REFERENCE.finditer(prose)])


def _options_or_none(source: str, metadata: dict | None = None) -> dict:
    try:
        return parse_options(source, metadata)
    except ValueError:
        return {}


def _load_doc(path: Path, rel: str) -> _Doc:
    if rel.endswith(".ipynb"):
        nb = _read_notebook(path)
        return _prose_doc(rel, "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown"),
                          [_options_or_none(c.source, c.get("metadata")) for c in nb.cells if c.cell_type == "code"])
    text = YAML_HEADER.sub("", path.read_text())
    return _prose_doc(rel, text, [_options_or_none(m.group(1)) for m in QMD_CHUNK.finditer(text)])


def check_quarto_project(report_dir: str | Path) -> list[str]:
    """What Quarto 1.7 lets through without an error, checked without Quarto. Returns the problems
    found (empty: ok), each naming the file and the label:

    - a metadata file of _quarto.yml is missing (Quarto silently skips it: without
      notebooks/_chapters.yml the book is the preface alone);
    - a fig-/tbl- cell has no fig-cap/tbl-cap (Quarto renders it as an uncaptioned float);
    - a label is defined in two chapters (Quarto rejects duplicates within one notebook only);
    - an @fig-/@tbl- reference names no label of the book (Quarto only warns, and prints `?fig-x`).

    A missing chapter file, an embed of a missing cell and `#|` lines that are not YAML make
    `quarto render` stop with an error naming them, so they are not checked here."""
    report_dir = Path(report_dir)
    try:
        config = load_quarto_config(report_dir)
    except ReportError as e:
        return [str(e)]
    problems: list[str] = []
    for name in config.get("metadata-files") or []:
        if not (report_dir / name).is_file():
            hint = "run prepare_report(run_dir) to write it" if name == CHAPTERS_FILE else "create it"
            problems.append(f"_quarto.yml: metadata file {name} does not exist ({hint})")
    sources = dict.fromkeys(os.path.normpath(rel) for rel in book_chapters(report_dir))
    sources.update(dict.fromkeys(os.path.normpath(p.relative_to(report_dir)) for p in sorted(report_dir.rglob("*.qmd"))
                                 if not any(part.startswith(("_", ".")) for part in p.relative_to(report_dir).parts)))
    docs = [_load_doc(report_dir / rel, rel) for rel in sources if (report_dir / rel).is_file()]

    defined: dict[str, list[str]] = {}
    for doc in docs:
        for label, options in doc.labels:
            defined.setdefault(label, []).append(doc.path)
            kind = label.split("-", 1)[0]
            if kind in CAPTION_KEY and not options.get("block") and not options.get(CAPTION_KEY[kind]):
                problems.append(f"{doc.path}: cell {label} has no {CAPTION_KEY[kind]} "
                                f"(add `#| {CAPTION_KEY[kind]}: \"...\"` under its label)")
    for doc in docs:
        for ref in dict.fromkeys(doc.references):
            if ref not in defined:
                problems.append(f"{doc.path}: @{ref} refers to no label in the book (label the cell that makes "
                                f"it `#| label: {ref}`, or fix the reference)")
    for label, where in defined.items():
        if len(where) > 1:
            problems.append(f"{', '.join(dict.fromkeys(where))}: label {label} is defined {len(where)} times; "
                            f"labels must be unique across the book (rename all but one)")
    return problems


# ---------------------------------------------------------------- render

def render_report(report_dir: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """Render the prepared book into out_dir (default report_dir/_build), replaced atomically.
    With `quarto` on PATH: the Quarto book (HTML) and the PDF (PDF_NAME, see pdf_notebook). Without
    it: plain nbconvert pages, one per chapter, and an index page (NO_QUARTO_MESSAGE says how to get Quarto)."""
    report_dir = Path(report_dir) if report_dir is not None else _default_report_dir()
    out_dir = Path(out_dir) if out_dir is not None else report_dir / "_build"
    quarto = shutil.which("quarto")
    if quarto:
        return _render_with_quarto(quarto, report_dir, out_dir)
    log.warning(NO_QUARTO_MESSAGE)
    return _render_with_nbconvert(report_dir, out_dir)


def _quarto(quarto: str, args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run Quarto, its warnings into this log. QUARTO_RUN_NO_NETWORK: the scripts Quarto runs itself
    use only its cache (a Quarto built from source has no copy of juice, which inlines the CSS of
    HTML tables for typst; without it each table keeps its content and loses only that CSS)."""
    log.info("quarto %s", " ".join(args))
    done = subprocess.run([quarto, *args], capture_output=True, text=True,
                          env={**os.environ, "QUARTO_RUN_NO_NETWORK": "true"})
    if done.returncode != 0:
        raise ReportError(f"quarto render of {what} failed ({done.returncode}):\n{_tail(done)}")
    lines = [ANSI.sub("", line).strip() for line in (done.stderr or "").splitlines()]
    juice = [line for line in lines if "Running juice failed" in line]
    for line in lines:
        if ("WARN" in line or "ERROR" in line or line.startswith("(E)")) and line not in juice:
            log.warning("quarto: %s", line)
    if juice:
        log.info("quarto: %d HTML tables of %s kept without their inlined CSS (no juice in this Quarto)",
                 len(juice), what)
    return done


def _render_with_quarto(quarto: str, report_dir: Path, out_dir: Path) -> Path:
    with _replaced_atomically(out_dir) as tmp:
        _quarto(quarto, ["render", str(report_dir.resolve()), "--to", "html", "--output-dir", str(tmp.resolve())],
                "the book (html)")
        _number_embeds_as_in_the_book(tmp)
        try:
            pdf = build_pdf(quarto, report_dir, tmp / PDF_NAME)
            log.info("PDF: %s (%.1f MB)", out_dir / PDF_NAME, pdf.stat().st_size / 1e6)
        except ReportError as e:  # the HTML book stands on its own; say loudly that the PDF is missing
            log.error("no PDF was made (the HTML book is complete): %s", e)
    log.info("Quarto book in %s (open index.html)", out_dir)
    return out_dir


def _tail(done: subprocess.CompletedProcess, lines: int = 20) -> str:
    return "\n".join(ANSI.sub("", done.stderr or done.stdout or "").strip().splitlines()[-lines:])


FLOAT_CAPTION = re.compile(r'(<figcaption\b[^>]*\bid="((?:fig|tbl)-[A-Za-z0-9_-]+?)-caption-[0-9a-f-]+"[^>]*>\s*'
                           r'(?:Figure|Table)&nbsp;)([0-9A-Z.]+)(:)')


def _number_embeds_as_in_the_book(site: Path) -> None:
    """Quarto numbers a float embedded in the unnumbered opening page by that page ("Table 1") while
    every reference to it says the book's number ("Table A.1"). Give the embedded copies the numbers
    that Quarto wrote on the float's own chapter page."""
    numbers = {}
    for page in site.rglob("*.html"):
        if page != site / "index.html":
            numbers.update((m.group(2), m.group(3)) for m in FLOAT_CAPTION.finditer(page.read_text(encoding="utf-8")))
    index = site / "index.html"
    if index.is_file():
        text = index.read_text(encoding="utf-8")
        index.write_text(FLOAT_CAPTION.sub(lambda m: m.group(1) + numbers.get(m.group(2), m.group(3)) + m.group(4),
                                           text), encoding="utf-8")


def pdf_notebook(report_dir: str | Path):
    """The whole book as one notebook, for Quarto's single-document typst PDF: report/_pdf.yml as
    front matter (with the book's title), then every chapter in book order: .qmd pages as markdown
    cells, notebooks' cells as they are. An embed on a .qmd page becomes a copy of the cell's outputs
    under a line that refers to the original (a label appears once in a document)."""
    import nbformat

    report_dir = Path(report_dir)
    config = load_quarto_config(report_dir)
    book = config.get("book") or {}
    options_file = report_dir / PDF_OPTIONS_FILE
    front = yaml.safe_load(options_file.read_text()) if options_file.is_file() else {}
    front = {**{k: book[k] for k in ("title", "subtitle", "author", "date") if k in book}, **(front or {}),
             "execute": {"enabled": False}}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_raw_cell("---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---")]
    notebooks = {}
    for n, rel in enumerate(book_chapters(report_dir)):
        path = report_dir / rel
        if n:
            nb.cells.append(nbformat.v4.new_markdown_cell("{{< pagebreak >}}"))  # each chapter on a new page
        if rel.endswith(".ipynb"):
            notebooks[rel] = notebooks.get(rel) or _read_notebook(path)
            nb.cells += copy.deepcopy(notebooks[rel].cells)
            continue
        text, last = YAML_HEADER.sub("", path.read_text()), 0
        if re.search(r"^# .*\{[^}]*\.unnumbered", text, re.M):  # an unnumbered page: its sections too
            text = _outside_code(text, lambda prose: re.sub(r"^(#{2,6} [^{\n]*?)\s*$", r"\1 {.unnumbered}",
                                                           prose, flags=re.M))
        for m in EMBED.finditer(text):
            nb.cells.append(nbformat.v4.new_markdown_cell(text[last:m.start()]))
            file, _, ids = m.group(1).partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(rel), file))
            notebooks[target] = notebooks.get(target) or _read_notebook(report_dir / target)
            for label in filter(None, ids.split(",")):
                nb.cells += _embedded_copy(notebooks[target], label)
            last = m.end()
        nb.cells.append(nbformat.v4.new_markdown_cell(text[last:]))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # ids unique in the assembled notebook
    return nb


def _embedded_copy(nb, label: str) -> list:
    import nbformat

    for cell in nb.cells:
        if cell.cell_type == "code" and _options_or_none(cell.source, cell.get("metadata")).get("label") == label:
            options = _options_or_none(cell.source, cell.get("metadata"))
            kind = label.split("-", 1)[0]
            note = nbformat.v4.new_markdown_cell(f"*@{label}, shown here from its chapter:* "
                                                 f"{options.get(CAPTION_KEY.get(kind, ''), '')}")
            outputs = nbformat.v4.new_code_cell("#| echo: false")
            outputs.outputs = copy.deepcopy(cell.outputs)
            return [outputs, note] if kind == "fig" else [note, outputs]
    raise ReportError(f"embed of {label}: no code cell labelled {label} (run prepare_report, or fix the label)")


def build_pdf(quarto: str, report_dir: str | Path, pdf: str | Path) -> Path:
    """Render pdf_notebook(report_dir) with `quarto render --to typst` into the file pdf. The source
    is assembled in a temporary directory outside the report project, so Quarto renders it as a
    single document, not as part of the book."""
    import nbformat

    pdf = Path(pdf)
    with tempfile.TemporaryDirectory(prefix="steiner-pdf-") as tmp:
        source = Path(tmp) / (Path(PDF_NAME).stem + ".ipynb")
        nbformat.write(pdf_notebook(report_dir), str(source))
        _quarto(quarto, ["render", str(source), "--to", "typst"], "the PDF (typst)")
        shutil.copyfile(source.with_suffix(".pdf"), pdf)
    return pdf


# ---------------------------------------------------------------- without Quarto: plain pages

def _label_pages(report_dir: Path, chapters: list[str]) -> dict[str, str]:
    """label -> the page (NN_name.html) of the notebook that defines it."""
    pages = {}
    for rel in chapters:
        if rel.endswith(".ipynb"):
            for label, _ in _load_doc(report_dir / rel, rel).labels:
                pages.setdefault(label, f"{Path(rel).stem}.html")
    return pages


def _plain_markdown(markdown: str, pages: dict[str, str]) -> str:
    """Markdown without Quarto's syntax: @fig-x as a link to its page, an embed as a link, no ::: fences
    or {#id .class} attributes. Code is left alone."""
    def link(m: re.Match) -> str:
        label = f"{m.group(2).lower()}-{m.group(3)}"
        return f"[{label}]({pages[label]})" if label in pages else m.group(0)

    def embed(m: re.Match) -> str:
        file, _, ids = m.group(1).partition("#")
        return f"\n\n(from [{Path(file).stem}]({Path(file).stem}.html): {ids})\n\n"

    def plain(prose: str) -> str:
        prose = re.sub(r"\[(-?@(?:[Ff]ig|[Tt]bl)-[A-Za-z0-9_-]*[A-Za-z0-9_])\]", r"\1", prose)  # [@fig-x] -> @fig-x
        prose = REFERENCE.sub(link, EMBED.sub(embed, prose))
        prose = re.sub(r"^ {0,3}:::.*$\n?", "", prose, flags=re.M)
        return re.sub(r"^( {0,3}#{1,6} .*?)\s*\{[#.][^}]*\}\s*$", r"\1", prose, flags=re.M)

    return _outside_code(markdown, plain)


def _outside_code(markdown: str, change) -> str:
    """markdown with change(text) applied to its prose only: fenced and inline code are left alone."""
    pieces, last = [], 0
    for m in re.finditer(FENCED_CODE.pattern + "|" + INLINE_CODE.pattern, markdown, re.M | re.S):
        pieces += [change(markdown[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join(pieces + [change(markdown[last:])])


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3rem .5rem; }}
pre {{ background: #f5f5f5; padding: .6rem; overflow-x: auto; }}</style></head>
<body>
{body}
</body></html>
"""


def _render_with_nbconvert(report_dir: Path, out_dir: Path) -> Path:
    """Each chapter notebook as one self-contained nbconvert page, .qmd chapters through markdown-it,
    and index.html: a note on how to get the Quarto book, the contents, the preface."""
    import nbformat
    from markdown_it import MarkdownIt
    from nbconvert import HTMLExporter

    chapters = [rel for rel in book_chapters(report_dir) if rel != "index.qmd" and (report_dir / rel).is_file()]
    if not any(rel.endswith(".ipynb") for rel in chapters):
        raise ReportError(f"no chapter notebooks in {report_dir / 'notebooks'}: run prepare_report(run_dir) first")
    pages = _label_pages(report_dir, chapters)
    markdown = MarkdownIt("commonmark", {"html": True}).enable("table")
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    exporter.log = logging.getLogger("steiner_lib.report.book.nbconvert")  # nbconvert warns once per page about alt text
    exporter.log.setLevel(logging.ERROR)
    book_title = str((load_quarto_config(report_dir).get("book") or {}).get("title", "Report"))
    contents = []
    with _replaced_atomically(out_dir) as tmp:
        for rel in chapters:
            page = f"{Path(rel).stem}.html"
            if rel.endswith(".ipynb"):
                nb = copy.deepcopy(_read_notebook(report_dir / rel))
                for cell in nb.cells:
                    if cell.cell_type == "markdown":
                        cell.source = _plain_markdown(cell.source, pages)
                title = notebook_title(nb, Path(rel).stem)
                body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
            else:
                text = _plain_markdown(YAML_HEADER.sub("", (report_dir / rel).read_text()), pages)
                title = notebook_title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)]), Path(rel).stem)
                body = PAGE.format(title=html.escape(title), body=markdown.render(text))
            (tmp / page).write_text(body, encoding="utf-8")
            contents.append(f'<li><a href="{page}">{html.escape(title)}</a></li>')
        index = report_dir / "index.qmd"
        preface = markdown.render(_plain_markdown(YAML_HEADER.sub("", index.read_text()), pages)) if index.is_file() else ""
        note = html.escape(NO_QUARTO_MESSAGE.split(": ", 1)[1])
        body = (f"<h1>{html.escape(book_title)}</h1>\n<p><em>{note}.</em></p>\n"
                f"<h2>Contents</h2><ol>{''.join(contents)}</ol>\n{preface}")
        (tmp / "index.html").write_text(PAGE.format(title=html.escape(book_title), body=body), encoding="utf-8")
    log.info("%d chapters and an index page in %s", len(chapters), out_dir)
    return out_dir


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """python -m steiner_lib.report.book RUN_DIR [--report-dir report] [--out DIR] [--check-only]"""
    parser = argparse.ArgumentParser(prog="python -m steiner_lib.report.book", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, e.g. runs/cpu (holds executed/NN_name.ipynb)")
    parser.add_argument("--report-dir", type=Path, default=None, help="the Quarto project (default: report/)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <report-dir>/_build)")
    parser.add_argument("--check-only", action="store_true", help="prepare and check; do not render")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        report_dir = prepare_report(args.run_dir, args.report_dir)
        problems = check_quarto_project(report_dir)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        if problems:
            return 1
        if not args.check_only:
            print(f"report: {render_report(report_dir, args.out)}")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

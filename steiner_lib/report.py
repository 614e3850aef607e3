"""The report: copy a run's executed notebooks into the Quarto book, check it, render it.

    prepare_report(run_dir)        runs/<run>/executed/NN_*.ipynb -> report/notebooks/ (+ chapter list)
    check_quarto_project(report)   static check: chapters, embeds, cross-references, captions, labels
    render_report(report, out)     `quarto render` when Quarto is on PATH, else nbconvert HTML pages

The chapter list is generated, not hand-written: report/_quarto.yml lists only index.qmd and
names `notebooks/_chapters.yml` in `metadata-files`. Quarto merges that file into the project
config and concatenates lists, so the book is index.qmd followed by the notebooks this run
actually executed, and a run with only 01-02 renders as well as a run with all seven.
Figures and tables are code cells carrying Quarto options (`#| label: fig-x`, `#| fig-cap: ...`);
prose refers to them as `@fig-x`.

The book is: index.qmd (the opening page; it embeds the results table of notebook 08), the stage
notebooks 01-07 as chapters, then limitations.qmd, then notebook 08_summary (the claims table and
the reproducibility statement, computed by the run) as an appendix. The copies in report/notebooks
are tidied for readers (tidy_notebook): progress bars and library warnings dropped, repeated log
lines collapsed, paths made relative; the executed notebooks under runs/ are never changed.
"""

from __future__ import annotations

import argparse
import base64
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

log = logging.getLogger("steiner_lib.report")

CHAPTERS_FILE = "notebooks/_chapters.yml"  # relative to the report dir; written by prepare_report
NO_QUARTO_MESSAGE = ("quarto not found on PATH: rendering the executed notebooks with nbconvert instead "
                     "(pip install quarto-cli elsewhere for the Quarto book)")

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
KIND_NAME = {"fig": "Figure", "tbl": "Table"}


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


def strip_cell_options(source: str) -> str:
    """The cell source without its leading `#|` option lines (what a reader should see)."""
    lines = source.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#|"):
        i += 1
    return "".join(lines[i:])


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


def html_table_to_markdown(table_html: str) -> str | None:
    """A pandas HTML table (DataFrame._repr_html_) as a Markdown pipe table, or None when the HTML
    holds no table or more than one. Quarto's typst/PDF route shows text/markdown but not text/html,
    so without this a DataFrame would print as plain text in the PDF."""
    from html.parser import HTMLParser

    if table_html.count("<table") != 1:
        return None

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell, self.head = [], None, False

        def handle_starttag(self, tag, attrs):
            if tag == "thead":
                self.head = True
            elif tag == "tr":
                self.rows.append((self.head, []))
            elif tag in ("td", "th") and self.rows:
                self.cell = []

        def handle_endtag(self, tag):
            if tag == "thead":
                self.head = False
            elif tag in ("td", "th") and self.cell is not None:
                self.rows[-1][1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(table_html[table_html.index("<table"):])
    head = [cells for is_head, cells in parser.rows if is_head]
    body = [cells for is_head, cells in parser.rows if not is_head and cells]
    if not head and body:
        head, body = [body[0]], body[1:]
    if not head:
        return None
    header = list(head[0])
    for extra in head[1:]:  # pandas puts the index name in a second header row: merge it in
        for i, v in enumerate(extra):
            if v and i < len(header):
                header[i] = f"{header[i]} {v}".strip()
    width = max([len(header)] + [len(r) for r in body])
    pad = lambda r: [c.replace("|", "\\|") for c in r] + [""] * (width - len(r))
    lines = ["| " + " | ".join(pad(header)) + " |", "|" + "|".join(["---"] * width) + "|"]
    lines += ["| " + " | ".join(pad(r)) + " |" for r in body]
    return "\n".join(lines)


def tidy_notebook(nb, root: str | Path | None = None):
    """A copy of an executed notebook fit for the book: the default `parameters` cell dropped when
    Papermill injected the run's values below it, consecutive stream outputs merged and
    tidied (tidy_stream), empty ones dropped, the Trainer's HTML progress widgets dropped (the loss
    curves are the figures), and HTML tables given a Markdown twin for the PDF. Figures, tables and
    every other output are otherwise kept as they are."""
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
            if "<table" in html_text and "text/markdown" not in data and "image/png" not in data:
                markdown = html_table_to_markdown(html_text)
                if markdown:
                    data["text/markdown"] = markdown  # for the PDF; HTML formats still pick text/html
            merged.append(out)
        outputs = []
        for out in merged:
            if out.get("output_type") == "stream":
                out["text"] = tidy_stream(out["text"], root)
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
    return Path(__file__).resolve().parents[1] / "report"


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
        header = ("# Written by steiner_lib.report.prepare_report: the executed notebooks in stage order, "
                  "then the back chapters; the summary notebook as an appendix.\n")
        (tmp / Path(CHAPTERS_FILE).name).write_text(header + yaml.safe_dump({"book": book}, sort_keys=False))
    log.info("%d chapters copied into %s and listed in %s", len(notebooks), report_dir / "notebooks",
             CHAPTERS_FILE)
    return report_dir


# ---------------------------------------------------------------- static check

@dataclass
class _Doc:
    """What one source file of the book defines and uses."""
    path: str                     # relative to the report dir
    labels: list[tuple[str, dict]]  # (label, options) of labelled code cells / chunks / {#fig-x} blocks
    references: list[str]         # fig-x / tbl-x referred to with @
    embeds: list[str]             # FILE#LABEL targets of embed shortcodes
    problems: list[str]


def _notebook_doc(path: Path, rel: str) -> _Doc:
    doc = _Doc(rel, [], [], [], [])
    try:
        nb = _read_notebook(path)
    except Exception as e:  # nbformat raises several kinds; all mean "not a notebook"
        doc.problems.append(f"{rel}: not a readable notebook ({e})")
        return doc
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            doc.references += [f"{m.group(2).lower()}-{m.group(3)}" for m in REFERENCE.finditer(strip_code(cell.source))]
            doc.labels += [(lab, {"block": True}) for lab in ATTRIBUTE_LABEL.findall(cell.source + " ")]
        elif cell.cell_type == "code":
            try:
                options = cell_options(cell)
            except ValueError as e:
                doc.problems.append(f"{rel}: code cell {i}: {e}")
                continue
            if "label" in options:
                doc.labels.append((str(options["label"]), options))
    return doc


def _qmd_doc(path: Path, rel: str) -> _Doc:
    text = YAML_HEADER.sub("", path.read_text())
    doc = _Doc(rel, [], [], [], [])
    for chunk in QMD_CHUNK.finditer(text):  # ```{python} chunks with #| options
        try:
            options = parse_options(chunk.group(1))
        except ValueError as e:
            doc.problems.append(f"{rel}: code chunk: {e}")
            continue
        if "label" in options:
            doc.labels.append((str(options["label"]), options))
    prose = strip_code(text)
    doc.labels += [(lab, {"block": True}) for lab in ATTRIBUTE_LABEL.findall(prose + " ")]
    doc.references = [f"{m.group(2).lower()}-{m.group(3)}" for m in REFERENCE.finditer(prose)]
    doc.embeds = EMBED.findall(text)
    return doc


def check_quarto_project(report_dir: str | Path) -> list[str]:
    """Check the Quarto book without Quarto. Returns the problems found (empty: ok), each naming
    the file and the label: _quarto.yml parses and is a book with chapters, every chapter exists,
    every `{{< embed FILE#LABEL >}}` finds a code cell labelled LABEL, every @fig-/@tbl- reference
    finds a label in the book, fig-/tbl- cells have a fig-cap/tbl-cap, labels are unique."""
    report_dir = Path(report_dir)
    try:
        config = load_quarto_config(report_dir)
    except ReportError as e:
        return [str(e)]
    problems: list[str] = []
    if (config.get("project") or {}).get("type") != "book":
        problems.append("_quarto.yml: project.type is not `book` (the report is a Quarto book)")
    for name in config.get("metadata-files") or []:
        if not (report_dir / name).is_file():
            hint = "run prepare_report(run_dir) to write it" if name == CHAPTERS_FILE else "create it"
            problems.append(f"_quarto.yml: metadata file {name} does not exist ({hint})")
    chapters = book_chapters(report_dir)
    if not chapters:
        problems.append("_quarto.yml: the book has no chapters (book.chapters is empty or missing)")

    docs: dict[str, _Doc] = {}

    def load(rel: str) -> _Doc | None:
        rel = os.path.normpath(rel)
        if rel not in docs:
            path = report_dir / rel
            if not path.is_file():
                return None
            docs[rel] = _notebook_doc(path, rel) if rel.endswith(".ipynb") else _qmd_doc(path, rel)
        return docs[rel]

    chapter_paths = []
    for rel in chapters:
        if load(rel) is None:
            hint = ("run prepare_report(run_dir) to copy the executed notebooks" if rel.startswith("notebooks/")
                    else "create it or remove it from book.chapters in _quarto.yml")
            problems.append(f"_quarto.yml: chapter {rel} does not exist ({hint})")
        else:
            chapter_paths.append(os.path.normpath(rel))
    qmd_paths = [os.path.normpath(p.relative_to(report_dir)) for p in sorted(report_dir.rglob("*.qmd"))
                 if not any(part.startswith(("_", ".")) for part in p.relative_to(report_dir).parts)]
    for rel in qmd_paths:
        load(rel)

    # Embeds: the target cell must exist; its label becomes referable from the embedding file too.
    embedded: set[str] = set()
    for rel in qmd_paths:
        doc = docs[rel]
        for target in doc.embeds:
            file, _, ids = target.partition("#")
            target_rel = os.path.normpath(os.path.join(os.path.dirname(rel), file))
            target_doc = load(target_rel)
            if target_doc is None:
                problems.append(f"{rel}: embed {target}: {target_rel} does not exist "
                                f"(run prepare_report(run_dir), or fix the path)")
                continue
            have = {label for label, _ in target_doc.labels}
            for label in filter(None, ids.split(",")):
                if label in have:
                    embedded.add(label)
                else:
                    problems.append(f"{rel}: embed {target}: {target_rel} has no code cell labelled {label} "
                                    f"(add `#| label: {label}` to the cell that makes it, or fix the label)")

    # Every file read: unreadable cells, missing captions.
    for doc in docs.values():
        problems += doc.problems + _caption_problems(doc)

    # References, from the chapters and the .qmd files, resolve to labels the chapters define.
    defined: dict[str, list[str]] = {}
    for rel in chapter_paths:
        for label, _ in docs[rel].labels:
            defined.setdefault(label, []).append(rel)
    for rel in dict.fromkeys(chapter_paths + qmd_paths):
        for ref in dict.fromkeys(docs[rel].references):
            if ref not in defined and ref not in embedded:
                problems.append(f"{rel}: @{ref} refers to no label in the book (label the cell that makes "
                                f"it `#| label: {ref}`, or fix the reference)")
    for label, where in defined.items():
        if len(where) > 1:
            problems.append(f"{', '.join(dict.fromkeys(where))}: label {label} is defined {len(where)} times; "
                            f"labels must be unique across the book (rename all but one)")
    return problems


def _caption_problems(doc: _Doc) -> list[str]:
    out = []
    for label, options in doc.labels:
        kind = label.split("-", 1)[0]
        if kind in CAPTION_KEY and not options.get("block") and not options.get(CAPTION_KEY[kind]):
            out.append(f"{doc.path}: cell {label} has no {CAPTION_KEY[kind]} "
                       f"(add `#| {CAPTION_KEY[kind]}: \"...\"` under its label)")
    return out


# ---------------------------------------------------------------- render

def render_report(report_dir: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """Render the prepared book into out_dir (default report_dir/_build), replaced atomically.
    With `quarto` on PATH: the Quarto book (HTML, then typst PDF if that works). Without it: each
    executed notebook as a self-contained HTML page (nbconvert) and an index page from index.qmd."""
    report_dir = Path(report_dir) if report_dir is not None else _default_report_dir()
    out_dir = Path(out_dir) if out_dir is not None else report_dir / "_build"
    quarto = shutil.which("quarto")
    if quarto:
        return _render_with_quarto(quarto, report_dir, out_dir)
    log.warning(NO_QUARTO_MESSAGE)
    return _render_with_nbconvert(report_dir, out_dir)


def _render_with_quarto(quarto: str, report_dir: Path, out_dir: Path) -> Path:
    with _replaced_atomically(out_dir) as tmp:
        command = [quarto, "render", str(report_dir.resolve()), "--output-dir", str(tmp.resolve())]
        log.info("%s --to html", " ".join(command))
        done = subprocess.run(command + ["--to", "html"], capture_output=True, text=True)
        if done.returncode != 0:
            raise ReportError(f"quarto render --to html failed ({done.returncode}):\n{_tail(done)}")
        log.info("quarto render --to typst (PDF)")
        # --no-clean keeps the HTML just rendered; typst books need a recent Quarto, so a failure is not fatal.
        done = subprocess.run(command + ["--to", "typst", "--no-clean"], capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("the typst PDF failed (the HTML book is fine): %s", _tail(done, 3).replace("\n", " | "))
    log.info("Quarto book in %s", out_dir)
    return out_dir


def _tail(done: subprocess.CompletedProcess, lines: int = 20) -> str:
    return "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-lines:])


@dataclass
class _Target:
    page: str      # 02_dag.html
    anchor: str    # the label
    text: str      # "Figure 2.1"
    caption: str
    cell: object


def _cross_reference_table(chapters: list[tuple[str, object, str]]) -> dict[str, _Target]:
    """label -> where it is and its number ("Figure 2.1": chapter 2, first figure; "Table A.1" in the
    first appendix), as Quarto numbers a book. chapters: (page, notebook, chapter number) triples."""
    table = {}
    for page, nb, number in chapters:
        counts = {"fig": 0, "tbl": 0}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            try:
                options = cell_options(cell)
            except ValueError:
                continue
            label = str(options.get("label", ""))
            kind = label.split("-", 1)[0]
            if kind in counts and label not in table:
                counts[kind] += 1
                table[label] = _Target(page, label, f"{KIND_NAME[kind]} {number}.{counts[kind]}",
                                       str(options.get(CAPTION_KEY[kind], "")), cell)
    return table


def _link_references(markdown: str, table: dict[str, _Target], page: str) -> str:
    """@fig-x -> [Figure 2.1](02_dag.html#fig-x); [-@fig-x] -> the number alone; unknown -> ?@fig-x (as Quarto)."""
    def replace(m: re.Match) -> str:
        label = f"{m.group(2).lower()}-{m.group(3)}"
        target = table.get(label)
        if target is None:
            return f"?@{label}"
        text = target.text.split()[-1] if m.group(1) else target.text
        href = f"#{label}" if target.page == page else f"{target.page}#{label}"
        return f"[{text}]({href})"

    def link(prose: str) -> str:
        prose = re.sub(r"\[(-?@(?:[Ff]ig|[Tt]bl)-[A-Za-z0-9_-]*[A-Za-z0-9_])\]", r"\1", prose)  # [@fig-x] -> @fig-x
        return REFERENCE.sub(replace, prose)

    # Leave code alone: substitute only outside fenced and inline code.
    pieces, last = [], 0
    for m in re.finditer(FENCED_CODE.pattern + "|" + INLINE_CODE.pattern, markdown, re.M | re.S):
        pieces += [link(markdown[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join(pieces + [link(markdown[last:])])


def _strip_quarto_markdown(markdown: str) -> str:
    """Drop what plain Markdown would show raw: ::: div fences and {#id .class} attributes on headings."""
    markdown = re.sub(r"^ {0,3}:::.*$\n?", "", markdown, flags=re.M)
    return re.sub(r"^( {0,3}#{1,6} .*?)\s*\{[#.][^}]*\}\s*$", r"\1", markdown, flags=re.M)


def _caption_html(target: _Target, anchor: bool = True) -> str:
    ident = f' id="{target.anchor}"' if anchor else ""
    return (f'<p{ident} class="caption"><strong>{html.escape(target.text)}</strong>: '
            f'{html.escape(target.caption)}</p>')


def _notebook_for_html(nb, page: str, table: dict[str, _Target], nav: str):
    """A copy of the notebook fit for nbconvert: no `#|` lines, captions with anchors, references as links."""
    import nbformat

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _strip_quarto_markdown(_link_references(cell.source, table, page))
        elif cell.cell_type == "code":
            try:
                label = str(cell_options(cell).get("label", ""))
            except ValueError:
                label = ""
            cell.source = strip_cell_options(cell.source)
            if label in table and table[label].page == page:
                caption = nbformat.v4.new_output("display_data", data={"text/html": _caption_html(table[label])})
                # Quarto's defaults: figure captions below, table captions above. A link to a figure
                # lands on an anchor above it, so the reader sees the figure, then its caption.
                if label.startswith("fig-"):
                    anchor = nbformat.v4.new_output("display_data", data={"text/html": f'<div id="{label}"></div>'})
                    below = nbformat.v4.new_output("display_data",
                                                   data={"text/html": _caption_html(table[label], anchor=False)})
                    cell.outputs = [anchor] + list(cell.outputs) + [below]
                else:
                    cell.outputs = [caption] + list(cell.outputs)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(nav))
    return nb


@dataclass
class _Page:
    rel: str       # notebooks/02_dag.ipynb or limitations.qmd
    page: str      # 02_dag.html
    number: str    # "2", "A"; "" for the unnumbered opening page
    title: str
    nb: object = None  # the notebook (None for a .qmd page)


def _book_pages(report_dir: Path) -> list[_Page]:
    """The book's pages after the opening one, numbered as Quarto numbers them (1, 2, ...; A, B for appendices)."""
    book = load_quarto_config(report_dir).get("book") or {}
    main, appendices = _flatten_chapters(book.get("chapters")), _flatten_chapters(book.get("appendices"))
    pages, n = [], 0
    for i, rel in enumerate(main + appendices):
        path = report_dir / rel
        if rel == "index.qmd" or not path.is_file() or not rel.endswith((".ipynb", ".qmd")):
            continue
        if i < len(main):
            n += 1
            number = str(n)
        else:
            number = chr(ord("A") + i - len(main))
        if rel.endswith(".ipynb"):
            nb = _read_notebook(path)
            pages.append(_Page(rel, f"{Path(rel).stem}.html", number, notebook_title(nb, Path(rel).stem), nb))
        else:
            m = re.search(r"^#\s+(.+?)\s*(\{[^}]*\})?\s*$", strip_code(YAML_HEADER.sub("", path.read_text())), re.M)
            pages.append(_Page(rel, f"{Path(rel).stem}.html", number, m.group(1) if m else Path(rel).stem))
    return pages


def _render_with_nbconvert(report_dir: Path, out_dir: Path) -> Path:
    from nbconvert import HTMLExporter

    pages = _book_pages(report_dir)
    if not any(p.nb is not None for p in pages):
        raise ReportError(f"no chapter notebooks in {report_dir / 'notebooks'}: run prepare_report(run_dir) first")
    table = _cross_reference_table([(p.page, p.nb, p.number) for p in pages if p.nb is not None])
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    # The lab template has no alt attribute for outputs, so nbconvert fills in a generic one and warns
    # once per page; the captions next to the figures describe them. Keep its errors, drop that noise.
    exporter.log = logging.getLogger("steiner_lib.report.nbconvert")
    exporter.log.setLevel(logging.ERROR)
    book_title = str((load_quarto_config(report_dir).get("book") or {}).get("title", "Report"))
    with _replaced_atomically(out_dir) as tmp:
        for i, page in enumerate(pages):
            nav = " · ".join(
                ["[Contents](index.html)"]
                + ([f"previous: [{pages[i - 1].title}]({pages[i - 1].page})"] if i > 0 else [])
                + ([f"next: [{pages[i + 1].title}]({pages[i + 1].page})"] if i + 1 < len(pages) else []))
            if page.nb is not None:
                body, _ = exporter.from_notebook_node(_notebook_for_html(page.nb, page.page, table, nav),
                                                      resources={"metadata": {"name": page.title}})
            else:
                body = _qmd_html(report_dir, page.rel, page.page, table, book_title, page.title, nav)
            (tmp / page.page).write_text(body, encoding="utf-8")
            log.info("%s -> %s", page.rel, out_dir / page.page)
        contents = [(p.page, f"{p.number}. {p.title}" if p.number.isdigit() else f"Appendix {p.number}: {p.title}")
                    for p in pages]
        (tmp / "index.html").write_text(_index_html(report_dir, contents, table), encoding="utf-8")
        log.info("index.qmd -> %s", out_dir / "index.html")
    log.info("%d chapters and an index page in %s", len(pages), out_dir)
    return out_dir


def _embed_html(target: str, table: dict[str, _Target]) -> str:
    """An embed shortcode's replacement on a .qmd page: the cell's output, its caption, a link to it."""
    file, _, ids = target.partition("#")
    page = f"{Path(file).stem}.html"
    parts = []
    for label in filter(None, ids.split(",")):
        t = table.get(label)
        if t is None:
            parts.append(f'<p>(missing: <a href="{page}">{html.escape(file)}</a>#{html.escape(label)})</p>')
            continue
        outputs = []
        for out in t.cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data and (label.startswith("fig-") or "text/html" not in data):
                png = data["image/png"]
                png = png if isinstance(png, str) else base64.b64encode(png).decode()
                outputs.append(f'<img src="data:image/png;base64,{png.strip()}" alt="{html.escape(t.caption)}">')
            elif "text/html" in data:
                outputs.append("".join(data["text/html"]))
        link = f'<a href="{t.page}#{label}">{html.escape(t.text)}</a>'
        caption = f"<figcaption>{link}: {html.escape(t.caption)} (from {html.escape(Path(file).stem)})</figcaption>"
        parts.append(f'<figure id="{label}">' + ("".join(outputs) + caption if label.startswith("fig-")
                                                  else caption + "".join(outputs)) + "</figure>")
    return "".join(parts).replace("\n", " ")  # one line: markdown-it passes it through as one HTML block


def _markdown_html(report_dir: Path, rel: str, page: str, table: dict[str, _Target]) -> str:
    """A .qmd file's body as HTML: embeds replaced by the cells' outputs, references as links."""
    from markdown_it import MarkdownIt

    qmd = report_dir / rel
    markdown = YAML_HEADER.sub("", qmd.read_text()) if qmd.is_file() else ""
    markdown = EMBED.sub(lambda m: "\n\n" + _embed_html(m.group(1), table) + "\n\n", markdown)
    markdown = _strip_quarto_markdown(_link_references(markdown, table, page))
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #ccc; padding: .3rem .5rem; vertical-align: top; }
figure { margin: 1.5rem 0; overflow-x: auto; } figure img { max-width: 100%; } figcaption { font-size: .9rem; }
pre { background: #f5f5f5; padding: .6rem; overflow-x: auto; }
nav ul { list-style: none; padding-left: .4rem; }
"""


def _page_html(title: str, header: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style></head>
<body>
<header>{header}</header>
<main>
{body}
</main>
</body></html>
"""


def _qmd_html(report_dir: Path, rel: str, page: str, table: dict[str, _Target], book_title: str, title: str,
              nav: str) -> str:
    from markdown_it import MarkdownIt

    nav_html = MarkdownIt("commonmark").renderInline(nav)
    return _page_html(f"{title} - {book_title}", f"<p>{nav_html}</p>", _markdown_html(report_dir, rel, page, table))


def _index_html(report_dir: Path, pages: list[tuple[str, str]], table: dict[str, _Target]) -> str:
    config = load_quarto_config(report_dir)
    book_title = str((config.get("book") or {}).get("title", "Report"))
    contents = "".join(f'<li><a href="{page}">{html.escape(title)}</a></li>' for page, title in pages)
    header = (f"<h1>{html.escape(book_title)}</h1>\n<p><em>Rendered with nbconvert because Quarto was not found; "
              f"the chapters are the executed notebooks.</em></p>\n<nav><h2>Contents</h2><ul>{contents}</ul></nav>")
    return _page_html(book_title, header, _markdown_html(report_dir, "index.qmd", "index.html", table))


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """python -m steiner_lib.report RUN_DIR [--report-dir report] [--out DIR] [--check-only]"""
    parser = argparse.ArgumentParser(prog="python -m steiner_lib.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, e.g. runs/cpu (holds executed/NN_name.ipynb)")
    parser.add_argument("--report-dir", type=Path, default=None, help="the Quarto project (default: report/)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <report-dir>/_build)")
    parser.add_argument("--check-only", action="store_true", help="prepare and check; do not render")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        report_dir = prepare_report(args.run_dir, args.report_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = check_quarto_project(report_dir)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    if problems:
        return 1
    if not args.check_only:
        print(f"report: {render_report(report_dir, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

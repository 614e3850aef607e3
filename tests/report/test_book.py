"""The report: prepare_report, the static check, the PDF's assembled notebook, the plain fallback.

Executed notebooks are built here with nbformat (real PNG figures from matplotlib, HTML tables),
so these tests need neither a run of the pipeline nor Quarto; the real book, rendered by real
Quarto from the smoke run, is checked in tests/report/test_book_smoke.py.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
import stat
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests only: the notebooks themselves keep the inline backend
import matplotlib.pyplot as plt
import nbformat
import pytest
import yaml
from helpers import ROOT

from steiner_lib.report import book
from steiner_lib.report.book import (NO_QUARTO_MESSAGE, ReportError, book_chapters, cell_options,
                                     check_quarto_project, collect_notebooks, prepare_report, render_report)

REAL_REPORT = ROOT / "report"


def tiny_png(seed: int = 0) -> str:
    fig, ax = plt.subplots(figsize=(1.2, 0.9), dpi=40)
    ax.plot([0, 1, 2], [seed, 1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return base64.b64encode(buf.getvalue()).decode()


def figure_cell(label: str, caption: str | None = "A caption.", seed: int = 0, in_metadata: bool = False):
    options = [] if in_metadata else [f"#| label: {label}"] + ([f'#| fig-cap: "{caption}"'] if caption else [])
    cell = nbformat.v4.new_code_cell("\n".join(options + ["plot_something()"]))
    if in_metadata:
        cell.metadata["label"] = label
        if caption:
            cell.metadata["fig-cap"] = caption
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": tiny_png(seed), "text/plain": "<Figure>"})]
    return cell


def table_cell(label: str, caption: str = "A table."):
    cell = nbformat.v4.new_code_cell(f'#| label: {label}\n#| tbl-cap: "{caption}"\nshow_table()')
    table = "<table><thead><tr><th>split</th><th>n</th></tr></thead><tbody><tr><td>train</td><td>8</td></tr></tbody></table>"
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/html": table, "text/plain": "df"},
                                           execution_count=1)]
    return cell


def write_nb(path: Path, title: str, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat this stage does.")] + cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def make_run(tmp_path: Path) -> Path:
    """runs/<run>/executed with two stage notebooks (and files that are not stage notebooks)."""
    executed = tmp_path / "run" / "executed"
    write_nb(executed / "01_alpha.ipynb", "Alpha chapter", [
        nbformat.v4.new_markdown_cell("See @fig-a and the numbers in @tbl-b."),
        figure_cell("fig-a", "A tiny figure.", seed=1),
        table_cell("tbl-b", "A tiny table."),
    ])
    write_nb(executed / "02_beta.ipynb", "Beta chapter", [
        nbformat.v4.new_markdown_cell("@fig-c continues @fig-a (Table [-@tbl-b]); `@fig-in-code` is not a reference."),
        figure_cell("fig-c", "Labelled in metadata.", seed=2, in_metadata=True),
        figure_cell("fig-d", "Second figure.", seed=3),
    ])
    (executed / "02_beta.json").write_text("{}")                       # runner sidecar
    write_nb(executed / "03_gamma.failed.ipynb", "Failed", [])          # a failed run is no chapter
    return executed.parent


INDEX_QMD = """# Preface {.unnumbered}

Some prose that refers to @fig-c and to @tbl-b.

{{< embed notebooks/02_beta.ipynb#fig-c >}}

```sh
echo "{{{< not a shortcode >}}}" @fig-nothing-in-code
```
"""


def make_report_dir(tmp_path: Path, index: str = INDEX_QMD) -> Path:
    """A copy of the real report/_quarto.yml (the chapter mechanism under test) with a small index."""
    rd = tmp_path / "report"
    rd.mkdir()
    shutil.copy(REAL_REPORT / "_quarto.yml", rd / "_quarto.yml")
    (rd / "index.qmd").write_text(index)
    return rd


@pytest.fixture
def prepared(tmp_path):
    run = make_run(tmp_path)
    rd = make_report_dir(tmp_path)
    prepare_report(run, rd)
    return rd


# ---------------------------------------------------------------- collect / prepare

def test_collect_notebooks_keeps_stage_notebooks_in_stage_order(tmp_path):
    run = make_run(tmp_path)
    write_nb(run / "executed" / "10_late.ipynb", "Late", [])  # numeric order, not string order
    names = [p.name for p in collect_notebooks(run)]
    assert names == ["01_alpha.ipynb", "02_beta.ipynb", "10_late.ipynb"]


def test_collect_notebooks_names_the_fix_when_nothing_ran(tmp_path):
    with pytest.raises(ReportError, match="steiner_lib run"):
        collect_notebooks(tmp_path / "never-ran")


def test_prepare_then_check_passes(prepared):
    assert check_quarto_project(prepared) == []
    assert book_chapters(prepared) == ["index.qmd", "notebooks/01_alpha.ipynb", "notebooks/02_beta.ipynb"]
    assert sorted(p.name for p in (prepared / "notebooks").iterdir()) == ["01_alpha.ipynb", "02_beta.ipynb",
                                                                      "_chapters.yml"]
    assert not [p for p in prepared.iterdir() if p.name.startswith(".notebooks")]  # no temp dirs left


def test_prepare_replaces_the_previous_copy(tmp_path, prepared):
    run = tmp_path / "run"
    (run / "executed" / "02_beta.ipynb").unlink()
    # index.qmd refers to fig-c of 02_beta: with it gone the check must say so, naming the file and the label.
    prepare_report(run, prepared)
    assert not (prepared / "notebooks" / "02_beta.ipynb").exists()
    assert book_chapters(prepared) == ["index.qmd", "notebooks/01_alpha.ipynb"]
    problems = check_quarto_project(prepared)
    assert any(p.startswith("index.qmd") and "@fig-c" in p for p in problems), problems


def test_prepare_rejects_a_directory_without_quarto_project(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ReportError, match="_quarto.yml"):
        prepare_report(run, tmp_path / "elsewhere")


def test_cell_options_reads_hash_pipe_yaml_and_metadata():
    cell = nbformat.v4.new_code_cell('#| label: fig-x\n#| fig-cap: "Two: colons"\nx = 1\n#| not an option')
    assert cell_options(cell) == {"label": "fig-x", "fig-cap": "Two: colons"}
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata.update({"label": "tbl-y", "tbl-cap": "From metadata", "tags": ["parameters"]})
    assert cell_options(cell) == {"label": "tbl-y", "tbl-cap": "From metadata"}


# ---------------------------------------------------------------- the static check catches each fault

def test_check_reports_a_dangling_reference(tmp_path):
    run = make_run(tmp_path)
    nb_path = run / "executed" / "02_beta.ipynb"
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("As @fig-missing shows, [-@tbl-gone] too."))
    nbformat.write(nb, str(nb_path))
    rd = make_report_dir(tmp_path, INDEX_QMD + "\nAnd @Fig-nowhere.\n")
    prepare_report(run, rd)
    problems = check_quarto_project(rd)
    assert len(problems) == 3, problems
    assert any("notebooks/02_beta.ipynb" in p and "@fig-missing" in p for p in problems)
    assert any("notebooks/02_beta.ipynb" in p and "@tbl-gone" in p for p in problems)
    assert any(p.startswith("index.qmd") and "@fig-nowhere" in p for p in problems)


def test_check_reports_a_missing_caption(tmp_path):
    run = make_run(tmp_path)
    write_nb(run / "executed" / "03_gamma.ipynb", "Gamma", [figure_cell("fig-nocap", caption=None)])
    rd = make_report_dir(tmp_path)
    prepare_report(run, rd)
    problems = check_quarto_project(rd)
    assert len(problems) == 1
    assert "notebooks/03_gamma.ipynb" in problems[0] and "fig-nocap" in problems[0] and "fig-cap" in problems[0]


def test_check_reports_a_duplicate_label(tmp_path):
    run = make_run(tmp_path)
    write_nb(run / "executed" / "03_gamma.ipynb", "Gamma", [figure_cell("fig-a", "Same label again.")])
    rd = make_report_dir(tmp_path)
    prepare_report(run, rd)
    problems = check_quarto_project(rd)
    assert len(problems) == 1
    assert "fig-a" in problems[0] and "01_alpha.ipynb" in problems[0] and "03_gamma.ipynb" in problems[0]
    assert "unique" in problems[0]


def test_check_reports_a_broken_config(tmp_path):
    rd = tmp_path / "report"
    rd.mkdir()
    assert "_quarto.yml" in check_quarto_project(rd)[0]
    (rd / "_quarto.yml").write_text("project: [unclosed")
    assert "not valid YAML" in check_quarto_project(rd)[0]
    (rd / "_quarto.yml").write_text("project:\n  type: book\nmetadata-files: [notebooks/_chapters.yml]\n")
    problems = check_quarto_project(rd)  # Quarto would render the preface alone, without a word
    assert len(problems) == 1 and "notebooks/_chapters.yml" in problems[0] and "prepare_report" in problems[0]


def test_check_leaves_to_quarto_what_quarto_stops_on(prepared):
    """An embed of a missing cell, a missing chapter and `#|` lines that are not YAML make
    `quarto render` fail naming them (measured with Quarto 1.7.34), so the check stays quiet."""
    (prepared / "index.qmd").write_text(INDEX_QMD + "\n{{< embed notebooks/01_alpha.ipynb#fig-zzz >}}\n")
    config = yaml.safe_load((prepared / "_quarto.yml").read_text())
    config["book"]["chapters"].append("notebooks/09_missing.ipynb")
    (prepared / "_quarto.yml").write_text(yaml.safe_dump(config))
    nb = nbformat.read(str(prepared / "notebooks" / "01_alpha.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('#| label: fig-bad\n#| fig-cap: "unclosed\nplot()'))
    nbformat.write(nb, str(prepared / "notebooks" / "01_alpha.ipynb"))
    assert check_quarto_project(prepared) == []


# ---------------------------------------------------------------- the real report project

PLANNED_LABELS = {
    "01_synthesis": ["tbl-split-sizes", "tbl-teacher-errors", "fig-teacher-errors"],
    "02_dag": ["tbl-clustering", "fig-dag-examples", "fig-node-features", "fig-path-lengths",
               "tbl-dataset-vs-paper", "fig-dag-interactive"],
    "06_evaluation": ["tbl-lp-grid", "tbl-stage-table", "tbl-control-table", "fig-stage-accuracy"],
    "08_summary": ["tbl-claims", "tbl-notebook-times", "tbl-versions", "tbl-hardware"],
}


def test_real_report_project_is_a_book_that_renders_without_executing():
    config = yaml.safe_load((REAL_REPORT / "_quarto.yml").read_text())
    assert config["project"]["type"] == "book"
    assert config["project"]["output-dir"] == "_build/quarto"
    assert config["book"]["title"] == "Steiner, re-executed: an executable reproducibility report"
    assert config["book"]["chapters"][0] == "index.qmd"
    assert book.CHAPTERS_FILE in config["metadata-files"]
    assert config["execute"]["enabled"] is False
    assert config["format"]["html"]["code-fold"] is True
    assert "typst" not in config["format"]  # Quarto 1.7 books skip it (with a warning); the PDF has its own file
    assert "typst" in yaml.safe_load((REAL_REPORT / book.PDF_OPTIONS_FILE).read_text())["format"]


def test_real_index_resolves_against_the_planned_labels(tmp_path):
    """The real index.qmd's embeds and references, against notebooks carrying the planned labels."""
    executed = tmp_path / "run" / "executed"
    for stage, labels in PLANNED_LABELS.items():
        write_nb(executed / f"{stage}.ipynb", stage, [
            figure_cell(lab, "Planned.") if lab.startswith("fig-") else table_cell(lab, "Planned.") for lab in labels])
    rd = tmp_path / "report"
    shutil.copytree(REAL_REPORT, rd, ignore=shutil.ignore_patterns("notebooks", "_build", ".quarto"))
    prepare_report(executed.parent, rd)
    assert check_quarto_project(rd) == []
    index = (REAL_REPORT / "index.qmd").read_text()
    assert len(re.findall(r"\{\{< embed notebooks/\S+#fig-", index)) == 3
    assert "{{< embed notebooks/08_summary.ipynb#tbl-claims >}}" in index  # the results table, on the first page
    chapters = book_chapters(rd)
    assert chapters[0] == "index.qmd" and chapters[-2:] == ["limitations.qmd", "notebooks/08_summary.ipynb"]
    shutil.rmtree(rd / "notebooks")  # not prepared: the check says what to run
    problems = check_quarto_project(rd)
    assert any("notebooks/_chapters.yml" in p and "prepare_report" in p for p in problems)
    assert any("index.qmd" in p and "fig-dag-examples" in p for p in problems)


# ---------------------------------------------------------------- the nbconvert fallback

def test_render_without_quarto_writes_plain_pages(prepared, monkeypatch, caplog):
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    out = prepared / "_build"
    (out / "stale").mkdir(parents=True)  # replaced as a whole
    with caplog.at_level(logging.INFO, logger="steiner_lib.report.book"):
        assert render_report(prepared, out) == out
    assert [r.getMessage() for r in caplog.records].count(NO_QUARTO_MESSAGE) == 1
    assert "pip install quarto-cli" in NO_QUARTO_MESSAGE
    assert not (out / "stale").exists()
    assert sorted(p.name for p in out.iterdir()) == ["01_alpha.html", "02_beta.html", "index.html"]

    index = (out / "index.html").read_text()
    links = [index.index(f'href="{page}">{title}</a>') for page, title in
             [("01_alpha.html", "Alpha chapter"), ("02_beta.html", "Beta chapter")]]
    assert links == sorted(links)  # every chapter, in order, with its title
    assert "pip install quarto-cli" in index  # how to get the real book
    assert "Preface" in index and "{{<" not in index and "{.unnumbered}" not in index
    assert 'href="02_beta.html">fig-c</a>' in index and 'href="01_alpha.html">tbl-b</a>' in index
    assert "{{{&lt; not a shortcode &gt;}}}" in index and "@fig-nothing-in-code" in index  # code stays code

    for rel in ["notebooks/01_alpha.ipynb", "notebooks/02_beta.ipynb"]:
        nb = nbformat.read(str(prepared / rel), as_version=4)
        pngs = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        tables = sum("<table" in "".join(o.get("data", {}).get("text/html", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        page = (out / f"{Path(rel).stem}.html").read_text()
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) == pngs > 0
        assert page.count("<table") == tables
    beta = (out / "02_beta.html").read_text()
    assert 'href="01_alpha.html">fig-a</a>' in beta and "@fig-in-code" in beta
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_render_without_quarto_needs_prepared_notebooks(tmp_path, monkeypatch):
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    rd = make_report_dir(tmp_path)
    with pytest.raises(ReportError, match="prepare_report"):
        render_report(rd, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def fake_quarto(tmp_path: Path, typst_fails: bool = False) -> tuple[Path, Path]:
    """A stand-in `quarto` that records its arguments, writes the HTML book into --output-dir and a
    PDF beside the document it is given with --to typst (or fails there)."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "quarto"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
out=""; prev=""
for a in "$@"; do [ "$prev" = "--output-dir" ] && out="$a"; prev="$a"; done
case "$*" in *"--to typst"*)
  {"echo 'ERROR: typst broke' >&2; exit 1" if typst_fails else 'echo "%PDF-1.7" > "${2%.ipynb}.pdf"; exit 0'};;
esac
echo "<html>book</html>" > "$out/index.html"
echo "WARN: Unable to resolve crossref @fig-zz" >&2
""")
    fake.chmod(0o755)
    return fake, calls


def test_render_with_quarto_renders_the_book_then_the_pdf(prepared, tmp_path, monkeypatch, caplog):
    fake, calls = fake_quarto(tmp_path)
    monkeypatch.setattr(book.shutil, "which", lambda name: str(fake) if name == "quarto" else None)
    with caplog.at_level(logging.INFO, logger="steiner_lib.report.book"):
        out = render_report(prepared, prepared / "_build")
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("render ") and "--to html" in lines[0]
    source = Path(lines[1].split()[1])
    assert lines[1].endswith("--to typst") and source.suffix == ".ipynb"
    assert book.PDF_NAME.startswith(source.stem) and prepared not in source.parents  # a single document
    assert (out / "index.html").read_text().strip() == "<html>book</html>"
    assert (out / book.PDF_NAME).read_text().startswith("%PDF")
    assert any("Unable to resolve crossref" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)  # Quarto's warnings reach the build log
    assert NO_QUARTO_MESSAGE not in caplog.text


def test_a_failed_pdf_is_said_in_the_log_and_the_html_book_stays(prepared, tmp_path, monkeypatch, caplog):
    fake, _ = fake_quarto(tmp_path, typst_fails=True)
    monkeypatch.setattr(book.shutil, "which", lambda name: str(fake) if name == "quarto" else None)
    with caplog.at_level(logging.INFO, logger="steiner_lib.report.book"):
        out = render_report(prepared, prepared / "_build")
    assert (out / "index.html").is_file() and not (out / book.PDF_NAME).exists()
    assert any("no PDF" in r.getMessage() and "typst broke" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_command_line_prepares_checks_and_reports_problems(tmp_path, capsys):
    run = make_run(tmp_path)
    rd = make_report_dir(tmp_path)
    assert book.main([str(run), "--report-dir", str(rd), "--check-only"]) == 0
    (rd / "index.qmd").write_text(INDEX_QMD + "\nSee @tbl-nope.\n")
    assert book.main([str(run), "--report-dir", str(rd), "--check-only"]) == 1
    assert "tbl-nope" in capsys.readouterr().err
    assert book.main([str(tmp_path / "no-run"), "--report-dir", str(rd)]) == 2


def test_real_notebook_sources_pass_the_check_with_the_real_index(tmp_path):
    """Unexecuted, but the labels, captions and references are in the sources: the real notebooks
    (jupytext percent scripts) against the real index.qmd, so a renamed label fails here first."""
    import jupytext

    sources = sorted((REAL_REPORT.parent / "notebooks").glob("[0-9][0-9]_*.py"))
    if not sources:
        pytest.skip("no notebook sources yet")
    executed = tmp_path / "run" / "executed"
    executed.mkdir(parents=True)
    for src in sources:
        nbformat.write(jupytext.read(src), str(executed / f"{src.stem}.ipynb"))
    rd = tmp_path / "report"
    shutil.copytree(REAL_REPORT, rd, ignore=shutil.ignore_patterns("notebooks", "_build", ".quarto"))
    prepare_report(executed.parent, rd)
    assert check_quarto_project(rd) == []


# ---------------------------------------------------------------- tidy copies, back chapters, appendix

def test_tidy_stream_keeps_what_a_reader_needs():
    root = "/home/me/steiner"
    text = ("\rsynthesis:   0%|          | 0/600 [00:00<?, ?q/s]\rsynthesis: 100%|##########| 600/600 [00:01<00:00]\n"
            "3000 trajectories\n"
            "/x/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found\n  from .autonotebook import tqdm\n"
            + "accelerate: the used dataset had no length\n" * 3
            + f"wrote {root}/runs/cpu/01_synthesis in 3.7 s\n\x1b[A\rDone 40%\rDone 100%\n")
    out = book.tidy_stream(text, root=root)
    assert out.splitlines() == ["3000 trajectories", "accelerate: the used dataset had no length  [repeated 3 times]",
                                "wrote runs/cpu/01_synthesis in 3.7 s", "Done 100%"]
    assert book.tidy_stream("\r 10%|#    | 1/10\r100%|#####| 10/10\n") == ""


def test_by_default_the_book_is_the_repositorys_report_and_paths_are_relative_to_the_repository():
    # `make report` passes no directory: the default must be <repo>/report, not the subpackage
    # steiner_lib/report, and printed paths are made relative to the repository.
    assert book._default_report_dir() == ROOT / "report" and (ROOT / "report" / "_quarto.yml").is_file()
    assert book.tidy_stream(f"wrote {ROOT}/runs/cpu/01_synthesis in 3.7 s\n") == "wrote runs/cpu/01_synthesis in 3.7 s\n"


def test_prepare_tidies_the_book_copies_and_leaves_the_run_alone(tmp_path):
    run = make_run(tmp_path)
    src = run / "executed" / "01_alpha.ipynb"
    nb = nbformat.read(str(src), as_version=4)
    cell = nb.cells[2]  # fig-a
    cell.outputs = ([nbformat.v4.new_output("stream", name="stderr", text=f"\rbar {i}0%|#  | {i}/9") for i in range(9)]
                    + [nbformat.v4.new_output("stream", name="stderr", text="steiner_lib.stages: stage 01: writing\n"),
                       nbformat.v4.new_output("stream", name="stdout", text="{'loss': '0.5', 'grad_norm': '1'}\n"),
                       nbformat.v4.new_output("stream", name="stdout", text="kept line\n"),
                       nbformat.v4.new_output("stream", name="stdout", text="split: kept too\n"),
                       nbformat.v4.new_output("display_data", data={"text/html": "<div><progress value='1'></progress>"
                                                                    "<table><tr><td>No log</td></tr></table></div>"})]
                    + list(cell.outputs))
    nbformat.write(nb, str(src))
    before = src.read_text()
    rd = make_report_dir(tmp_path)
    prepare_report(run, rd)
    assert src.read_text() == before  # the executed notebook is never changed
    copy_ = nbformat.read(str(rd / "notebooks" / "01_alpha.ipynb"), as_version=4).cells[2]
    kinds = [(o.output_type, o.get("name")) for o in copy_.outputs]
    assert kinds == [("stream", "stdout"), ("display_data", None)]  # bars, logs and the progress widget gone
    assert copy_.outputs[0].text == "kept line\nsplit: kept too\n" and "image/png" in copy_.outputs[1].data


def test_summary_notebook_is_an_appendix_after_the_back_chapters(tmp_path):
    run = make_run(tmp_path)
    write_nb(run / "executed" / "08_summary.ipynb", "Claims and reproducibility", [
        nbformat.v4.new_markdown_cell("Back to @fig-a."), table_cell("tbl-claims", "The claims.")])
    rd = make_report_dir(tmp_path, INDEX_QMD + "\n{{< embed notebooks/08_summary.ipynb#tbl-claims >}}\n")
    (rd / "limitations.qmd").write_text("# Limitations\n\nSee @tbl-claims and @fig-c.\n")
    prepare_report(run, rd)
    assert book_chapters(rd) == ["index.qmd", "notebooks/01_alpha.ipynb", "notebooks/02_beta.ipynb",
                                 "limitations.qmd", "notebooks/08_summary.ipynb"]
    chapters = yaml.safe_load((rd / "notebooks" / "_chapters.yml").read_text())["book"]
    assert chapters["appendices"] == ["notebooks/08_summary.ipynb"]
    assert check_quarto_project(rd) == []


def test_pdf_notebook_is_the_whole_book_in_order_with_each_label_once(tmp_path):
    run = make_run(tmp_path)
    write_nb(run / "executed" / "08_summary.ipynb", "Claims", [table_cell("tbl-claims", "The claims.")])
    rd = make_report_dir(tmp_path, INDEX_QMD.replace("Some prose", "## What it found\n\nSome prose")
                         + "\n{{< embed notebooks/08_summary.ipynb#tbl-claims >}}\n")
    (rd / "limitations.qmd").write_text("# Limitations\n\nSee @tbl-claims.\n")
    (rd / book.PDF_OPTIONS_FILE).write_text("format:\n  typst:\n    papersize: a4\n")
    prepare_report(run, rd)
    nb = book.pdf_notebook(rd)
    front = yaml.safe_load(nb.cells[0].source.strip("-\n"))
    assert front["title"] == "Steiner, re-executed: an executable reproducibility report"
    assert front["format"] == {"typst": {"papersize": "a4"}} and front["execute"] == {"enabled": False}
    text = "\n".join(c.source for c in nb.cells)
    order = [text.index(t) for t in ("# Preface", "# Alpha chapter", "# Beta chapter", "# Limitations", "# Claims")]
    assert order == sorted(order)
    assert text.count("{{< pagebreak >}}") == 4 and "{{< embed" not in text
    assert "## What it found {.unnumbered}" in text  # the unnumbered preface's sections stay unnumbered
    labels = [cell_options(c).get("label") for c in nb.cells if c.cell_type == "code"]
    assert sorted(filter(None, labels)) == ["fig-a", "fig-c", "fig-d", "tbl-b", "tbl-claims"]  # each once
    # The embeds of the preface: the outputs again, unlabelled, with a line naming the original.
    copies = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source == "#| echo: false"]
    assert len(copies) == 2
    fig, tbl = copies
    assert "image/png" in nb.cells[fig].outputs[0].data and "@fig-c" in nb.cells[fig + 1].source
    assert "@tbl-claims" in nb.cells[tbl - 1].source and "The claims." in nb.cells[tbl - 1].source
    assert len({c["id"] for c in nb.cells}) == len(nb.cells)
    assert book._read_notebook(rd / "notebooks" / "01_alpha.ipynb").cells[0].source.startswith("# Alpha")


def test_embedded_floats_get_the_numbers_of_their_chapter_pages(tmp_path):
    (tmp_path / "notebooks").mkdir()
    caption = '<figcaption class="quarto-float-caption" id="{}-caption-0ceaefa1-69ba">{}&nbsp;{}: The claims.'
    (tmp_path / "notebooks" / "08_summary.html").write_text(caption.format("tbl-claims", "Table", "A.1"))
    (tmp_path / "index.html").write_text(caption.format("tbl-claims", "Table", "1")
                                         + caption.format("fig-gone", "Figure", "2"))
    book._number_embeds_as_in_the_book(tmp_path)
    index = (tmp_path / "index.html").read_text()
    assert "Table&nbsp;A.1: The claims." in index and "Figure&nbsp;2:" in index  # unknown: left as Quarto wrote it


def test_html_bundles_show_their_html_in_the_plain_pages(tmp_path, monkeypatch):
    """An output carrying text/html and image/png (an interactive figure with a static fallback)
    shows its HTML in the nbconvert pages; Quarto picks the PNG for typst by itself."""
    run = make_run(tmp_path)
    cell = figure_cell("fig-view", "An interactive view.")
    cell.outputs[0]["data"]["text/html"] = '<div class="steiner-dagview"><svg></svg></div>'
    write_nb(run / "executed" / "03_gamma.ipynb", "Gamma", [cell])
    rd = make_report_dir(tmp_path)
    prepare_report(run, rd)
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    page = (render_report(rd, tmp_path / "html") / "03_gamma.html").read_text()
    assert 'class="steiner-dagview"' in page


def test_book_copies_spell_out_table_headers():
    import pandas as pd

    frame = pd.DataFrame({"accuracy": [50.0], "acc_ci_low": [40.0], "inverse_purity": [1.0], "min_steps": [0],
                          "n <b>": [1]}, index=pd.Index(["RL"], name="stage_name"))
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("display(frame)")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/html": frame._repr_html_()}, execution_count=1)]
    nb.cells = [cell]
    shown = book.tidy_notebook(nb).cells[0].outputs[0].data["text/html"]
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", shown)
    assert {"accuracy", "95% CI low", "inverse purity", "min_steps", "n &lt;b&gt;", "stage name"} <= set(headers)
    assert "acc_ci_low" not in shown and "RL" in shown
    assert "acc_ci_low" in cell.outputs[0].data["text/html"]  # the input notebook is not changed


def test_book_copy_shows_the_injected_parameters_not_the_defaults():
    nb = nbformat.v4.new_notebook()
    defaults = nbformat.v4.new_code_cell("run_name = 'cpu'")
    defaults.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("# Parameters\nrun_name = 'ex'")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [defaults, injected, nbformat.v4.new_code_cell("x = 1")]
    assert [c.source for c in book.tidy_notebook(nb).cells] == [injected.source, "x = 1"]
    nb.cells = [defaults, nbformat.v4.new_code_cell("x = 1")]  # not run by Papermill: keep the defaults
    assert len(book.tidy_notebook(nb).cells) == 2

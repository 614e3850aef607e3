"""The real report, built from the session's smoke run (tests/conftest.py: smoke_run).

With Quarto: the book rendered by real Quarto (HTML), checked page by page against the executed
notebooks, and the PDF, checked through poppler (pdftoppm, pdftotext, pdfimages). Without Quarto on
PATH these are skipped with the reason (`.ci/run` installs Quarto; STEINER_REQUIRE_QUARTO=1, which
it sets, turns the skip into a failure). The static check and the plain nbconvert fallback are
checked against the same run either way.
"""

from __future__ import annotations

import html as html_lib
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from steiner_lib import params as P
from steiner_lib.report import book
from steiner_lib.runner import notebook_sources

pytestmark = pytest.mark.notebooks
ROOT = P.project_root()
INSTALLER = ROOT.parent / "shared" / "quarto" / "install.sh"


def require_quarto() -> str:
    quarto = shutil.which("quarto")
    if quarto:
        return quarto
    reason = ("no quarto on PATH: `pip install quarto-cli`, or " +
              (f"`{INSTALLER} .quarto` (make test puts .quarto/bin on PATH)" if INSTALLER.is_file()
               else "the installer ../shared/quarto/install.sh, which is not here either"))
    if os.environ.get("STEINER_REQUIRE_QUARTO") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def prepared_report(smoke_run, where: Path) -> Path:
    _, path, _ = smoke_run
    report_dir = where / "report"
    shutil.copytree(ROOT / "report", report_dir, ignore=shutil.ignore_patterns("notebooks", "_build", ".quarto"))
    book.prepare_report(P.run_dir(P.load_preset(path)), report_dir)
    return report_dir


@pytest.fixture(scope="module")
def quarto_book(smoke_run, tmp_path_factory):
    """(report dir, rendered book) of the smoke run, rendered once by real Quarto."""
    require_quarto()
    report_dir = prepared_report(smoke_run, tmp_path_factory.mktemp("quarto"))
    assert book.check_quarto_project(report_dir) == []
    return report_dir, book.render_report(report_dir, report_dir / "_build")


def page_of(chapter: str) -> str:
    return str(Path(chapter).with_suffix(".html"))  # notebooks/02_dag.ipynb -> notebooks/02_dag.html


def words(text: str, html: bool = True) -> str:
    """Letters and digits only, lower case: a caption compares across Markdown, HTML and typography.

    Plain text (the PDF's) keeps what lies between a "<" and a ">": "half-width <= 6 ... > 0" is prose there.
    """
    if html:
        text = html_lib.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def float_html(page: str, label: str) -> str:
    """The HTML of the float with id=label: from its opening tag to the end of its <figure>."""
    start = page.index(f'id="{label}"')
    return page[start:page.index("</figure>", start)]


def labelled_cells(nb) -> list[tuple[str, dict, object]]:
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            options = book.cell_options(cell)
            if str(options.get("label", "")).startswith(("fig-", "tbl-")):
                out.append((options["label"], options, cell))
    return out


def test_quarto_renders_every_chapter_figure_and_caption(quarto_book):
    report_dir, out = quarto_book
    chapters = book.book_chapters(report_dir)
    assert [c for c in chapters if c.startswith("notebooks/")] == [f"notebooks/{s}.ipynb" for s in notebook_sources()]
    for chapter in chapters:
        assert (out / page_of(chapter)).is_file(), chapter
    for stage in notebook_sources():
        nb = nbformat.read(report_dir / "notebooks" / f"{stage}.ipynb", as_version=4)
        page = (out / "notebooks" / f"{stage}.html").read_text(encoding="utf-8")
        # Every PNG output is an image on the page (a bundle with HTML, the DAG view, shows its HTML).
        pngs = sum("image/png" in o.get("data", {}) and "text/html" not in o.get("data", {})
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert len(re.findall(r"<img\b[^>]*\bsrc=\"[^\"]+\.png\"", page)) >= pngs, stage
        for label, options, cell in labelled_cells(nb):
            shown = float_html(page, label)
            kind = label.split("-", 1)[0]
            assert words(options[book.CAPTION_KEY[kind]]) in words(shown), (stage, label)
            if kind == "fig":
                html_bundle = any("text/html" in o.get("data", {}) for o in cell.outputs)
                assert ("steiner-dagview" if html_bundle else "<img") in shown, (stage, label)
            else:
                assert "<table" in shown, (stage, label)
    assert 'class="steiner-dagview"' in (out / "notebooks" / "02_dag.html").read_text(encoding="utf-8")


def test_quarto_resolves_every_cross_reference(quarto_book):
    _, out = quarto_book
    pages = sorted(out.rglob("*.html"))
    assert len(pages) >= len(notebook_sources()) + 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "quarto-unresolved-ref" not in text and not re.search(r"\?@(fig|tbl)-", text), page
    index = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r'href="notebooks/08_summary\.html#tbl-claims" class="quarto-xref">Table&nbsp;<span>A\.1</span>',
                     index)


def test_the_opening_page_embeds_the_appendix_tables_with_their_book_numbers(quarto_book):
    report_dir, out = quarto_book
    index = (out / "index.html").read_text(encoding="utf-8")
    embeds = [t.partition("#") for t in book.EMBED.findall((report_dir / "index.qmd").read_text())]
    from_summary = [label for file, _, label in embeds if file == "notebooks/08_summary.ipynb"]
    assert from_summary, "index.qmd embeds no table of 08_summary"
    for file, _, label in embeds:
        chapter_page = (out / page_of(file)).read_text(encoding="utf-8")
        number = re.escape(re.search(rf'id="{label}-caption-[^"]+">\s*(\w+&nbsp;[0-9A-Z.]+):', chapter_page).group(1))
        shown = float_html(index, label)
        assert re.search(rf'id="{label}-caption-[^"]+">\s*{number}:', shown), label  # "Table A.1", as referred to
        assert ("<table" if label.startswith("tbl-") else "<img") in shown, label


def test_the_book_reads_cleanly(quarto_book):
    """No raw column names, log records, progress bars or Trainer log dicts on any page."""
    _, out = quarto_book
    for page in sorted((out / "notebooks").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        headers = [html_lib.unescape(h).strip() for h in re.findall(r"<th\b[^>]*>([^<]*)</th>", text)]
        raw = [h for h in headers if book.SNAKE_CASE.fullmatch(h) and h not in book.KEPT_NAMES]
        assert not raw, (page.name, raw)
        outputs = " ".join(re.findall(r"<pre><code>(.*?)</code></pre>", text, re.S))
        assert not re.search(r"steiner_lib\.\w+: |\d+%\|.*\|\s*\d+/\d+|\{'loss': ", outputs), page.name


def test_the_pdf_holds_the_whole_book(quarto_book, tmp_path):
    report_dir, out = quarto_book
    pdf = out / book.PDF_NAME
    assert pdf.is_file(), "no PDF (see the build log for why)"
    if not (shutil.which("pdftoppm") and shutil.which("pdftotext") and shutil.which("pdfimages")):
        pytest.skip("poppler-utils (pdftoppm, pdftotext, pdfimages) not installed: the PDF is not inspected")
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "3", str(pdf), str(tmp_path / "page")], check=True)
    from PIL import Image

    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 3
    for png in pages:  # a page with text on it, not blank
        lo, hi = Image.open(png).convert("L").getextrema()
        assert hi - lo > 100, png.name
    text = words(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout,
                 html=False)
    config = book.load_quarto_config(report_dir)
    assert words(config["book"]["title"]) in text
    figures = 0
    for stage in notebook_sources():
        nb = nbformat.read(report_dir / "notebooks" / f"{stage}.ipynb", as_version=4)
        assert words(book.notebook_title(nb, stage)) in text, stage
        for label, options, _ in labelled_cells(nb):
            caption = words(options[book.CAPTION_KEY[label.split("-", 1)[0]]])
            assert caption[:60] in text, (stage, label)
        figures += sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                       for o in c.get("outputs", []))
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert len(images.splitlines()) - 2 >= figures > 0  # two header lines, then one line per image


def test_the_static_check_and_the_plain_fallback_on_the_smoke_run(smoke_run, tmp_path, monkeypatch):
    report_dir = prepared_report(smoke_run, tmp_path)
    assert book.check_quarto_project(report_dir) == []
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    out = book.render_report(report_dir, tmp_path / "html")
    index = (out / "index.html").read_text()
    for stage in notebook_sources():
        nb = nbformat.read(report_dir / "notebooks" / f"{stage}.ipynb", as_version=4)
        pngs = sum("image/png" in o.get("data", {}) and "text/html" not in o.get("data", {})
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        page = (out / f"{stage}.html").read_text()
        assert page.count("data:image/png") >= pngs and "<table" in page, stage
        assert f'href="{stage}.html"' in index
    assert 'class="steiner-dagview"' in (out / "02_dag.html").read_text()
    assert (out / "limitations.html").is_file() and "pip install quarto-cli" in index

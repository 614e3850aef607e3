"""Headless Chromium screenshots of a rendered report: every page's top and the interactive DAG view.

    python tools/screenshot.py report/_build OUT_DIR

Works on the Quarto book (index.html, notebooks/NN_name.html) and on the plain nbconvert pages
(NN_name.html). Writes OUT_DIR/index.png, one NN_name.png per chapter (01-07 and the appendix 08,
the top 2,400 pixels), limitations.png, and dag_view.png. Needs a `chromium` (or `chromium-browser`,
`google-chrome`) on PATH (Debian: apt-get install chromium); not part of the tests or CI.
The DAG view is shot with one node clicked and the path's first step opened, so the picture shows
what a reader gets on demand. Headless Chromium paints nothing when it scrolls down a long page, so
the chapter is shot as one tall page and the view cropped out of it (with Pillow).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]

# Clicks the last node, opens the first path step, and writes the view's position into the title.
PROBE = """<script>
window.addEventListener('load', function() {
  var v = document.querySelector('.steiner-dagview');
  if (!v) { document.title = 'NOVIEW'; return; }
  var nodes = v.querySelectorAll('g.node'); nodes[nodes.length - 1].dispatchEvent(new MouseEvent('click'));
  var d = v.querySelector('details'); if (d) d.open = true;
  var r = v.getBoundingClientRect();
  document.title = 'TOP=' + Math.round(r.top + window.scrollY) + ' H=' + Math.round(r.height) +
                   ' DOC=' + document.documentElement.scrollHeight;
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")


def run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


def pages(build: Path) -> list[Path]:
    """index.html, then the chapter pages in book order (Quarto puts the notebooks under notebooks/)."""
    chapters = sorted(build.glob("notebooks/[0-9][0-9]_*.html")) or sorted(build.glob("[0-9][0-9]_*.html"))
    return [build / "index.html", *chapters, *build.glob("limitations.html")]


def page_top(page: Path, out: Path, profile: Path, height: int = 2400) -> Path:
    png = out / f"{page.stem}.png"
    run([f"--screenshot={png}", f"--window-size=1280,{height}", "--hide-scrollbars", page.resolve().as_uri()], profile)
    return png


def dag_view(build: Path, out: Path, profile: Path) -> Path:
    from PIL import Image

    page = next(p for p in pages(build) if p.stem == "02_dag")
    probe = page.with_name(f".{page.stem}_probe.html")  # beside the page: its relative links still work
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = run(["--dump-dom", "--window-size=1280,1600", probe.resolve().as_uri()], profile).stdout
        m = re.search(r"<title>TOP=(\d+) H=(\d+) DOC=(\d+)</title>", dom)
        if not m:
            raise SystemExit(f"{page.name}: no interactive DAG view found (is notebook 02's fig-dag-interactive cell there?)")
        top, height, doc = map(int, m.groups())
        tall = out / ".tall.png"
        run([f"--screenshot={tall}", f"--window-size=1280,{doc + 100}", probe.resolve().as_uri()], profile)
        png = out / "dag_view.png"
        Image.open(tall).crop((0, max(0, top - 120), 1280, top + height + 120)).save(png)
        tall.unlink()
        return png
    finally:
        probe.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    build, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="steiner-chromium-") as profile:
        for page in pages(build):
            print(page_top(page, out, Path(profile)))
        print(dag_view(build, out, Path(profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

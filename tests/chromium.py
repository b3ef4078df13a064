"""Headless Chromium for the page tests and `docs/screenshots.py`: a screenshot with the
console lines Chromium logged, and the layout of a page at a window width.

Chromium's `--enable-logging=stderr` prints every console message and uncaught error as
an `INFO:CONSOLE` line; our pages have no script, so any such line is a failure. The
layout is read by a probe script added to a copy of the page (the page itself stays
script-free): it writes the document's scroll and client widths, and every element that
sticks out to the right of the window outside a scroll box, into the DOM that
`--dump-dom` prints.
"""
from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]? .*|Uncaught .*")
PROBE = """<script>window.addEventListener('load', function () {
  var d = document.documentElement, w = d.clientWidth, out = [];
  document.querySelectorAll('body *').forEach(function (e) {
    if (e.closest('.scroll') && !e.classList.contains('scroll')) return;
    var r = e.getBoundingClientRect();
    if (r.right > w + 1) out.push(e.tagName.toLowerCase() + '.' + e.className + ' right=' + Math.round(r.right));
  });
  var p = document.createElement('pre'); p.id = 'layout-probe';
  p.textContent = JSON.stringify({scroll_width: d.scrollWidth, client_width: w, scroll_height: d.scrollHeight,
                                 sticking_out: out.slice(0, 20)});
  document.body.appendChild(p);
});</script>"""
PROBE_OUT = re.compile(r"<pre id=\"layout-probe\">(.*?)</pre>", re.S)


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def screenshot(html_path: Path, png_path: Path, profile: Path, width: int = 1280, height: int = 2800) -> list[str]:
    """Screenshot `html_path` in a `width` x `height` window; returns the console lines logged."""
    done = _run([f"--screenshot={png_path}", f"--window-size={width},{height}", html_path.resolve().as_uri()], profile)
    if not (png_path.exists() and png_path.stat().st_size > 0):
        raise RuntimeError(f"chromium made no screenshot: {done.stderr[-2000:]}")
    return [m.group(0) for line in done.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]


def layout(page_html: str, width: int, folder: Path) -> dict:
    """The probe's reading of `page_html` in a window `width` px wide: scroll_width,
    client_width, scroll_height, sticking_out (elements reaching past the window, outside
    scroll boxes)."""
    page = folder / f"probe_{width}.html"
    page.write_text(page_html.replace("</body>", PROBE + "</body>"))
    done = _run(["--dump-dom", f"--window-size={width},2000", page.resolve().as_uri()], folder / "profile")
    found = PROBE_OUT.search(done.stdout)
    if not found:
        raise RuntimeError(f"the layout probe did not run: {done.stderr[-2000:]}")
    return json.loads(html.unescape(found.group(1)))

"""Write one benchmark's figures into its own section of benchmarks/RESULTS.md.

Each benchmark owns a section between markers, so benchmarks can be re-run one at a
time without clobbering the others' figures.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Benchmark results\n\nFigures written by the scripts in `benchmarks/`; each section "
          "names the command that produced it. Speed is given as a ratio to a reference run in the "
          "same process where one exists; absolute times are context only (shared 2-core machine).\n")


def machine() -> str:
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {dt.date.today().isoformat()}")


def record(section: str, body: str, command: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section `section` with `body`, stamped with the command."""
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = (f"{start}\n## {section}\n\nCommand: `{command}`  \nMachine: {machine()}\n\n"
             f"{body.strip()}\n{end}")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

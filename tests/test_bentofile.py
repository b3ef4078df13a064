"""The Bento carries the whole service: every module of the three packages and the docs
page's own files are selected by `bentofile.yaml` (BentoML matches `include`/`exclude`
gitignore-style, with pathspec), so a Bento served away from this source tree imports."""
from __future__ import annotations

from pathlib import Path

import pathspec
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_bento_includes_every_module_and_the_docs_page():
    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    include = pathspec.PathSpec.from_lines("gitwildmatch", config["include"])
    exclude = pathspec.PathSpec.from_lines("gitwildmatch", config.get("exclude", []))
    needed = [p.relative_to(ROOT).as_posix() for package in ("features", "training", "serving")
              for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
    needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / "serving/docs/static").iterdir()]
    missing = [f for f in needed if not include.match_file(f) or exclude.match_file(f)]
    assert len(needed) > 100 and not missing, missing

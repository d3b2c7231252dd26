"""The repository carries its own design: every document it names is in it, none outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A path to a document as the code and the docs write them (docs/..., config/...).
#: Where the design documents lay before the repository carried them (spelt so as not to match).
OUTSIDE = ("../" + "shared", "shared/" + "DESIGN")
NAMED = re.compile(r"(?<![\w/.-])((?:docs|config)/[\w./-]+\.(?:md|yaml|toml))")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / f for f in out if f.endswith((".py", ".md", ".toml", ".yaml", ".sh"))
            or f == "Makefile"]


def test_nothing_points_outside_the_repository() -> None:
    outside = [f"{f.relative_to(ROOT)}:{n}" for f in _tracked()
               for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
               if any(o in line for o in OUTSIDE)]
    assert not outside, f"links to documents a clone does not have: {outside}"


def test_every_named_document_exists() -> None:
    missing = sorted({f"{f.relative_to(ROOT)}: {m}" for f in _tracked()
                      for m in NAMED.findall(f.read_text(encoding="utf-8"))
                      if not (ROOT / m).exists()})
    assert not missing, f"documents named but not in the repository: {missing}"

"""docs/architecture.md stays the map: every primitive is in its table, every Kind hook in its
hook table, and every file it names exists."""
from __future__ import annotations

import re
from pathlib import Path

from opdsl.kinds.base import Kind
from opdsl.primitives import PRIMS

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_every_primitive_is_in_the_table():
    section = DOC.split("## The primitive set")[1].split("\n## ")[0]
    listed = set(re.findall(r"`(\w+)`", section))
    assert set(PRIMS) <= listed, f"not in docs/architecture.md: {sorted(set(PRIMS) - listed)}"


def test_every_kind_hook_is_in_the_table():
    section = DOC.split("## The registry of kinds and its hooks")[1].split("\n## ")[0]
    listed = set(re.findall(r"`(\w+)", section))
    hooks = {k for k, v in vars(Kind).items() if not k.startswith("_") and (callable(v) or k in (
        "rules", "examples", "constructors", "arity", "params", "options", "infer_from_types"))}
    assert hooks <= listed, f"hooks not in docs/architecture.md: {sorted(hooks - listed)}"


def test_the_files_it_names_exist():
    names = set(re.findall(r"`((?:opdsl|passes|backends|tests|examples|docs|grammar)/[\w/.]+\.(?:py|md|lark))`", DOC))
    missing = sorted(n for n in names if not (ROOT / n).exists())
    assert not missing, f"docs/architecture.md names missing files: {missing}"

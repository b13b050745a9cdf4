"""The guides in docs/ run as written, their links lead somewhere, and every rule a test
is named after is stated in docs/semantics.md.

Each example runs in its own interpreter, so on a fresh node (``otp.run`` makes one); an
example that defines tests runs under pytest, with the ``node`` fixture of otp.testing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = ["getting-started.md", "supervision-trees.md"]


def _blocks(guide: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / guide).read_text(encoding="utf-8"), re.S)


EXAMPLES = [(guide, i, code) for guide in GUIDES for i, code in enumerate(_blocks(guide))]


@pytest.mark.parametrize(
    ("guide", "index", "code"), EXAMPLES, ids=[f"{g}-block{i}" for g, i, _ in EXAMPLES]
)
def test_guide_example_runs(guide: str, index: int, code: str, tmp_path: Path) -> None:
    if "def test_" in code:  # a test example: it must pass under pytest
        path = tmp_path / f"test_example_{index}.py"
        path.write_text(code, encoding="utf-8")
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "otp.testing",
            str(path),
        ]
    else:
        command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, f"{guide}, block {index}:\n{done.stdout}\n{done.stderr}"


def test_guides_have_examples() -> None:
    for guide in GUIDES:
        assert len(_blocks(guide)) >= 3, guide


def test_docs_readme_points_only_at_files_that_exist() -> None:
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    paths = re.findall(r"`([\w./-]+\.(?:md|py|yaml))`", text)
    assert paths, "docs/README.md lists no guides"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_every_rule_a_test_is_named_after_is_in_semantics() -> None:
    stated = set(re.findall(r"^- \*\*([PGSADC]\d+)\.\*\*", (DOCS / "semantics.md").read_text(
        encoding="utf-8"), re.M))  # fmt: skip
    named = set()
    for test_file in (ROOT / "tests").glob("test_*.py"):
        for rule in re.findall(r"^def test_([pgsadc]\d+)_", test_file.read_text("utf-8"), re.M):
            named.add(rule.upper())
    assert named, "no test is named after a rule"
    assert sorted(named - stated) == []

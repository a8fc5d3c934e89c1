"""How the test suite itself is laid out."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
_FROM_CONFTEST = re.compile(r"^\s*(from\s+conftest\s+import|import\s+conftest\b)", re.MULTILINE)


def test_test_modules_import_shared_code_from_helpers_never_from_conftest() -> None:
    # tests/ and tests/unit/ each have a conftest.py: which one `import conftest` finds depends
    # on which directory pytest collected first, so such an import works alone and fails
    # when tests/unit runs in the same session.
    offenders = [
        str(path.relative_to(TESTS))
        for path in sorted(TESTS.rglob("*.py"))
        if _FROM_CONFTEST.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []

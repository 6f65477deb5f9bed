"""docs/tutorial.md: every code block runs as written, in order, in a fresh folder: the Python
blocks in one namespace (a block starting `# file: NAME` is saved as that file instead), the
shell lines through the same entry points in this process."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from customops.testing import check

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def test_the_tutorials_code_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    blocks = BLOCK.findall(TUTORIAL.read_text())
    assert sum(lang == "python" for lang, _ in blocks) >= 5
    namespace: dict = {"__name__": "tutorial"}
    ran = []
    for lang, code in blocks:
        if lang == "python":
            file = re.match(r"# file: (\S+)\n", code)
            if file:
                (tmp_path / file.group(1)).write_text(code)
            else:
                exec(compile(code, str(TUTORIAL), "exec"), namespace)
        elif lang == "bash":
            for line in code.strip().splitlines():
                args = shlex.split(line)
                if args[:3] == ["python", "-m", "customops.check"]:
                    assert check.main(args[3:]) == 0, line
                elif args[:3] == ["python", "-m", "pytest"]:
                    assert pytest.main([*args[3:], "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]) == 0, line
                else:
                    raise AssertionError(f"the tutorial runs a command this test does not know: {line}")
                ran.append(args[2])
    assert ran == ["customops.check", "pytest"]

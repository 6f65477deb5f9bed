"""README.md's "Check your own op": its code runs and prints exactly the output shown beside it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def test_the_check_your_own_op_section_prints_what_it_shows():
    text = README.read_text()
    section = text[text.index("## Check your own op") :]
    section = section[: section.index("\n## ")]
    blocks = BLOCK.findall(section)
    assert [lang for lang, _ in blocks] == ["python", "text", "python", "text"]
    namespace: dict = {"__name__": "readme"}
    for (_, code), (_, shown) in zip(blocks[0::2], blocks[1::2]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), namespace)
        printed, expected = out.getvalue().splitlines(), shown.splitlines()
        if torch.cuda.is_available():  # the README shows a CPU-only machine's parity_cuda line
            printed = [line for line in printed if not line.startswith("parity_cuda")]
            expected = [line for line in expected if not line.startswith("parity_cuda")]
        assert printed == expected

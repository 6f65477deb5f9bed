"""reporting.readme: the README's results section is exactly what the published results give."""

from __future__ import annotations

from lightning_modules.reporting import readme
from tests.helpers import ROOT


def test_the_readme_results_section_is_regenerated_from_reports_byte_for_byte():
    """Nothing in the section is typed by hand: written again from reports/, it comes out the same."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0]
    body = section.split("-->\n\n", 1)[1]  # after the "written by" comment
    assert body == readme.results_section(ROOT / "reports") + "\n"


def test_missing_results_leave_their_sections_out(tmp_path):
    assert readme.results_section(tmp_path) == ""

"""Licence and citation files agree with the package metadata and cite the DS4D paper."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

# tomllib is in the standard library from Python 3.11; the package itself supports 3.10.
tomllib = pytest.importorskip("tomllib")

PAPER = (
    "Not All Frame Features Are Equal: "
    "Video-to-4D Generation via Decoupling Dynamic-Static Features"
)


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_the_licence_file_is_the_licence_pyproject_declares() -> None:
    assert project()["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_citation_file_matches_the_package_and_cites_the_paper() -> None:
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == project()["version"]
    assert cff["license"] == "Apache-2.0"
    assert {"title", "authors", "message"} <= set(cff)  # the format's required keys
    paper = cff["references"][0]
    assert paper["title"] == PAPER and paper["type"] == "conference-paper"
    assert [a["family-names"] for a in paper["authors"]] == [
        "Yang", "Liu", "Zhu", "Liu", "Ma", "Nong", "Liang"
    ]  # fmt: skip
    assert paper["year"] == 2025 and (paper["start"], paper["end"]) == (7494, 7504)
    # The README's BibTeX cites the same paper.
    assert f"title     = {{{PAPER}}}" in (REPO / "README.md").read_text()

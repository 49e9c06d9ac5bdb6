"""The architecture document lives in the repository and names paths that exist; nothing in the
product points outside the repository at a design document or notes (``../shared/``).

Product files are the repository's files that git tracks or would track (not ignored), tests
excepted. Paths in ``docs/ARCHITECTURE.md`` are checked when they are written in backticks,
start with one of the repository's own top-level folders, and look concrete: a known extension
or a trailing "/", and no placeholder or wildcard (``<``, ``>``, ``*``, ``{``). Other backticked
names (``code/``, ``events/``, ``/opt/ml/...``, ``s3://...``) name things outside the source
tree and are left alone.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
FORBIDDEN = ("../shared/", "shared/DESIGN")
KNOWN_EXTENSIONS = (".py", ".md", ".txt", ".yaml", ".yml", ".json", ".js", ".html", ".css", ".sh", ".ini",
                    ".cfg", ".toml")
_SKIPPED_DIRS = {".git", ".venv", ".mlops", "__pycache__", ".pytest_cache", "build", "dist"}
_BACKTICKED = re.compile(r"`([^`\s]+)`")
_MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
_RELATIVE_PATH = re.compile(r"^[\w.-]+(/[\w.-]+)*/?$")


def _repository_files() -> list[Path]:
    """Files git tracks or would track (ignored ones left out); a plain walk where git is absent."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in listed.decode("utf-8").split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
            names += [(Path(root) / f).relative_to(REPO).as_posix() for f in files]
    return [REPO / n for n in sorted(set(names)) if (REPO / n).is_file()]  # a deleted tracked file is gone


def _product_files() -> list[Path]:
    return [p for p in _repository_files() if p.relative_to(REPO).parts[0] != "tests"]


def test_nothing_in_the_product_points_at_the_shared_folder():
    offending = []
    for path in _product_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files hold no pointers
        for number, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in FORBIDDEN):
                offending.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offending, "the product points outside the repository:\n" + "\n".join(offending)


def test_the_readme_points_at_the_architecture_document():
    assert ARCHITECTURE.is_file()
    assert "docs/ARCHITECTURE.md" in (REPO / "README.md").read_text(encoding="utf-8")


def _top_level_folders() -> set[str]:
    return {p.relative_to(REPO).parts[0] for p in _repository_files() if len(p.relative_to(REPO).parts) > 1}


def _concrete(token: str) -> bool:
    if any(c in token for c in "<>*{"):
        return False
    return bool(_RELATIVE_PATH.match(token)) and (token.endswith("/") or token.endswith(KNOWN_EXTENSIONS))


def documented_paths(text: str, folders: set[str]) -> list[str]:
    """The backticked repository paths of ``text`` that look concrete (see the module's docstring)."""
    found = []
    for token in _BACKTICKED.findall(text):
        if "/" in token and _concrete(token) and token.split("/", 1)[0] in folders:
            found.append(token)
    return sorted(set(found))


@pytest.mark.parametrize("token, checked", [
    ("pipeline/cli.py", True), ("serve/server/", True), ("lambda/template.yaml", True),
    ("pipeline/commands/", True),
    ("serve/*.py", False), ("<home>/jobs/<execution>/", False), ("data/{name}/", False),
    ("code/inference.py", False), ("events/", False), ("/opt/ml/processing/output", False),
    ("s3://bucket/key", False), ("setup.py", False), ("train", False), ("serve/text", False),
])
def test_which_tokens_are_checked(token, checked):
    folders = {"pipeline", "serve", "lambda", "train"}
    assert (documented_paths(f"see `{token}` here", folders) == [token]) is checked


def test_every_path_the_architecture_document_names_exists():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paths = documented_paths(text, _top_level_folders())
    assert len(paths) > 20, "the document should name the modules it describes"
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_relative_link_in_the_architecture_document_exists():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    links = [link.split("#", 1)[0] for link in _MARKDOWN_LINK.findall(text)
             if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]
    missing = [link for link in links if link and not (ARCHITECTURE.parent / link).exists()]
    assert not missing, f"docs/ARCHITECTURE.md links to paths that do not exist: {missing}"


def test_the_readme_lists_every_pipeline_parameter_and_no_other():
    """The README's list of the per-execution knobs is the definition's, name for name."""
    from pipeline.parameters import pipeline_parameters

    declared = {parameter.name for parameter in pipeline_parameters("s3://bucket/data/").all()}
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("The per-execution knobs are pipeline parameters")
    listed = set(re.findall(r"`([A-Z]\w+)`", text[start : text.index("(a test holds this list", start)]))
    assert listed == declared


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_lands():
    """README.md and docs/*.md link each other (the manual is split into pages): every relative
    link names a file that exists and, after a '#', a heading that file has."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in _MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.is_file():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links that land nowhere:\n" + "\n".join(broken)


def test_the_readme_maps_every_page_of_the_manual():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in (REPO / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not unlisted, f"docs pages the README's Documentation list does not name: {unlisted}"


def test_the_registry_fields_the_manual_lists_are_the_summarys():
    from mlops_rules.model_versions import ModelVersion
    from pipeline.registries import version_summary

    text = (REPO / "docs" / "running-locally.md").read_text(encoding="utf-8")
    start = text.index("Both print the same fields")
    listed = re.findall(r"`(\w+)`", text[start: text.index("so a\nscript written", start)])
    example = ModelVersion("g", 1, "arn", "Approved", "2026-12-07", None, None, None, None, None)
    assert listed == list(version_summary(example, None))

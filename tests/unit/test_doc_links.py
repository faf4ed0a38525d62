"""Every relative link in the project's Markdown files (and every #anchor) resolves.

A link is `[text](target)`, `![alt](target)` or a reference definition `[id]: target`, outside code blocks and
code spans; links with a scheme (https:, mailto:) are not followed. An anchor must be the GitHub slug of a heading
of the target file, or an `id`/`name` given in its HTML. Recipes' `references` are links too and are checked here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from vesselseg.recipes import known_recipes, load_recipe

ROOT = Path(__file__).resolve().parents[2]
# Folders of tools and outputs (.gitignore), never the project's documents.
SKIPPED = {".git", ".venv", ".work", ".whl", ".pytest_cache", "build", "runs", "node_modules", "__pycache__"}

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"""<[a-zA-Z][^>]*\s(?:id|name)=["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path = ROOT) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.md")):
        if not SKIPPED & set(path.relative_to(root).parts[:-1]):
            found.append(path)
    return found


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in _prose_lines(path.read_text()):
        line = CODE_SPAN.sub("", line)
        for match in INLINE.finditer(line):
            found.append((number, match.group(1).strip("<>")))
        if match := REFERENCE.match(line):
            found.append((number, match.group(1).strip("<>")))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation but `-` and `_` removed, spaces → `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: Counter[str] = Counter()
    for _, line in _prose_lines(path.read_text()):
        if match := HEADING.match(line):
            base = slug(match.group(1))
            found.add(base if not counts[base] else f"{base}-{counts[base]}")
            counts[base] += 1
        found.update(HTML_ID.findall(line))
    return found


def broken(source: Path, target: str, root: Path = ROOT) -> str | None:
    """Why `target`, a link in `source`, does not resolve; None when it does or is not relative."""
    if SCHEME.match(target) or target.startswith("//"):
        return None
    path_part, _, anchor = target.partition("#")
    resolved = (source.parent / path_part).resolve() if path_part else source
    if path_part.startswith("/") or not resolved.is_relative_to(root.resolve()):
        return "points outside the project"
    if not resolved.exists():
        return "no such file"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"no heading with anchor #{anchor} in {resolved.relative_to(root.resolve())}"
    return None


def problems(root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{number}: ({target}) {reason}"
        for path in markdown_files(root)
        for number, target in links(path)
        if (reason := broken(path, target, root))
    ]


def test_every_relative_link_and_anchor_resolves() -> None:
    assert len(markdown_files()) >= 5
    assert not problems(), "broken links:\n" + "\n".join(problems())


@pytest.mark.parametrize("name", known_recipes())
def test_recipe_references_resolve(name: str) -> None:
    recipe_file = ROOT / "recipes" / f"{name}.yaml"
    bad = [(r.source, why) for r in load_recipe(name).references if (why := broken(recipe_file, "../" + r.source))]
    assert not bad, f"recipes/{name}.yaml: {bad}"


def test_the_check_names_file_line_and_link_of_each_broken_one(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text('# Running on `Kubeflow`, step 1\n\n## Step\n## Step\n<a id="x"></a>\n')
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "ignored.md").write_text("[gone](gone.md)\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/guide.md#running-on-kubeflow-step-1) [dup](docs/guide.md#step-1) [html](docs/guide.md#x)\n"
        '[web](https://example.org/nothing) [self](#top) ![img](docs/missing.png "title")\n'
        "```\n[in code](nowhere.md)\n```\n"
        "`[span](nowhere.md)` [anchor](docs/guide.md#no-such) [up](../outside.md)\n"
        "[ref]: docs/old.md\n"
        "# Top\n"
    )
    assert problems(tmp_path) == [
        "README.md:2: (docs/missing.png) no such file",
        "README.md:6: (docs/guide.md#no-such) no heading with anchor #no-such in docs/guide.md",
        "README.md:6: (../outside.md) points outside the project",
        "README.md:7: (docs/old.md) no such file",
    ]


def test_the_readme_is_a_front_door_under_8_kb() -> None:
    # What does not fit belongs in docs/ (issue #23): the README is read in three minutes.
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 8000, f"README.md is {size} bytes; move detail into docs/ to keep it at or under 8000"

"""The documentation stands alone and names only what exists."""

from __future__ import annotations

import re
from pathlib import Path

import palsgd
from palsgd.cli import main

ROOT = Path(palsgd.__file__).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPORTS = sorted((ROOT / "reports").rglob("*.py"))

# "palsgd <command>" where it is meant as a command: in code (after a backtick, a path such as
# .venv/bin/, a shell prompt, srun) or at the start of a line; prose such as "palsgd step" in a table
# header is not a command.
COMMAND = re.compile(r"(?:^|[`/]|\$ |srun )palsgd ([a-z][a-z-]*)", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def named_commands(paths: list[Path]) -> dict[str, set[str]]:
    """{command: files naming it} over ``paths``."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for name in COMMAND.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_command_pattern_finds_commands_not_prose():
    text = "Run `palsgd simulate`, then\n$ palsgd report x\n.venv/bin/palsgd sweep\n| palsgd step | x |"
    assert COMMAND.findall(text) == ["simulate", "report", "sweep"]


def test_every_palsgd_command_named_in_docs_and_reports_exists():
    found = named_commands(DOCS + REPORTS)
    assert {"simulate", "run", "report", "time-to-target"} <= set(found)  # the pattern does find them
    unknown = {name: sorted(files) for name, files in found.items() if name not in main.commands}
    assert not unknown, f"no such command (the CLI has {sorted(main.commands)}): {unknown}"


def test_relative_links_in_docs_point_at_files_of_the_repository():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (doc.parent / target).resolve()
            if not resolved.exists() or not resolved.is_relative_to(ROOT.resolve()):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)


NOTES = "../" + "shared"  # spelt in two pieces so that this check does not find itself


def test_nothing_refers_to_the_design_notes_outside_the_repository():
    """Users have only this repository: code, docs and presets must not point at the design notes in the
    folder beside it (``NOTES``)."""
    skip = {".git", ".venv", "palsgd.egg-info", "results", "__pycache__"}
    wrong = []
    for path in sorted(ROOT.rglob("*")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & skip or path.suffix not in (".py", ".md", ".toml", ".j2", ".txt", ".cfg", ".sh"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if NOTES in line:
                wrong.append(f"{path.relative_to(ROOT)}:{number}")
    assert not wrong, "\n".join(wrong)

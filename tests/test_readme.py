"""README.md: every ``.venv/bin/ascent`` command in its bash blocks is one our CLI parser accepts as written
(flags, subcommands, values), and every asset path it names exists beside the repo. The commands
themselves are run by hand in a fresh clone before each release (the README's promise)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests.test_docker import cli_error

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
ASSIGNMENT = re.compile(r"(?:^|;\s*)(\w+)=(\"[^\"]*\"|\S+?)(?=;|\s*$)")


def expand(text: str, variables: dict[str, str]) -> str:
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), text)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), text)


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for block in BLOCKS:
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for name, value in ASSIGNMENT.findall(line.split(" && ")[0]):
                variables[name] = expand(value.strip('"'), variables)
            for part in re.split(r"&&|;", line):
                if ".venv/bin/ascent" not in part:
                    continue
                words = shlex.split(expand(part, variables))
                if words[:1] == [".venv/bin/ascent"]:
                    found.append((line, words[1:]))
    return found


COMMANDS = commands()


def test_the_readme_shows_commands_of_every_kind():
    subcommands = {argv[0] for _, argv in COMMANDS}
    assert {"run", "verify", "runs", "status", "cancel", "classes", "exporter", "export"} <= subcommands
    kinds = {argv[1] for _, argv in COMMANDS if argv[0] == "run"}
    assert kinds == {"fool", "saliency", "classviz", "style"}


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[" ".join(a[:2]) for _, a in COMMANDS])
def test_each_readme_command_is_accepted_by_the_cli(line, argv):
    error = cli_error(argv)
    assert error is None, f"README: `{line}`: {error}"


def test_the_asset_paths_the_readme_names_exist(assets):
    named = {REPO / a for _, argv in COMMANDS for a in argv if "cs231n" in a or "weights/" in a}
    missing = sorted(str(p) for p in named if not p.exists())
    assert named and not missing, missing

"""The console script's lazy subcommands: every name resolves to its command, none imported at start."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import SUBCOMMANDS, main


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_resolves_and_has_help(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None
    assert command.name == name
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output


def test_help_lists_every_subcommand() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for name in SUBCOMMANDS:
        assert f"  {name} " in out


def test_starting_the_script_imports_no_subcommand() -> None:
    code = "import sys; import qosched.extender.cli.main; print(sorted(m for m in sys.modules if m.startswith('qosched.extender.cli.') and m != 'qosched.extender.cli.main'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Issue 27, item 4: option errors read like our other one-line errors; --help has no Python type labels.

Through Typer's runner (the app's own command class, animecli.cli.usage.UsageGroup) and once
through ``python -m animecli``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from animecli.cli.app import app

COMMANDS = [[], ["convert"], ["distill"], ["eval"], ["bench"], ["models"], ["models", "list"], ["models", "info"],
            ["models", "pull"]]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


def error_of(*args: str) -> str:
    """The stderr of a refused command line, which must be one line and exit 2."""
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    text = r.stderr.strip()
    assert text.startswith("error: ") and "\n" not in text, text
    assert "╭" not in text and "Usage:" not in text and "Try '" not in text
    return text


@pytest.mark.parametrize(("option", "value", "choices"), [
    ("--format", "gif", "same, png, jpg, webp"),
    ("--precision", "fp8", "auto, fp32, fp16, bf16"),
    ("--engine", "dask", "local, ray"),
])
def test_a_bad_choice_names_the_option_value_and_choices(option: str, value: str, choices: str) -> None:
    text = error_of("convert", "in", "out", option, value)
    assert "Value error" not in text and "is not one of" not in text
    assert text == f"error: {option} '{value}': use one of {choices}"


def test_the_short_and_joined_forms_name_the_long_option() -> None:
    assert error_of("convert", "in", "out", "-f", "gif") == "error: --format 'gif': use one of same, png, jpg, webp"
    assert error_of("convert", "in", "out", "--format=gif").startswith("error: --format 'gif': ")


def test_numbers_out_of_range_or_not_numbers_say_so_in_our_words() -> None:
    assert error_of("convert", "in", "out", "--quality", "101") == "error: --quality '101': must be at most 100"
    assert error_of("convert", "in", "out", "--max-size", "-3") == "error: --max-size '-3': must be at least 0"
    text = error_of("convert", "in", "out", "--max-size", "abc")
    assert text == "error: --max-size 'abc': not a whole number (e.g. --max-size 1024)"
    assert "Input should be" not in error_of("convert", "in", "out", "--num-gpus-per-worker", "x")


def test_an_unknown_option_far_from_every_option_gets_no_suggestion() -> None:
    text = error_of("convert", "in", "out", "--bogus")
    assert "did you mean" not in text and "--jobs" not in text and "--verbose" not in text
    assert text == "error: --bogus: no such option; see `animecli convert --help`"


@pytest.mark.parametrize(("typed", "meant"), [
    ("--jbos", "--jobs"), ("--form", "--format"), ("--verbos", "--verbose"), ("--qiet", "--quiet"),
    ("--dryrun", "--dry-run"), ("--max", "--max-size, --max-pixels or --max-memory"),
])
def test_a_typo_suggests_the_options_it_is_close_to(typed: str, meant: str) -> None:
    assert error_of("convert", "in", "out", typed, "1") == f"error: {typed}: no such option; did you mean {meant}?"


def test_other_usage_errors_are_one_line_with_the_help_command() -> None:
    assert error_of("convert", "in", "out", "--model") == (
        "error: option '--model' requires an argument; see `animecli convert --help`")
    assert error_of("convert") == "error: missing argument 'INPUT... OUTPUT'; see `animecli convert --help`"
    assert error_of("models", "pull") == "error: missing argument 'name'; see `animecli models pull --help`"
    assert error_of("conver") == "error: no such command 'conver'; did you mean 'convert'?"


def _command(path: list[str]) -> Any:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "animecli")
def test_help_at_80_columns_has_no_type_labels_and_every_option_name_whole(path: list[str]) -> None:
    r = invoke(*path, "--help")
    assert r.exit_code == 0, r.output
    page = r.stdout
    assert max(len(line) for line in page.splitlines()) <= 80
    for label in ("<bool>", "<list[", "<int range>", "<float range>", "[x>="):
        assert label not in page, (label, page)
    names = {o for p in _command(path).params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
    words = set(page.replace("│", " ").split())
    assert names <= words, sorted(names - words)  # none cut short ("--num-gpus-per-w…")


def test_bounds_moved_into_the_help_are_still_enforced() -> None:
    page = " ".join(invoke("convert", "--help").stdout.replace("│", " ").split())  # as one line of words
    assert "JPEG/WebP quality. (1 to 100)" in page and "keep full size. (at least 0)" in page
    assert invoke("convert", "in", "out", "--quality", "0").exit_code == 2


def test_python_m_animecli_gives_the_same_one_line_error() -> None:
    r = subprocess.run([sys.executable, "-m", "animecli", "convert", "in", "out", "--format", "gif"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == "error: --format 'gif': use one of same, png, jpg, webp\n"

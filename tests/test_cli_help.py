"""The CLI's help is usable by a person: every option explained with its default, `--help` answers without
loading torch, and the data-source syntax matches the README."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import subprocess
import sys

import pytest

from pipeline.__main__ import COMMANDS, HelpWithDefaults, main


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command, formatter_class=HelpWithDefaults)
    importlib.import_module(COMMANDS[command][0]).add_arguments(p, command)
    return p


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(command):
    p = _parser(command)
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest}: no help text"
    fmt = HelpWithDefaults(command)
    for action in p._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert "default" in fmt._get_help_string(action).lower(), \
                f"{command} {action.option_strings}: default {action.default!r} not shown"
    p.format_help()  # every help string formats (a stray % would raise here)


def test_data_source_syntax_matches_the_readme():
    p = _parser("data-summary")
    assert "phantom[:N[:SEED]]" in p.format_help().replace("\n", "").replace(" ", "")


def test_formatter_leaves_required_and_empty_defaults_alone():
    p = argparse.ArgumentParser(formatter_class=HelpWithDefaults)
    p.add_argument("--a", type=int, default=3, help="a number")
    p.add_argument("--b", default=None, help="optional")
    p.add_argument("--c", required=True, help="needed")
    p.add_argument("--d", type=int, default=5, help="five (default 5)")
    text = " ".join(p.format_help().split())
    assert "a number (default: 3)" in text
    assert "optional (default" not in text and "needed (default" not in text
    assert text.count("default") == 2  # "(default: 3)" and the hand-written "(default 5)"


def test_segment_help_does_not_import_torch():
    """`segment --help` used to take 4.4 s, all of it importing torch before argparse ran."""
    code = ("import sys\nfrom pipeline.__main__ import main\n"
            "try:\n    main(['segment', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--box" in out.stdout and "(default: " in out.stdout
    assert "TORCH_NOT_LOADED" in out.stdout, out.stdout[-500:]


def test_lazy_sam_package_still_exports_its_names():
    import pipeline.sam as sam
    assert callable(sam.load_predictor) and callable(sam.load_model)
    with pytest.raises(AttributeError):
        sam.no_such_name  # noqa: B018


def test_top_level_help_lists_the_commands():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["--help"])
    assert all(name in buf.getvalue() for name in COMMANDS)


def test_readme_lists_every_command_of_the_cli():
    """The README's CLI block is what `python -m pipeline --help` prints: the same commands, in the same
    order, each with the same one-line description (issue 34)."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("$ python -m pipeline --help", 1)[1].split("```", 1)[0]
    listed = [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^\s{4}([a-z0-9-]+)\s{2,}(.+)$", block, re.M)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["--help"])
    printed = " ".join(buf.getvalue().split())
    assert [name for name, _ in listed] == list(COMMANDS), "README's CLI block differs from the CLI's commands"
    for name, what in listed:
        assert f"{name} {what}" in printed, f"README: {name!r} {what!r} is not what --help says"


def test_readme_is_a_manual_not_a_lab_notebook():
    from pathlib import Path
    size = (Path(__file__).resolve().parents[1] / "README.md").stat().st_size
    assert size <= 25_000, f"README is {size} bytes: dated records belong in docs/lab/"

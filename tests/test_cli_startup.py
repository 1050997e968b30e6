"""`interp --help` loads no heavy library, and a Ctrl-C while a command imports them is an
interruption (exit 130, one line), not a traceback (issue 17)."""

import builtins
import subprocess
import sys

from interp.cli.main import INTERRUPTED, INTERRUPTED_LINE, run

HEAVY = ("torch", "transformers", "pandas", "numpy")


def test_help_imports_no_heavy_library():
    script = (
        "import contextlib, io, sys\n"
        "from interp.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['train', 'crosscoder', '--help'], ['steer', 'eval', "
        "'--help'], ['run', '--help']):\n"
        "        assert run(argv) == 0, argv\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ctrl_c_while_a_command_imports_torch_is_130_and_one_line(monkeypatch, capsys):
    """`interp compare` imports the models module inside the command: a Ctrl-C there (the
    seconds torch takes to import) is caught by `run` like any other."""
    real_import = builtins.__import__

    def interrupted_import(name, *args, **kwargs):
        if name in ("torch", "interp.models"):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    capsys.readouterr()
    assert run(["compare", "--device", "cpu"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [INTERRUPTED_LINE]

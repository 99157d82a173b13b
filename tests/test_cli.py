"""The `totemcast` command line."""

import subprocess
import sys

import pytest

import totemcast
from totemcast.__main__ import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"totemcast {totemcast.__version__}"


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "totemcast", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "usage: totemcast" in done.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["no-such-command"])
    assert exited.value.code == 2

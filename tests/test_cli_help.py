"""The ``ds4d`` dispatcher: every command listed, unknown ones refused, help without Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ds4d_pl.cli import COMMANDS, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "prepare", "synth", "eval", "weights"):
        assert f"  {name} " in out
    assert set(COMMANDS) >= {"fit", "prepare", "synth", "eval", "weights"}


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fitt"])
    assert exc.value.code == 2
    assert "unknown command 'fitt'" in capsys.readouterr().err


def test_help_and_light_commands_do_not_import_lightning() -> None:
    code = (
        "import sys\n"
        "from ds4d_pl.cli import main\n"
        "try:\n"
        "    main(['synth', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('lightning' in sys.modules, 'lightning.pytorch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "False False"

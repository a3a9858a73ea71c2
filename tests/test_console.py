"""The `arcdae` console command (subcommands = the python -m modules) and the one-line error
when the evaluation extra is missing."""

import importlib.util

import pytest

from arcdae_fast import cli
from arcdae_fast.errors import UserError
from arcdae_fast.eval import need_extra


def test_subcommands_are_the_modules_mains(capsys):
    assert cli.main([]) == 2
    assert "train-latent" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0, name
        assert "usage:" in capsys.readouterr().out
    assert cli.main(["info"]) == 0


def test_missing_eval_packages_name_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if m == "sklearn" else real(m, *a)
    )
    with pytest.raises(UserError, match=r"needs scikit-learn: pip install 'arcdae_fast\[eval\]'"):
        need_extra()


def test_quiet_and_verbose_set_the_level(tiny_config_file, tmp_path, capsys, monkeypatch):
    from arcdae_fast import log
    from arcdae_fast.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--config", str(tiny_config_file), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # no messages, no bar
    assert (
        train_main(["--config", str(tiny_config_file), "--out", str(out), "--max-steps", "5"]) == 0
    )
    err = capsys.readouterr().err
    assert "resuming from" in err and "done: 5 steps" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert log.prefix() == "[rank 1] "

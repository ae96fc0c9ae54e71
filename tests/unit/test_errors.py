"""One error base: MechgrokError subclasses keep their builtin kinds, speak the caller's
language for options (flags on the command line, keywords in Python), and are the only
library errors the CLI shortens to one line; a bug keeps its traceback."""

import dataclasses

import pytest
from conftest import TINY, assert_one_line_error, run_cli

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.errors import (
    InvalidOptionError,
    MechgrokError,
    OutputExistsError,
    OutputWriteError,
    ResumeError,
)


def test_subclasses_are_their_builtin_kinds_and_mechgrok_errors():
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(OutputWriteError, OSError)
    assert issubclass(InvalidOptionError, ValueError) and issubclass(ResumeError, MechgrokError)
    assert mechgrok.MechgrokError is MechgrokError


def test_remedies_name_options_as_flags_or_keywords():
    err = ResumeError("run.h5: {steps} 20 is below the last step {x}", remedy="use {force}")
    assert str(err) == "run.h5: steps 20 is below the last step {x}; use force=True"
    assert err.render(cli=True) == "run.h5: --steps 20 is below the last step {x}; use --force"


def test_bad_options_are_typed_errors_in_python():
    with pytest.raises(InvalidOptionError, match="noise"):
        RunConfig(noise=1.5)


def test_a_resume_refusal_names_the_flags_on_the_command_line(tmp_path):
    path = mechgrok.record(RunConfig(**TINY), out=tmp_path / "r.h5")
    with pytest.raises(ResumeError, match="use force=True"):
        mechgrok.record(dataclasses.replace(RunConfig(**TINY), noise=0.1), out=path, resume=True)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    proc = run_cli("record", *args, "--noise", "0.1", "--out", str(path), "--resume", "--quiet")
    assert_one_line_error(proc, "cannot resume with a different config", "use --force")


def test_a_bug_inside_mechgrok_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr("mechgrok.analysis.pipeline.analyze", broken)
    path = mechgrok.record(RunConfig(**TINY), out=tmp_path / "r.h5")
    with pytest.raises(ValueError, match="an internal bug"):  # run_cli re-raises what escaped
        run_cli("analyze", str(path))

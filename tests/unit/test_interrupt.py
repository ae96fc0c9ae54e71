"""Ctrl-C and SIGTERM in the CLI's loops (cli.interruptible), in this process."""

import os
import signal

import pytest

from mechgrok.cli import Interrupted, interruptible


def _signal_self(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)  # its Python handler runs before the next line


def test_a_signal_before_the_first_step_waits_for_the_loop_to_poll(capsys):
    """Raised from the handler, the interrupt could land in an h5py finalizer while the first
    snapshot is written and be dropped ("Exception ignored"): it waits for the next poll."""
    reached = []
    with pytest.raises(Interrupted, match="stopped here"):
        with interruptible(lambda: "stopped here") as stop_if_interrupted:
            _signal_self()
            reached.append("after the signal")  # the handler ran and did not raise
            stop_if_interrupted()
            reached.append("after the poll")
    assert reached == ["after the signal"]
    assert "stopping after this step" in capsys.readouterr().err


def test_a_second_signal_stops_at_once():
    with pytest.raises(Interrupted):
        with interruptible(lambda: "stopped"):
            _signal_self(signal.SIGINT)
            _signal_self(signal.SIGINT)
            pytest.fail("the second signal did not stop the loop")


def test_without_a_polling_loop_the_first_signal_stops_at_once():
    with pytest.raises(Interrupted):
        with interruptible(lambda: "stopped", polled=False):
            _signal_self()
            pytest.fail("a loop that never polls would never stop")


def test_handlers_are_restored_and_a_finished_loop_is_not_interrupted():
    before = signal.getsignal(signal.SIGTERM)
    with interruptible(lambda: "stopped") as stop_if_interrupted:
        stop_if_interrupted()
    assert signal.getsignal(signal.SIGTERM) is before

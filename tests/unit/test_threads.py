"""The thread count for training: chosen from the step's size and the free cores, given by
--threads, and never left changed in the caller's process."""

import pytest
import torch

import mechgrok.recording.threads
from mechgrok.recording.threads import (
    PARALLEL_FLOP_PER_STEP,
    choose_threads,
    free_cores,
    torch_threads,
    training_flop_per_step,
)


def test_small_steps_train_on_one_thread_and_large_ones_on_the_free_cores(monkeypatch):
    tiny = training_flop_per_step(modulus=23, width=32, n_train=300)
    paper = training_flop_per_step(modulus=97, width=256, n_train=2813)
    assert tiny < PARALLEL_FLOP_PER_STEP < paper
    monkeypatch.setattr(mechgrok.recording.threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(
        mechgrok.recording.threads, "_busy_cores", lambda interval, cores: 1.2
    )  # another process on ~1 core
    assert choose_threads(tiny) == 1
    assert free_cores() == 3 and choose_threads(paper) == 3
    monkeypatch.setattr(
        mechgrok.recording.threads, "_busy_cores", lambda interval, cores: 5.0
    )  # oversubscribed: still 1
    assert choose_threads(paper) == 1
    assert choose_threads(tiny, requested=3) == 3
    with pytest.raises(ValueError, match="threads"):
        choose_threads(paper, requested=0)
    with pytest.raises(ValueError, match="threads must be 1 to 16"):  # not 4,096 OS threads
        choose_threads(paper, requested=4096)


def test_the_callers_thread_setting_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_busy_cores_are_read_from_proc_stat():
    busy = mechgrok.recording.threads._busy_cores(0.05, 2)
    assert 0.0 <= busy <= 2.0

"""The thread count for training: chosen from the step's size and the free cores, given by
--threads, and never left changed in the caller's process."""
import pytest
import torch

from mechgrok.threads import PARALLEL_FLOP_PER_STEP, choose_threads, free_cores, torch_threads, training_flop_per_step


def test_small_steps_train_on_one_thread_and_large_ones_on_the_free_cores():
    tiny = training_flop_per_step(modulus=23, width=32, n_train=300)
    paper = training_flop_per_step(modulus=97, width=256, n_train=2813)
    assert tiny < PARALLEL_FLOP_PER_STEP < paper
    assert choose_threads(tiny) == 1
    assert choose_threads(paper) == free_cores() >= 1
    assert choose_threads(tiny, requested=3) == 3
    with pytest.raises(ValueError, match="threads"):
        choose_threads(paper, requested=0)


def test_the_callers_thread_setting_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

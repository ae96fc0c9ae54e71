import numpy as np
import pytest

from mechgrok.task import make_task


@pytest.mark.parametrize("p,frac", [(11, 0.3), (13, 0.5), (31, 0.3)])
def test_split_is_stratified_and_partitions_all_pairs(p, frac):
    task = make_task(p, frac, 0.0, seed=3)
    per_class = round(frac * p)
    assert np.all(np.bincount(task.train_label_true, minlength=p) == per_class)
    assert np.all((task.train_a + task.train_b) % p == task.train_label_true)
    assert np.all((task.val_a + task.val_b) % p == task.val_label)
    pairs = {(a, b) for a, b in zip(task.train_a, task.train_b)} | {
        (a, b) for a, b in zip(task.val_a, task.val_b)
    }
    assert len(pairs) == p * p == task.train_a.size + task.val_a.size


def test_noise_replaces_the_stated_share_with_wrong_labels():
    task = make_task(31, 0.5, 0.2, seed=1)
    n_train = task.train_a.size
    assert task.train_noised.sum() == round(0.2 * n_train)
    assert np.all(task.train_label[task.train_noised] != task.train_label_true[task.train_noised])
    assert np.all(task.train_label[~task.train_noised] == task.train_label_true[~task.train_noised])
    assert np.all((0 <= task.train_label) & (task.train_label < 31))


def test_noise_draws_every_wrong_class():
    task = make_task(11, 0.9, 0.9, seed=0)
    offsets = (task.train_label - task.train_label_true)[task.train_noised] % 11
    assert set(offsets.tolist()) == set(range(1, 11))


def test_same_seed_same_split_and_other_seed_differs():
    a, b, c = make_task(13, 0.3, 0.1, 5), make_task(13, 0.3, 0.1, 5), make_task(13, 0.3, 0.1, 6)
    assert np.array_equal(a.train_a, b.train_a) and np.array_equal(a.train_label, b.train_label)
    assert not np.array_equal(a.train_a, c.train_a)


@pytest.mark.parametrize(
    "p,frac,noise,message",
    [
        (2, 0.3, 0.0, "modulus"),
        (11, 0.0, 0.0, "train_frac"),
        (11, 0.02, 0.0, "per answer class"),
        (11, 0.5, 1.0, "noise"),
    ],
)
def test_impossible_parameters_raise_value_error(p, frac, noise, message):
    with pytest.raises(ValueError, match=message):
        make_task(p, frac, noise, 0)

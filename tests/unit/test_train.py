import dataclasses

import numpy as np
import pytest
import torch
from conftest import GROKKING

import mechgrok.recording.train as train_module
from mechgrok.config import ACTIVATIONS, RunConfig
from mechgrok.models.mlp import MLPParams, activate, init_params
from mechgrok.recording.schedule import SnapshotSchedule
from mechgrok.recording.train import (
    _adamw_update,
    _forward_backward,
    _stack_batch,
    correct_predictions,
    evaluate,
    initial_state,
    train_ensemble,
)
from mechgrok.task import make_task


def _batch(config, seeds=(0,)):
    configs = [dataclasses.replace(config, seed=s) for s in seeds]
    tasks = [make_task(c.modulus, c.train_frac, c.noise, c.seed, c.operation) for c in configs]
    return configs, _stack_batch(
        configs, tasks, [initial_state(c) for c in configs], torch.device("cpu")
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_hand_written_backward_matches_autograd(bias, activation):
    configs, batch = _batch(
        RunConfig(modulus=13, width=8, train_frac=0.5, noise=0.2, bias=bias, activation=activation),
        seeds=(0, 1),
    )
    p = 13
    logits, grad = _forward_backward(batch, bias)

    flat = batch.flat_params.clone().requires_grad_(True)
    params = MLPParams.from_flat(flat, p, 8)
    models = torch.arange(2)[:, None]
    pre = params.W_a[models, batch.train_a] + params.W_b[models, batch.train_b] + params.b_in
    ref_logits = (
        activate(activation, pre) @ params.W_out + params.b_out
    )  # torch's own gelu/silu and their autograd derivatives
    loss = torch.nn.functional.cross_entropy(
        ref_logits.reshape(-1, p), batch.train_label.reshape(-1), reduction="none"
    )
    loss.view(2, -1).mean(1).sum().backward()
    torch.testing.assert_close(logits, ref_logits.detach())
    expected = flat.grad.clone()
    if not bias:  # biases are frozen at zero without --bias
        for view in (
            MLPParams.from_flat(expected, p, 8).b_in,
            MLPParams.from_flat(expected, p, 8).b_out,
        ):
            view.zero_()
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_adamw_update_matches_torch_optim():
    configs, batch = _batch(
        RunConfig(modulus=11, width=8, lr=3e-3, weight_decay=0.5, betas=(0.8, 0.95))
    )
    reference = batch.flat_params.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [reference], lr=3e-3, weight_decay=0.5, betas=(0.8, 0.95), eps=1e-8
    )
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 6):
        grad = torch.randn(batch.flat_params.shape, generator=gen)
        _adamw_update(batch, grad, [t], configs)
        reference.grad = grad.clone()
        optimizer.step()
        torch.testing.assert_close(batch.flat_params, reference.detach(), rtol=1e-6, atol=1e-7)


def test_accuracy_gives_tied_labels_fractional_credit():
    logits = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 1, 2, 1]])
    torch.testing.assert_close(
        correct_predictions(logits, labels), torch.tensor([[0.5, 1.0, 1 / 3, 0.0]])
    )


def test_blocked_evaluation_equals_one_block():
    configs, batch = _batch(RunConfig(modulus=13, width=8, train_frac=0.5))
    whole = evaluate(batch.params, batch.val_a, batch.val_b, batch.val_label, block=10**6)
    blocked = evaluate(batch.params, batch.val_a, batch.val_b, batch.val_label, block=7)
    torch.testing.assert_close(whole, blocked)


def test_log_schedule_is_dense_early_and_includes_both_ends():
    steps = SnapshotSchedule(RunConfig(steps=500_000)).steps()
    assert steps[0] == 0 and steps[-1] == 500_000
    assert np.all(np.diff(steps) > 0)
    assert np.array_equal(
        steps[:40], np.arange(40)
    )  # every step while the log spacing is finer than 1
    assert (steps < 400).sum() >= 50
    assert len(steps) < 600
    assert np.array_equal(SnapshotSchedule(RunConfig(steps=25, every=10)).steps(), [0, 10, 20, 25])


@pytest.mark.parametrize("steps,every", [(25, 10), (30, 10), (1, 1), (7, 3), (500, 0), (12345, 0)])
def test_schedule_membership_and_counts_match_its_list(steps, every):
    schedule = SnapshotSchedule(RunConfig(steps=steps, every=every, per_decade=20))
    listed = schedule.steps()
    assert [s for s in range(-2, steps + 3) if s in schedule] == listed.tolist()
    for after in (-1, 0, 1, steps // 2, steps - 1, steps):
        assert schedule.count_after(after) == int((listed > after).sum())


def test_a_huge_every_one_schedule_costs_no_memory():
    # 10^9 steps snapshotting every step once built a 10^9-entry array (15.9 GB in 30 s)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    schedule = SnapshotSchedule(RunConfig(modulus=11, width=8, steps=10**9, every=1))
    assert len(schedule) == 10**9 + 1 and 999_999_999 in schedule and 10**9 + 1 not in schedule
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB


def test_default_init_bounds_follow_nn_linear():
    params = init_params(97, 256, seed=0)
    assert params.W_a.abs().max() <= 1 / np.sqrt(194) and params.W_out.abs().max() <= 1 / np.sqrt(
        256
    )
    assert params.W_a.std() > 0.5 / np.sqrt(3 * 194)
    assert torch.equal(init_params(11, 4, 1, bias=False).b_in, torch.zeros(1, 1, 4))


def test_same_seed_gives_identical_snapshots(tiny_config):
    first = list(train_ensemble([tiny_config]))
    second = list(train_ensemble([tiny_config]))
    assert [s.step for s in first] == [s.step for s in second]
    for a, b in zip(first, second):
        for name in a.weights:
            assert np.array_equal(a.weights[name], b.weights[name])
        assert a.metrics == b.metrics


def test_ensemble_matches_runs_recorded_alone():
    base = RunConfig(modulus=13, width=16, train_frac=0.5, steps=200, every=50, stop_val_acc=1.0)
    configs = [
        dataclasses.replace(base, seed=0),
        dataclasses.replace(base, seed=1, noise=0.2, lr=2e-3),
        dataclasses.replace(base, seed=2, steps=120),
    ]
    together = list(train_ensemble(configs))
    for run, config in enumerate(configs):
        alone = list(train_ensemble([config]))
        mine = [s for s in together if s.run == run]
        assert [s.step for s in mine] == [s.step for s in alone]
        for a, b in zip(mine, alone):
            for name in a.weights:
                np.testing.assert_allclose(a.weights[name], b.weights[name], rtol=1e-4, atol=1e-6)
    assert max(s.step for s in together if s.run == 2) == 120


@pytest.mark.parametrize("models_per_group", [1, 2])
def test_ensemble_trained_in_groups_is_bit_identical_to_one_pass(monkeypatch, models_per_group):
    """On a CPU a large ensemble runs its step a few models at a time; each model's floats
    must not depend on that, including after a run leaves the batch (run 2 stops at 120)."""
    base = RunConfig(modulus=13, width=16, train_frac=0.5, steps=200, every=20, stop_val_acc=1.0)
    configs = [
        dataclasses.replace(base, seed=0),
        dataclasses.replace(base, seed=1, noise=0.2, lr=2e-3),
        dataclasses.replace(base, seed=2, steps=120),
        dataclasses.replace(base, seed=3, weight_decay=0.3),
    ]
    one_pass = list(train_ensemble(configs))
    n_pairs = make_task(13, 0.5, 0.0, 0).train_a.size
    monkeypatch.setattr(
        train_module, "CPU_GROUP_ACTIVATION_BYTES", models_per_group * n_pairs * 16 * 4
    )
    _, batch = _batch(base, seeds=range(4))
    assert [len(group.runs) for group in batch.groups] == [models_per_group] * (
        4 // models_per_group
    )
    grouped = list(train_ensemble(configs))
    assert [(s.run, s.step) for s in grouped] == [(s.run, s.step) for s in one_pass]
    for a, b in zip(grouped, one_pass):
        assert a.metrics == b.metrics
        for name in a.weights:
            assert np.array_equal(a.weights[name], b.weights[name])


def test_saturation_and_stopping_are_marked():
    config = RunConfig(**GROKKING, steps=3000, every=500, stop_val_acc=0.9)
    snapshots = list(train_ensemble([config]))
    saturation = [s for s in snapshots if s.is_saturation]
    assert len(saturation) == 1
    sat = saturation[0]
    assert sat.metrics["train_acc"] >= 0.99
    assert all(s.metrics["train_acc"] < 0.99 for s in snapshots if s.step < sat.step)
    final = snapshots[-1]
    assert (
        final.is_final
        and final.metrics["val_acc"] >= 0.9
        and final.step % 10 == 0
        and final.step < 3000
    )
    assert "validation accuracy" in final.stop_reason


def test_patience_stops_a_run_that_never_generalises():
    config = RunConfig(
        modulus=11,
        width=8,
        train_frac=0.5,
        noise=0.6,
        steps=5000,
        every=1000,
        patience=300,
        eval_every=50,
    )
    final = list(train_ensemble([config]))[-1]
    assert final.is_final and final.step < 5000 and "no validation gain" in final.stop_reason


def test_resumed_state_continues_exactly(tiny_config):
    uninterrupted = list(train_ensemble([tiny_config]))
    middle = next(s for s in uninterrupted if s.step == 30)
    continued = list(train_ensemble([tiny_config], [middle.state]))
    assert continued[0].step == 30  # the state's own snapshot comes again; the writer skips it
    for a, b in zip(continued, [s for s in uninterrupted if s.step >= 30]):
        assert a.step == b.step
        for name in a.weights:
            assert np.array_equal(a.weights[name], b.weights[name])


def test_config_rejects_impossible_values():
    for bad in [
        dict(modulus=2),
        dict(width=0),
        dict(train_frac=1.0),
        dict(noise=1.0),
        dict(every=-1),
        dict(steps=-1),
        dict(device="tpu"),
        dict(device="cuda:7" if not torch.cuda.is_available() else "nonsense"),
    ]:
        with pytest.raises(ValueError):
            RunConfig(**bad)


def test_the_stopping_rule_as_a_pure_function():
    from mechgrok.recording.train import StoppingMemory, is_check_step, stopping_decision

    config = RunConfig(modulus=11, steps=1000, stop_val_acc=0.9, patience=300, eval_every=100)
    assert [is_check_step(config, s) for s in (0, 50, 100, 999, 1000)] == [
        True,
        False,
        True,
        False,
        True,
    ]
    reason, memory = stopping_decision(config, StoppingMemory(), 0, 0.1)
    assert reason == "" and (memory.best_val_acc, memory.best_val_step) == (0.1, 0)
    reason, memory = stopping_decision(
        config, memory, 100, 0.10005
    )  # a gain below 1e-4 does not count
    assert reason == "" and memory.best_val_step == 0
    reason, _ = stopping_decision(config, memory, 300, 0.1)
    assert reason == "no validation gain for 300 steps"
    reason, _ = stopping_decision(
        config, memory, 300, 0.95
    )  # reaching the target wins over patience
    assert reason.startswith("validation accuracy 0.9500 >= 0.9")
    reason, _ = stopping_decision(config, StoppingMemory(0.5, 900), 1000, 0.5)
    assert reason == "step cap 1000 reached"


def test_bf16_gemms_train_close_to_fp32_with_float32_masters():
    base = RunConfig(modulus=13, width=16, train_frac=0.5, steps=60, every=60, stop_val_acc=None)
    fp32 = list(train_ensemble([base]))[-1]
    bf16 = list(train_ensemble([dataclasses.replace(base, precision="bf16")]))[-1]
    assert (
        bf16.step == fp32.step == 60 and bf16.weights["W_a"].dtype == np.float32
    )  # masters stay float32
    for name in ("W_a", "W_out"):
        gap = (
            np.abs(bf16.weights[name] - fp32.weights[name]).max() / np.abs(fp32.weights[name]).max()
        )
        assert 0 < gap < 0.05, (name, gap)  # bf16 operands change the run, slightly
    with pytest.raises(ValueError, match="precision"):
        RunConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision"):  # one ensemble, one precision
        list(train_ensemble([base, dataclasses.replace(base, seed=1, precision="bf16")]))

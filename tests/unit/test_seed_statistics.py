"""Means over seeds with bootstrap intervals, and grouping a sweep's runs by their options."""

import numpy as np
import pytest
from planted import as_dataset, planted_algorithm

import mechgrok
from mechgrok.sweep.bootstrap import seed_summary
from mechgrok.sweep.summary import group_by_options, run_numbers, summarize_seeds, varying_options


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.8, 0.05, 4), rng.normal(0.8, 0.05, 64)
    small, large = seed_summary(few), seed_summary(many)
    assert small.n == 4 and small.mean == pytest.approx(few.mean())
    assert small.low <= small.mean <= small.high and large.low <= large.mean <= large.high
    assert large.high - large.low < small.high - small.low
    # the percentile bootstrap of a mean: about 2 standard errors wide each way for many seeds
    assert large.high - large.low == pytest.approx(2 * 1.96 * many.std() / np.sqrt(64), rel=0.15)
    assert seed_summary(few) == small  # reproducible


def test_one_seed_no_interval_and_nan_values_left_out():
    one = seed_summary([0.5, np.nan])
    assert (one.mean, one.n) == (0.5, 1) and np.isnan(one.low) and one.text(2) == "0.50"
    assert seed_summary([np.nan]).n == 0 and seed_summary([]).text() == "-"
    same = seed_summary([0.3, 0.3, 0.3])
    assert same.low == same.high == pytest.approx(0.3) and same.text(1) == "0.3 [0.3, 0.3]"


def test_runs_are_grouped_by_every_option_but_the_seed():
    def run(noise, seed, value):
        return dict(
            modulus=23,
            width=32,
            train_frac=0.5,
            noise=noise,
            lr=1e-2,
            weight_decay=1.0,
            steps=100,
            stop_val_acc=0.99,
            seed=seed,
            val_acc_final=value,
        )

    rows = [run(0.1, 0, 0.5), run(0.0, 1, 0.9), run(0.1, 1, 0.7), run(0.0, 0, 1.0)]
    groups = group_by_options(rows)
    assert [options["noise"] for options, _ in groups] == [0.0, 0.1]
    assert [sorted(r["seed"] for r in members) for _, members in groups] == [[0, 1], [0, 1]]
    assert varying_options(groups) == ["noise"]
    summary = summarize_seeds(groups[1][1])
    assert summary["val_acc_final"].n == 2 and summary["val_acc_final"].mean == pytest.approx(0.6)
    assert summary["ideal_acc_final"].n == 0  # missing numbers are NaN, not zero
    mixed = group_by_options(
        [dict(run(0.0, 0, 1.0), precision="fp32"), dict(run(0.0, 1, 0.9), precision="bf16")]
    )
    assert len(mixed) == 2 and varying_options(mixed) == [
        "precision"
    ]  # another precision is not another seed


def test_a_run_recorded_before_an_option_existed_counts_as_its_default():
    analysis = mechgrok.analyze(as_dataset(planted_algorithm(23), planted_algorithm(23, seed=1)))
    old = run_numbers(
        analysis, dict(modulus=23, noise=0.0, seed=0)
    )  # no operation, activation, precision attributes
    assert (old["operation"], old["activation"], old["precision"]) == ("add", "relu", "fp32")
    assert (
        run_numbers(analysis, dict(modulus=23, noise=0.0, seed=0, precision="bf16"))["precision"]
        == "bf16"
    )
    assert old["lr"] is None  # options every file has are not invented

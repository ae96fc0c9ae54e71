"""A sweep's numbers in the shape of the paper's Table 2: one row of headline numbers per run,
and per group of runs that differ only in their seed, the mean over seeds with a 95%
bootstrap interval (bootstrap.py). Pure: analysis Datasets in, dicts out; the report and
the CSV writer format them."""

from __future__ import annotations

import numpy as np
import xarray as xr

from mechgrok.analysis.variables import short_name
from mechgrok.config import RunConfig
from mechgrok.store.reader import OPTIONS_ADDED_LATER
from mechgrok.sweep.bootstrap import SeedSummary, seed_summary

# (column, headline key) of the Table-2-shaped table; validation accuracy of the real model
# and of the idealized models at the end and at the saturation checkpoint, then controls and r
TABLE2_COLUMNS = tuple(
    (f"{'final' if when == 'final' else 'sat.'} {short_name(name)}", f"{name}_{when}")
    for name, when in (
        ("val_acc", "final"),
        ("ideal_acc_sq_sq", "final"),
        ("ideal_acc", "final"),
        ("ideal_acc_cos_cos", "final"),
        ("ideal_acc_own", "final"),
        ("ideal_acc_shuffled", "final"),
        ("val_acc", "saturation"),
        ("ideal_acc_sq_sq", "saturation"),
        ("ideal_acc", "saturation"),
        ("ideal_acc_cos_cos", "saturation"),
        ("r_all", "final"),
        ("r_structured", "final"),
    )
)
# run options that make runs comparable; runs equal in all of them are seeds of one group
GROUP_OPTIONS = (
    "operation",
    "activation",
    "precision",
    "modulus",
    "width",
    "train_frac",
    "noise",
    "lr",
    "weight_decay",
    "steps",
    "stop_val_acc",
)
EXTRA_NUMBERS = ("periodicity_mean_final", "lead_steps", "final_step")


def run_numbers(analysis: xr.Dataset, trajectory_attrs: dict) -> dict:
    """One run's row: its options (GROUP_OPTIONS, seed), the TABLE2_COLUMNS numbers (NaN where
    missing), the mean final W_a periodicity, the lead in steps (NaN when undefined) and the
    last step."""
    head = analysis.mechgrok.headline()
    # files recorded before an option existed ran its default (the paper's)
    row = {
        key: trajectory_attrs.get(
            key, getattr(RunConfig, key) if key in OPTIONS_ADDED_LATER else None
        )
        for key in (*GROUP_OPTIONS, "seed")
    }
    for _, key in TABLE2_COLUMNS:
        row[key] = float(head[key]) if head.get(key) is not None else np.nan
    row["periodicity_mean_final"] = float(
        np.nanmean(analysis["periodicity_a"].isel(step=-1).values)
    )
    row["lead_steps"] = float(head["lead_steps"]) if head.get("lead_steps") is not None else np.nan
    row["final_step"] = head["final_step"]
    return row


def group_by_options(rows: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Rows grouped by every option but the seed, ordered by noise then the other options:
    [(options, rows of its seeds)]."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_sortable(row.get(key)) for key in GROUP_OPTIONS), []).append(row)
    order = sorted(groups, key=lambda key: (key[GROUP_OPTIONS.index("noise")], key))
    return [({k: groups[key][0].get(k) for k in GROUP_OPTIONS}, groups[key]) for key in order]


def _sortable(value):
    return (
        (0, float(value))
        if isinstance(value, (int, float, np.number)) and value is not None
        else (1, str(value))
    )


def summarize_seeds(rows: list[dict]) -> dict[str, SeedSummary]:
    """Mean over the seeds and 95% bootstrap interval of each number of TABLE2_COLUMNS and EXTRA_NUMBERS."""
    keys = [key for _, key in TABLE2_COLUMNS] + list(EXTRA_NUMBERS)
    return {key: seed_summary([row.get(key, np.nan) for row in rows]) for key in keys}


def varying_options(groups: list[tuple[dict, list[dict]]]) -> list[str]:
    """The options that differ between groups (what a group's label must say)."""
    return [
        key
        for key in GROUP_OPTIONS
        if len({_sortable(options.get(key)) for options, _ in groups}) > 1
    ]

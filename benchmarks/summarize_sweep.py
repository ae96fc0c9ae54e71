"""Analyze every run of a sweep folder and write its summary numbers as CSV (one row per run,
then one row per group of seeds with the mean and 95% bootstrap interval), with the command
that recorded it and the machine in leading '#' lines. The trajectories are not committed;
these rows are.

  python benchmarks/summarize_sweep.py SWEEP_FOLDER --out benchmarks/results/NAME.csv \
      --command "mechgrok record ..." [--note "what the cap changes"]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import mechgrok
from mechgrok.paper import paper_row
from mechgrok.sweep.index import resolve_trajectories
from mechgrok.sweep.summary import (
    GROUP_OPTIONS,
    TABLE2_COLUMNS,
    group_by_options,
    run_numbers,
    summarize_seeds,
)

HEADLINE_EXTRA = (
    "waveform_family",
    "waveform_binarization",
    "saturation_step",
    "structure_step",
    "structure_step_own",
    "grok_step",
    "lead_steps_own",
    "ideal_acc_shuffled_hi_final",
    "restricted_loss_final",
    "excluded_loss_final",
)
EXTRA = (
    *HEADLINE_EXTRA,
    "lead_steps",
    "final_step",
    "stop_reason",
)  # lead and final step as run_numbers gives them
PAPER = (
    "final_real",
    "final_sq_sq",
    "final_sq_cos",
    "final_cos_cos",
    "sat_real",
    "sat_sq_sq",
    "sat_sq_cos",
    "sat_cos_cos",
)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"load average {load[0]:.2f} at the summary"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the command that recorded the sweep")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--markdown", action="store_true", help="also print a markdown table of the groups"
    )
    args = parser.parse_args()
    rows = []
    for path in resolve_trajectories([args.sweep]):
        trajectory = mechgrok.open_trajectory(path)
        analysis = mechgrok.analyze(path)
        head = analysis.mechgrok.headline()
        row = dict(run_numbers(analysis, trajectory.attrs), run=path.name)
        row.update({key: head.get(key) for key in HEADLINE_EXTRA})
        row.update(
            operation=trajectory.attrs.get("operation", "add"),
            activation=trajectory.attrs.get("activation", "relu"),
            stop_reason=trajectory.attrs.get("stop_reason", ""),
        )
        paper = (
            paper_row(float(trajectory.attrs.get("noise", 0.0)))
            if row["operation"] == "add" and int(trajectory.attrs["modulus"]) == 97
            else None
        )
        for key in PAPER:
            row[f"paper_{key}"] = (
                "" if paper is None else ("<0.0001" if paper[key] is None else paper[key])
            )
        rows.append(row)
        trajectory.close()
        analysis.close()
    number_keys = [key for _, key in TABLE2_COLUMNS]
    fields = ["run", *GROUP_OPTIONS, "seed", *number_keys, *EXTRA, *(f"paper_{k}" for k in PAPER)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        handle.write(
            f"# {args.command}\n# summarized {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {machine()}\n"
        )
        if args.note:
            handle.write(f"# {args.note}\n")
        handle.write(
            "# rows 'group': mean over the seeds of a group [95% percentile-bootstrap interval]; n = seeds\n"
        )
        writer = csv.DictWriter(handle, fieldnames=["kind", "n", *fields], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({"kind": "run", "n": 1, **{k: _text(v) for k, v in row.items()}})
        for options, members in group_by_options(rows):
            summary = summarize_seeds(members)
            group = {
                "kind": "group",
                "n": len(members),
                **{k: _text(v) for k, v in options.items()},
                "operation": members[0]["operation"],
                "activation": members[0]["activation"],
            }
            group.update({key: summary[key].text(4) for key in number_keys})
            writer.writerow(group)
    print(f"wrote {args.out}: {len(rows)} runs")
    if args.markdown:
        print_markdown(rows)


MARKDOWN_COLUMNS = (
    ("final real", "val_acc_final"),
    ("final Sq->Cos", "ideal_acc_final"),
    ("final Cos->Cos", "ideal_acc_cos_cos_final"),
    ("final own freq.", "ideal_acc_own_final"),
    ("final shuffled", "ideal_acc_shuffled_final"),
    ("sat. Sq->Cos", "ideal_acc_saturation"),
    ("sat. Cos->Cos", "ideal_acc_cos_cos_saturation"),
    ("final r'", "r_structured_final"),
    ("lead (steps)", "lead_steps"),
)


def print_markdown(rows: list[dict]) -> None:
    """One line per group: options that vary, seeds, waveform family per seed, then means [95% CI]."""
    groups = group_by_options(rows)
    header = [
        "operation",
        "activation",
        "noise",
        "seeds",
        "W_a waveform (per seed)",
        *(label for label, _ in MARKDOWN_COLUMNS),
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for options, members in groups:
        summary = summarize_seeds(members)
        waveforms = ", ".join(_waveform(m) for m in members)
        cells = [
            str(options.get("operation")),
            str(options.get("activation")),
            f"{options.get('noise')}",
            str(len(members)),
            waveforms,
            *(summary[key].text(0 if key == "lead_steps" else 3) for _, key in MARKDOWN_COLUMNS),
        ]
        print("| " + " | ".join(cells) + " |")


def _waveform(row: dict) -> str:
    value = row.get("waveform_binarization")
    finite = value is not None and np.isfinite(value)
    return f"{row['waveform_family']} ({value:.2f})" if finite else str(row.get("waveform_family"))


def _text(value) -> str:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()

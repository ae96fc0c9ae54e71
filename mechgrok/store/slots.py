"""The resume group: AdamW moments and the stopping rule's memory at the latest two
checkpointed snapshots, double-buffered so that a kill while one slot is written leaves
the other intact. Plain numpy: the recorder turns a SavedState into training tensors.

Layout (group `resume`): `slot_step` (slot) int64, -1 while a slot is invalid;
`adam_m`, `adam_v` (slot, flat_param) float32, the moments of every parameter in the
model's flat order; `memory` (slot, memory_field) float64, MEMORY_FIELDS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MEMORY_FIELDS = ("best_val_acc", "best_val_step", "saturation_step")
SLOTS = 2


@dataclass(frozen=True)
class Checkpoint:
    """What a slot holds besides the weights: flat AdamW moments and the stopping memory."""

    adam_m: np.ndarray
    adam_v: np.ndarray
    best_val_acc: float
    best_val_step: int
    saturation_step: int


@dataclass(frozen=True)
class SavedState:
    """A run's state at its latest usable checkpoint: the committed snapshot's weights (file
    layout: W_a, W_b, W_out as (neuron, token); b_in (neuron,), b_out (token,)) and the slot."""

    step: int
    snapshot_index: int
    weights: dict[str, np.ndarray]
    checkpoint: Checkpoint


def latest_slot(slot_steps: np.ndarray, committed_steps: np.ndarray) -> tuple[int, int] | None:
    """(step, slot) of the newest valid slot whose step is a committed snapshot, or None.
    A slot naming a step past the committed ones was written for a snapshot that never
    committed and is not used."""
    usable = [
        (int(step), slot)
        for slot, step in enumerate(slot_steps)
        if step >= 0 and step in committed_steps
    ]
    return max(usable) if usable else None


def create_slots(group: Any, n_flat: int) -> None:
    """Make the resume group's variables in an h5netcdf group. Written at once so that their
    space is allocated before any snapshot (TrajectoryWriter reserves a snapshot's bytes only)."""
    group.dimensions = {"slot": SLOTS, "flat_param": n_flat, "memory_field": len(MEMORY_FIELDS)}
    group.create_variable("slot_step", ("slot",), np.int64, data=np.full(SLOTS, -1))
    for name in ("adam_m", "adam_v"):
        group.create_variable(
            name, ("slot", "flat_param"), np.float32, data=np.zeros((SLOTS, n_flat), np.float32)
        )
    group.create_variable(
        "memory", ("slot", "memory_field"), np.float64, data=np.zeros((SLOTS, len(MEMORY_FIELDS)))
    )
    group.attrs["memory_fields"] = " ".join(MEMORY_FIELDS)


def write_slot(
    resume: dict[str, Any], slot: int, step: int, checkpoint: Checkpoint, flush: Callable[[], None]
) -> None:
    """Write `checkpoint` for `step` into `slot` of the resume datasets. The slot is marked
    invalid and flushed first, so a kill mid-write never leaves a slot whose tag names new data."""
    resume["slot_step"][slot] = -1
    flush()
    resume["adam_m"][slot] = checkpoint.adam_m
    resume["adam_v"][slot] = checkpoint.adam_v
    resume["memory"][slot] = [
        checkpoint.best_val_acc,
        checkpoint.best_val_step,
        checkpoint.saturation_step,
    ]
    resume["slot_step"][slot] = step


def read_slot(resume: Any, slot: int) -> Checkpoint:
    """The Checkpoint in `slot` of a resume group (h5py or h5netcdf)."""
    best_val_acc, best_val_step, saturation_step = np.asarray(resume["memory"][slot])
    return Checkpoint(
        np.asarray(resume["adam_m"][slot]),
        np.asarray(resume["adam_v"][slot]),
        float(best_val_acc),
        int(best_val_step),
        int(saturation_step),
    )

"""Record snapshots from your own training loop into a mechgrok trajectory.

    with mechgrok.Recorder("runs/mine.h5", modulus=p) as rec:
        for step in range(steps):
            ...
            if step % 100 == 0:
                rec.snapshot(step, model, metrics={"train_loss": loss, "val_acc": acc})

The file has the trajectory schema (analyze and report read it unchanged), is written with
the same crash and disk-full safety as `mechgrok record` (trajectory_writer), and appears
under its name with the first snapshot. Parameters are mapped by
transformer_layouts.snapshot_curves (MLPs by layouts.curves_from_parameters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mechgrok.config import OPERATIONS
from mechgrok.errors import InvalidOptionError
from mechgrok.ingest.layouts import LayoutError
from mechgrok.ingest.transformer_layouts import model_shapes_of, snapshot_curves, transformer_attrs
from mechgrok.models.activations import check_activation
from mechgrok.store.outputs import check_output
from mechgrok.store.reader import METRIC_NAMES, RESERVED_ATTRS
from mechgrok.store.writer import TrajectoryWriter


class Recorder:
    """Streams snapshots of a two-hot MLP, or of Nanda et al.'s one-layer transformer (either
    layout: ingest.transformer_layouts), trained by your own code into `path`.

    modulus: p (inferred from the first snapshot's shapes when None). attrs: your run's
    settings, stored as file attributes (strings, numbers, numeric arrays). keys: which
    parameter plays which role where shapes cannot tell (see layouts). activation: the hidden
    layer's nonlinearity (activations.ACTIVATIONS), used to score the real weights. operation:
    the task (config.OPERATIONS), whose law the analysis reads. force:
    replace an existing trajectory at `path`. The width is read from the first snapshot."""

    def __init__(
        self,
        path: str | os.PathLike,
        modulus: int | None = None,
        *,
        activation: str = "relu",
        operation: str = "add",
        attrs: Mapping | None = None,
        keys: Mapping[str, str] | None = None,
        force: bool = False,
        compression: bool = False,
    ):
        self.path = Path(path)
        self.modulus = modulus
        self._attrs = {
            **dict(attrs or {}),
            "origin": "mechgrok.Recorder (the user's training loop)",
            "activation": check_activation(activation),
            "operation": operation,
        }
        if operation not in OPERATIONS:
            raise InvalidOptionError(
                f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}"
            )
        reserved = sorted({str(key) for key in (attrs or {})} & set(RESERVED_ATTRS))
        if reserved:
            raise InvalidOptionError(
                f"attrs may not set {', '.join(map(repr, reserved))}: mechgrok writes "
                "these itself (the modulus and width come from the snapshots)"
            )
        check_output(self.path, "trajectory", force=force)  # at once, not at the first snapshot
        self._keys = dict(keys or {})
        self._force, self._compression = force, compression
        self._writer: TrajectoryWriter | None = None
        self._shapes: dict[str, tuple] | None = None

    def snapshot(self, step: int, source, metrics: Mapping[str, float] | None = None) -> None:
        """Write the weights of `source` (an nn.Module, a state_dict, or a mapping with W_a,
        W_b, W_out in (neuron, token) layout, plus optional b_in, b_out) at `step` (optimizer
        updates so far; must increase). `metrics` use the trajectory's names (train_loss,
        train_acc, train_acc_true, val_loss, val_acc); those not given are stored as NaN."""
        unknown = set(metrics or {}) - set(METRIC_NAMES)
        if unknown:
            raise InvalidOptionError(
                f"unknown metric(s) {sorted(unknown)}; use {', '.join(METRIC_NAMES)}"
            )
        if not isinstance(step, (int, np.integer)) and not float(step).is_integer():
            raise InvalidOptionError(f"step {step!r} is not a whole number of optimizer updates")
        parameters = source.state_dict() if hasattr(source, "state_dict") else source
        curves, layout = snapshot_curves(
            parameters,
            self.modulus,
            self._keys,
            operation=self._attrs["operation"],
            activation=self._attrs["activation"],
        )
        shapes = {name: value.shape for name, value in curves.items()}
        if self._writer is None:
            H, p = curves["W_a"].shape
            if self.modulus is not None and p != self.modulus:
                raise InvalidOptionError(
                    f"{self.path}: modulus {self.modulus} was declared, but the snapshot's curves "
                    f"have {p} tokens (W_a {curves['W_a'].shape}, read as (neuron, token)); "
                    "nothing was written",
                    remedy="give W_a, W_b as (neuron, token) and W_out as (neuron, class), or fix the modulus",
                )
            self.modulus = p
            model_shapes = model_shapes_of(curves)
            self._writer = TrajectoryWriter.create_external(
                self.path,
                p,
                H,
                bias="b_in" in curves and "b_out" in curves,
                attrs={
                    **self._attrs,
                    **(transformer_attrs(model_shapes, layout) if model_shapes and layout else {}),
                },
                force=self._force,
                compression=self._compression,
                shapes=model_shapes,
            )
            self._shapes = shapes
        elif shapes != self._shapes:
            raise LayoutError(
                f"{self.path}: snapshot at step {step} has shapes {shapes}, the first had {self._shapes}"
            )
        values = {name: float(np.asarray(value)) for name, value in (metrics or {}).items()}
        self._writer.write_snapshot(int(step), curves, values)

    def close(self, completed: bool = True) -> None:
        """Close the file; `completed` marks the last snapshot as the run's final one."""
        if self._writer is None:
            return
        try:
            if completed:
                self._writer.finish("recording closed by the training loop")
        finally:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(
            completed=kind is None
        )  # after an error the file keeps its snapshots, unfinished

"""Full-batch AdamW training of Nanda et al.'s one-layer transformer (models.transformer),
one run at a time, with the same stopping rule, snapshot schedule, step convention and
snapshots as the MLP's ensembles (train.py). Gradients come from autograd through the
answer-position forward; the optimizer is the MLP's flat AdamW with the original code's
10-step linear learning-rate warm-up (update t uses lr x min((t - 1) / 10, 1))."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mechgrok.config import SATURATION_TRAIN_ACC, RunConfig
from mechgrok.models.layout import PARAM_NAMES, model_shapes
from mechgrok.models.tables import transformer_curves
from mechgrok.models.transformer import (
    WARMUP_STEPS,
    flatten,
    forward,
    init_params,
    unflatten,
)
from mechgrok.operations import group_view
from mechgrok.recording.schedule import SnapshotSchedule
from mechgrok.recording.stopping import StoppingMemory, is_check_step, stopping_decision
from mechgrok.recording.train import (
    ProgressCallback,
    Snapshot,
    adamw_step,
    correct_predictions,
    mean_cross_entropy,
    write_run_snapshot,
)
from mechgrok.store.slots import SavedState
from mechgrok.store.writer import TrajectoryWriter
from mechgrok.task import make_task

EVAL_BLOCK = 4096  # validation pairs per forward pass


@dataclass
class TransformerState:
    """A transformer run's state at `step`: flat parameters and AdamW moments (PARAM_NAMES
    order, models.transformer.flatten) and the stopping rule's memory."""

    step: int
    params: torch.Tensor
    adam_m: torch.Tensor
    adam_v: torch.Tensor
    best_val_acc: float = -1.0
    best_val_step: int = 0
    saturation_step: int = -1


def initial_transformer_state(config: RunConfig) -> TransformerState:
    flat = flatten(
        init_params(config.modulus, config.d_model, config.heads, config.width, config.seed)
    )
    return TransformerState(0, flat, torch.zeros_like(flat), torch.zeros_like(flat))


def transformer_state_from_saved(saved: SavedState, config: RunConfig) -> TransformerState:
    """The state a transformer trajectory's latest checkpoint continues from."""
    flat = np.concatenate(
        [np.asarray(saved.weights[name], np.float32).ravel() for name in PARAM_NAMES]
    )
    cp = saved.checkpoint
    return TransformerState(
        saved.step,
        torch.from_numpy(flat),
        torch.from_numpy(cp.adam_m.copy()),
        torch.from_numpy(cp.adam_v.copy()),
        cp.best_val_acc,
        cp.best_val_step,
        cp.saturation_step,
    )


def append_transformer_snapshot(
    writer: TrajectoryWriter, snapshot: Snapshot, checkpoint: bool
) -> None:
    """Write one transformer snapshot: its parameters, and the effective curves and table
    variables read from its activation table (models.tables.transformer_curves)."""
    config = writer.config
    assert config is not None  # mechgrok's own runs know their options
    order = group_view(config.operation, config.modulus).order
    curves: dict[str, np.ndarray] = dict(
        transformer_curves(snapshot.weights, order, config.operation)
    )
    curves.update({f"model/{name}": value for name, value in snapshot.weights.items()})
    state = snapshot.state
    moments = (state.adam_m.numpy(), state.adam_v.numpy()) if checkpoint else None
    write_run_snapshot(writer, snapshot, curves, moments)


def _metrics(
    params: dict[str, torch.Tensor], logits: torch.Tensor, task_tensors: dict[str, torch.Tensor]
) -> dict[str, float]:
    t = task_tensors
    val_loss, val_correct = torch.zeros(()), torch.zeros(())
    n_val = t["val_a"].shape[0]
    for start in range(0, n_val, EVAL_BLOCK):
        part = slice(start, start + EVAL_BLOCK)
        val_logits = forward(params, t["val_a"][part], t["val_b"][part])[None]
        labels = t["val_label"][part][None]
        val_loss += mean_cross_entropy(val_logits, labels)[0] * labels.shape[1]
        val_correct += correct_predictions(val_logits, labels).sum()
    return {
        "train_loss": float(mean_cross_entropy(logits, t["train_label"])[0]),
        "train_acc": float(correct_predictions(logits, t["train_label"]).mean()),
        "train_acc_true": float(correct_predictions(logits, t["train_label_true"]).mean()),
        "val_loss": float(val_loss / n_val),
        "val_acc": float(val_correct / n_val),
    }


def train_transformer(
    config: RunConfig,
    state: TransformerState | None = None,
    on_step: ProgressCallback | None = None,
) -> Iterator[Snapshot]:
    """Train one transformer run, yielding its snapshots in step order (run index 0); the
    stopping rule and schedule are the MLP's (train.train_ensemble). `state` continues a
    run (resume); `on_step` as in train_ensemble."""
    task = make_task(config.modulus, config.train_frac, config.noise, config.seed, config.operation)
    device = torch.device(config.device)
    tensors = {
        name: torch.as_tensor(getattr(task, name), device=device)
        for name in (
            "train_a",
            "train_b",
            "train_label",
            "train_label_true",
            "val_a",
            "val_b",
            "val_label",
        )
    }
    batch_view = {
        name: value[None] for name, value in tensors.items() if name.startswith("train_l")
    }
    state = state if state is not None else initial_transformer_state(config)
    shapes = model_shapes(config)
    assert shapes is not None
    flat = state.params.to(device).clone().requires_grad_(True)
    m, v = state.adam_m.to(device).clone(), state.adam_v.to(device).clone()
    memory = StoppingMemory(state.best_val_acc, state.best_val_step, state.saturation_step)
    schedule = SnapshotSchedule(config)
    step = state.step
    beta1, beta2 = config.betas
    latest: dict[int, dict[str, float]] = {}
    while True:
        params = unflatten(flat, shapes)
        logits = forward(params, tensors["train_a"], tensors["train_b"])
        loss = torch.nn.functional.cross_entropy(logits, tensors["train_label"])
        (grad,) = torch.autograd.grad(loss, flat)
        with torch.no_grad():
            scheduled, check = step in schedule, is_check_step(config, step)
            unsaturated = memory.saturation_step < 0
            batched = logits.detach()[None]
            train_acc = (
                float(correct_predictions(batched, batch_view["train_label"]).mean())
                if scheduled or check or unsaturated
                else None
            )
            saturated_now = (
                unsaturated and train_acc is not None and train_acc >= SATURATION_TRAIN_ACC
            )
            metrics = (
                _metrics(params, batched, {**tensors, **batch_view})
                if scheduled or check or saturated_now
                else None
            )
            stop_reason = ""
            if saturated_now:
                memory = dataclasses.replace(memory, saturation_step=step)
            if check:
                assert metrics is not None
                stop_reason, memory = stopping_decision(config, memory, step, metrics["val_acc"])
            if scheduled or saturated_now or stop_reason:
                assert metrics is not None
                snapshot_state = TransformerState(
                    step,
                    flat.detach().to("cpu", copy=True),
                    m.to("cpu", copy=True),
                    v.to("cpu", copy=True),
                    **dataclasses.asdict(memory),
                )
                weights = unflatten(snapshot_state.params, shapes)
                yield Snapshot(
                    run=0,
                    step=step,
                    weights={name: weights[name].numpy() for name in PARAM_NAMES},
                    metrics=metrics,
                    state=snapshot_state,
                    is_saturation=saturated_now,
                    is_final=bool(stop_reason),
                    stop_reason=stop_reason,
                )
            if metrics is not None:
                latest[0] = {name: metrics[name] for name in ("train_loss", "train_acc", "val_acc")}
            if on_step is not None:
                on_step({0: step}, latest)
            if stop_reason:
                return
            step += 1
            lr = config.lr * min((step - 1) / WARMUP_STEPS, 1.0)
            adamw_step(
                flat,
                m,
                v,
                grad,
                step_size=lr / (1 - beta1**step),
                bias_correction2_sqrt=(1 - beta2**step) ** 0.5,
                decay=1 - lr * config.weight_decay,
                new_m=1 - beta1,
                beta2=beta2,
                new_v=1 - beta2,
            )

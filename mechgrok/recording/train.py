"""Full-batch AdamW training of an ensemble of MLPs, with the paper's stopping rule and a
snapshot schedule. Yields snapshots; knows nothing of files.

Step convention: the snapshot at step t holds the weights after t optimizer updates and the
metrics of exactly those weights (training metrics come from the forward pass of update t+1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mechgrok.config import SATURATION_TRAIN_ACC, RunConfig
from mechgrok.models.mlp import (
    PARAM_NAMES,
    MLPParams,
    activate,
    activation_backward,
    forward,
    hidden_preactivation,
    init_params,
    pair_rows,
)
from mechgrok.recording.schedule import SnapshotSchedule
from mechgrok.recording.stopping import StoppingMemory, is_check_step, stopping_decision
from mechgrok.store.slots import Checkpoint, SavedState
from mechgrok.store.writer import TrajectoryWriter
from mechgrok.task import TaskSplit, make_task

# On a CPU an ensemble's step runs over a few models at a time, so that a group's hidden
# activations (models x training pairs x width float32) stay near this size and in cache: a
# 19-run ensemble at the paper's setting ran 96.5 model-steps/s as one group and 214 in groups
# of two (benchmarks/README.md, Session 6). On a GPU the whole ensemble is one group.
CPU_GROUP_ACTIVATION_BYTES = 6 * 2**20
ADAM_EPS = 1e-8


@dataclass
class RunState:
    """Everything needed to continue a run from `step` exactly: its weights, AdamW moments
    (`adam_m`, `adam_v`, same shapes as the weights, M = 1) and the stopping rule's memory.
    Training is full batch with no dropout, so no random state is consumed after init."""

    step: int
    params: MLPParams
    adam_m: MLPParams
    adam_v: MLPParams
    best_val_acc: float = -1.0
    best_val_step: int = 0
    saturation_step: int = -1


def initial_state(config: RunConfig) -> RunState:
    params = init_params(config.modulus, config.width, config.seed, config.bias)
    zeros = MLPParams(*(torch.zeros_like(t) for t in params.tensors()))
    return RunState(0, params, zeros, MLPParams(*(torch.zeros_like(t) for t in params.tensors())))


@dataclass
class Snapshot:
    """One run's weights and metrics at one step. `weights` maps PARAM_NAMES to numpy
    arrays without the model dimension; `is_saturation`/`is_final` mark the special ones."""

    run: int
    step: int
    weights: dict[str, np.ndarray]
    metrics: dict[str, float]
    state: Any  # RunState (MLP ensembles) or recording.transformer.TransformerState
    is_saturation: bool = False
    is_final: bool = False
    stop_reason: str = ""


def state_from_saved(saved: SavedState, config: RunConfig) -> RunState:
    """The RunState a trajectory's latest checkpoint (store.slots.SavedState) continues from."""
    w = saved.weights
    tensors = {
        "W_a": w["W_a"].T,
        "W_b": w["W_b"].T,
        "W_out": w["W_out"],
        "b_in": w["b_in"].reshape(1, -1),
        "b_out": w["b_out"].reshape(1, -1),
    }
    params = MLPParams(
        *(
            torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32))[None]
            for name in PARAM_NAMES
        )
    )
    cp = saved.checkpoint

    def moments(flat: np.ndarray) -> MLPParams:
        return MLPParams.from_flat(
            torch.from_numpy(flat[None].copy()), config.modulus, config.width
        )

    return RunState(
        saved.step,
        params,
        moments(cp.adam_m),
        moments(cp.adam_v),
        cp.best_val_acc,
        cp.best_val_step,
        cp.saturation_step,
    )


def append_snapshot(writer: TrajectoryWriter, snapshot: Snapshot, checkpoint: bool) -> None:
    """Write one snapshot of a mechgrok run (and, with `checkpoint`, its optimizer state).
    Training keeps W_a, W_b as (token, neuron); the file stores (neuron, token)."""
    w = snapshot.weights
    curves = {"W_a": w["W_a"].T, "W_b": w["W_b"].T, "W_out": w["W_out"]}
    if writer.bias:
        curves.update(b_in=w["b_in"].reshape(-1), b_out=w["b_out"].reshape(-1))
    state = snapshot.state
    moments = (
        (state.adam_m.flat()[0].numpy(), state.adam_v.flat()[0].numpy()) if checkpoint else None
    )
    write_run_snapshot(writer, snapshot, curves, moments)


def write_run_snapshot(
    writer: TrajectoryWriter,
    snapshot: Snapshot,
    curves: dict[str, np.ndarray],
    moments: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Write a snapshot of one of mechgrok's own runs (any architecture: `curves` are what its
    file stores), with an optimizer checkpoint when `moments` (flat AdamW m, v) are given."""
    state = snapshot.state
    saved = (
        Checkpoint(*moments, state.best_val_acc, state.best_val_step, state.saturation_step)
        if moments is not None
        else None
    )
    writer.write_snapshot(
        snapshot.step,
        curves,
        snapshot.metrics,
        checkpoint=saved,
        saturation=snapshot.is_saturation,
        final_reason=snapshot.stop_reason if snapshot.is_final else None,
    )


_PER_MODEL_TENSORS = (
    "flat_params",
    "flat_m",
    "flat_v",
    "train_a",
    "train_b",
    "train_label",
    "train_label_true",
    "val_a",
    "val_b",
    "val_label",
)


@dataclass
class _Batch:
    """Device tensors of the active runs, stacked on the model dimension. Weights and AdamW
    moments live in flat (M, P) buffers so the optimizer is a handful of whole-buffer ops;
    `params` holds named views into `flat_params`."""

    runs: list[int]
    modulus: int
    width: int
    activation: str
    precision: str
    flat_params: torch.Tensor
    flat_m: torch.Tensor
    flat_v: torch.Tensor
    train_a: torch.Tensor
    train_b: torch.Tensor
    train_label: torch.Tensor
    train_label_true: torch.Tensor
    val_a: torch.Tensor
    val_b: torch.Tensor
    val_label: torch.Tensor
    hyper: dict[str, torch.Tensor] = field(default_factory=dict)

    # made once per batch of runs (a run leaving makes a new batch), not once per step
    @functools.cached_property
    def minus_ones(self) -> torch.Tensor:
        return torch.full(self.train_label[..., None].shape, -1.0, device=self.train_label.device)

    @functools.cached_property
    def train_rows(self) -> torch.Tensor:
        """The training pairs' rows in the input table, as pair_rows gives them."""
        return pair_rows(self.train_a, self.train_b, self.modulus)

    @functools.cached_property
    def train_rows_by_token(self) -> tuple[torch.Tensor, torch.Tensor]:
        """train_rows' two columns (token a's rows, token b's rows), each contiguous."""
        return self.train_rows[:, 0].contiguous(), self.train_rows[:, 1].contiguous()

    @functools.cached_property
    def adamw_factors(self) -> dict[str, torch.Tensor]:
        """(M, 1) factors of the AdamW update that stay fixed while the batch does."""
        h = self.hyper
        return {
            "decay": 1 - h["lr"] * h["weight_decay"],
            "new_m": 1 - h["beta1"],
            "new_v": 1 - h["beta2"],
        }

    @functools.cached_property
    def params(self) -> MLPParams:
        """Named views into flat_params (they follow its in-place updates)."""
        return MLPParams.from_flat(self.flat_params, self.modulus, self.width)

    @functools.cached_property
    def groups(self) -> list[_Batch]:
        """The batch as consecutive groups of models that share one pass through the step
        (views into this batch's tensors; see CPU_GROUP_ACTIVATION_BYTES)."""
        M, n_pairs = self.train_a.shape
        if self.flat_params.device.type != "cpu":
            return [self]
        size = max(1, CPU_GROUP_ACTIVATION_BYTES // (n_pairs * self.width * 4))
        if size >= M:
            return [self]
        return [self._rows(start, min(start + size, M)) for start in range(0, M, size)]

    def _rows(self, start: int, stop: int) -> _Batch:
        """Models start..stop-1 as a batch of views (updates to this batch's buffers show)."""
        return dataclasses.replace(
            self,
            runs=self.runs[start:stop],
            hyper={k: v[start:stop] for k, v in self.hyper.items()},
            **{name: getattr(self, name)[start:stop] for name in _PER_MODEL_TENSORS},
        )

    def keep(self, rows: list[int]) -> _Batch:
        index = torch.tensor(rows, dtype=torch.long, device=self.train_a.device)
        return _Batch(
            runs=[self.runs[r] for r in rows],
            modulus=self.modulus,
            width=self.width,
            activation=self.activation,
            precision=self.precision,
            **{name: getattr(self, name)[index] for name in _PER_MODEL_TENSORS},
            hyper={name: value[index] for name, value in self.hyper.items()},
        )


def _stack_batch(
    configs: list[RunConfig], tasks: list[TaskSplit], states: list[RunState], device: torch.device
) -> _Batch:
    def stack(values: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.stack(values), device=device)

    def per_model(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)[:, None]

    def flat(which: str) -> torch.Tensor:
        return torch.cat([getattr(s, which).flat() for s in states], 0).to(device)

    return _Batch(
        runs=list(range(len(configs))),
        modulus=configs[0].modulus,
        width=configs[0].width,
        activation=configs[0].activation,
        precision=configs[0].precision,
        flat_params=flat("params"),
        flat_m=flat("adam_m"),
        flat_v=flat("adam_v"),
        train_a=stack([t.train_a for t in tasks]),
        train_b=stack([t.train_b for t in tasks]),
        train_label=stack([t.train_label for t in tasks]),
        train_label_true=stack([t.train_label_true for t in tasks]),
        val_a=stack([t.val_a for t in tasks]),
        val_b=stack([t.val_b for t in tasks]),
        val_label=stack([t.val_label for t in tasks]),
        hyper={
            "lr": per_model([c.lr for c in configs]),
            "weight_decay": per_model([c.weight_decay for c in configs]),
            "beta1": per_model([c.betas[0] for c in configs]),
            "beta2": per_model([c.betas[1] for c in configs]),
        },
    )


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, N) credit per pair: 1 when the label's logit is the largest, 1/t when it ties with
    t - 1 other classes (expected accuracy under random tie-breaking, so a collapsed model
    with equal logits scores chance, 1/p, not 0 or 1), else 0."""
    is_top = logits == logits.amax(-1, keepdim=True)
    return is_top.gather(-1, labels[..., None]).squeeze(-1) / is_top.sum(-1)


def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-model mean cross-entropy (M,) in nats of (M, N, p) logits against (M, N) labels."""
    return -torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1).mean(1)


def evaluate(
    params: MLPParams,
    a: torch.Tensor,
    b: torch.Tensor,
    labels: torch.Tensor,
    block: int = 4096,
    activation: str = "relu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss (M,) in nats and accuracy (M,) of each model on its own (M, N) pairs,
    `block` pairs at a time. Blocks the size of the training set reuse the training step's
    freed buffers; one large allocation per call costs more here than the matmul."""
    p, n = params.W_a.shape[1], labels.shape[1]
    loss_sum = torch.zeros(labels.shape[0], device=labels.device)
    n_correct = torch.zeros(labels.shape[0], device=labels.device)
    for start in range(0, n, block):
        part = slice(start, start + block)
        logits = forward(params, pair_rows(a[:, part], b[:, part], p), activation)
        loss_sum += mean_cross_entropy(logits, labels[:, part]) * logits.shape[1]
        n_correct += correct_predictions(logits, labels[:, part]).sum(1)
    return loss_sum / n, n_correct / n


def _bmm(x: torch.Tensor, y: torch.Tensor, precision: str) -> torch.Tensor:
    """Batched x @ y as float32: in float32, or (precision "bf16") from bfloat16 operands,
    accumulated in float32 by the GEMM and returned rounded to bfloat16, then widened. The
    three GEMMs of a training step go through here; everything else stays float32."""
    if precision == "bf16":
        return torch.bmm(x.to(torch.bfloat16), y.to(torch.bfloat16)).float()
    return torch.bmm(x, y)


def _forward_backward(batch: _Batch, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass on the training set and a hand-written backward pass of the mean
    cross-entropy (no autograd graph). Returns the logits (M, N, p), from which metrics are
    read only when needed, and the gradient as an (M, P) buffer laid out like `flat_params`."""
    params = batch.params
    M, p, H = params.W_a.shape
    pre = hidden_preactivation(params, batch.train_rows)
    hidden = activate(batch.activation, pre)
    logits = _bmm(hidden, params.W_out, batch.precision).add_(params.b_out)

    n_pairs = batch.train_label.shape[1]
    d_logits = torch.softmax(logits, -1)
    d_logits.scatter_add_(-1, batch.train_label[..., None], batch.minus_ones)
    d_logits.mul_(1.0 / n_pairs)
    # as (d_logits^T hidden)^T: the same sums in the same order, and a faster GEMM on CPU
    grad_W_out = _bmm(d_logits.transpose(1, 2), hidden, batch.precision).transpose(1, 2)
    d_pre = activation_backward(
        batch.activation, _bmm(d_logits, params.W_out.transpose(1, 2), batch.precision), pre, hidden
    )
    # the input table's gradient: each pair adds its d_pre to its a row and its b row (index_add
    # on CPU, where advanced-index assignment accumulates serially)
    flat_d_pre = d_pre.view(M * n_pairs, H)
    grad_table = torch.zeros(M * 2 * p, H, device=hidden.device)
    for rows in batch.train_rows_by_token:
        grad_table.index_add_(0, rows, flat_d_pre)
    grad_W_in = grad_table.view(M, 2 * p, H)
    # every pair adds its d_pre to exactly one a row and to b_in, so grad b_in = sum of grad W_a rows
    grad_b_in = (
        grad_W_in[:, :p].sum(1, keepdim=True)
        if bias
        else torch.zeros(M, 1, H, device=hidden.device)
    )
    grad_b_out = (
        d_logits.sum(1, keepdim=True) if bias else torch.zeros(M, 1, p, device=hidden.device)
    )
    return logits, MLPParams(
        grad_W_in[:, :p], grad_W_in[:, p:], grad_b_in, grad_W_out, grad_b_out
    ).flat()


def _adamw_update(
    batch: _Batch, grad: torch.Tensor, step_counts: list[int], configs: list[RunConfig]
) -> None:
    """torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments, eps 1e-8)
    on the (M, P) buffers, with per-model lr, weight decay and betas. `step_counts` are the
    active models' update numbers, counted from 1."""
    h = batch.hyper
    corrections = torch.tensor(
        [
            [c.lr / (1 - c.betas[0] ** t), math.sqrt(1 - c.betas[1] ** t)]
            for c, t in zip((configs[run] for run in batch.runs), step_counts)
        ],
        dtype=torch.float32,
        device=grad.device,
    )
    factors = batch.adamw_factors
    adamw_step(
        batch.flat_params,
        batch.flat_m,
        batch.flat_v,
        grad,
        step_size=corrections[:, :1],
        bias_correction2_sqrt=corrections[:, 1:],
        decay=factors["decay"],
        new_m=factors["new_m"],
        beta2=h["beta2"],
        new_v=factors["new_v"],
    )


Factor = torch.Tensor | float


def adamw_step(
    params: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    step_size: Factor,
    bias_correction2_sqrt: Factor,
    decay: Factor,
    new_m: Factor,
    beta2: Factor,
    new_v: Factor,
) -> None:
    """One torch.optim.AdamW update in place: params *= decay (1 - lr x weight decay),
    m = lerp(m, grad, 1 - beta1), v = beta2 v + (1 - beta2) grad^2, then params -=
    step_size m / (sqrt(v) / bias_correction2_sqrt + eps), step_size = lr / (1 - beta1^t).
    Factors are numbers or tensors that broadcast (per model: (M, 1))."""
    params.mul_(decay)
    m.lerp_(grad, new_m)
    v.mul_(beta2).addcmul_(grad, grad * new_v)
    denom = v.sqrt().div_(bias_correction2_sqrt).add_(ADAM_EPS)
    params.sub_(m.div(denom).mul_(step_size))


def _state_of(batch: _Batch, row: int, step: int, memory: StoppingMemory) -> RunState:
    def one(flat: torch.Tensor) -> MLPParams:
        return MLPParams.from_flat(
            flat[row : row + 1].to("cpu", copy=True), batch.modulus, batch.width
        )

    return RunState(
        step,
        one(batch.flat_params),
        one(batch.flat_m),
        one(batch.flat_v),
        **dataclasses.asdict(memory),
    )


@dataclass(frozen=True)
class StepMetrics:
    """Every metric of a snapshot, for each active run (lists over the batch's rows): mean
    cross-entropy (nats) and accuracy on the training labels used, accuracy on the true
    training labels, and loss and accuracy on the validation pairs. Always complete."""

    train_loss: list[float]
    train_acc: list[float]
    train_acc_true: list[float]
    val_loss: list[float]
    val_acc: list[float]

    @classmethod
    def measure(
        cls, groups: list[_Batch], logits: list[torch.Tensor], train_acc: list[float]
    ) -> StepMetrics:
        """From the training step's logits of each group of models (train_acc already read
        from them) and one validation pass, group by group."""
        columns: dict[str, list[float]] = {
            "train_loss": [],
            "train_acc_true": [],
            "val_loss": [],
            "val_acc": [],
        }
        for group, group_logits in zip(groups, logits):
            val_loss, val_acc = evaluate(
                group.params,
                group.val_a,
                group.val_b,
                group.val_label,
                block=group.train_a.shape[1],
                activation=group.activation,
            )
            columns["train_loss"] += mean_cross_entropy(group_logits, group.train_label).tolist()
            columns["train_acc_true"] += (
                correct_predictions(group_logits, group.train_label_true).mean(1).tolist()
            )
            columns["val_loss"] += val_loss.tolist()
            columns["val_acc"] += val_acc.tolist()
        return cls(train_acc=train_acc, **columns)

    def of(self, row: int) -> dict[str, float]:
        return {field.name: getattr(self, field.name)[row] for field in dataclasses.fields(self)}


ProgressCallback = Callable[[dict[int, int], dict[int, dict[str, float]]], None]


def train_ensemble(
    configs: list[RunConfig],
    states: list[RunState] | None = None,
    on_step: ProgressCallback | None = None,
) -> Iterator[Snapshot]:
    """Train runs that share modulus, width, bias, training-set size and device as one
    batched ensemble, yielding their snapshots in step order. A run leaves the batch when it
    stops: validation accuracy >= stop_val_acc, no gain of 1e-4 in best validation accuracy
    for `patience` steps (both checked every `eval_every` steps), or `steps` reached.
    `states` continues runs from earlier RunStates (resume); None starts them fresh.
    `on_step(steps, latest)` is called once per step with each active run's step and the
    metrics of its latest evaluation."""
    if not configs:
        return
    shared = {(c.modulus, c.width, c.bias, c.device, c.activation, c.precision) for c in configs}
    if len(shared) != 1:
        raise ValueError(
            "runs in one ensemble must share modulus, width, bias, device, activation and precision"
        )
    tasks = [make_task(c.modulus, c.train_frac, c.noise, c.seed, c.operation) for c in configs]
    if len({t.train_a.size for t in tasks}) != 1:
        raise ValueError("runs in one ensemble must have the same number of training pairs")
    states = states if states is not None else [initial_state(c) for c in configs]
    device = torch.device(configs[0].device)
    batch = _stack_batch(configs, tasks, states, device)
    schedules = [SnapshotSchedule(c) for c in configs]
    memory = [StoppingMemory(s.best_val_acc, s.best_val_step, s.saturation_step) for s in states]
    steps = [s.step for s in states]
    bias = configs[0].bias
    latest: dict[int, dict[str, float]] = {}

    with torch.no_grad():
        while batch.runs:
            logits, group_grads = zip(*(_forward_backward(group, bias) for group in batch.groups))
            grads = group_grads[0] if len(group_grads) == 1 else torch.cat(group_grads)
            scheduled = [steps[run] in schedules[run] for run in batch.runs]
            checks = [is_check_step(configs[run], steps[run]) for run in batch.runs]
            unsaturated = [memory[run].saturation_step < 0 for run in batch.runs]
            # metrics cost passes over the logits and the validation set: read them only where a
            # decision (saturation, stopping) or a snapshot needs them
            train_acc = (
                [
                    acc
                    for group, group_logits in zip(batch.groups, logits)
                    for acc in correct_predictions(group_logits, group.train_label).mean(1).tolist()
                ]
                if any(scheduled) or any(checks) or any(unsaturated)
                else None
            )
            saturated_now = [
                unsaturated[row] and train_acc[row] >= SATURATION_TRAIN_ACC  # type: ignore[index]
                for row in range(len(batch.runs))
            ]
            metrics = (
                StepMetrics.measure(batch.groups, list(logits), train_acc)  # type: ignore[arg-type]
                if any(scheduled) or any(checks) or any(saturated_now)
                else None
            )
            leaving = []
            for row, run in enumerate(batch.runs):
                step, stop_reason = steps[run], ""
                if saturated_now[row]:
                    memory[run] = dataclasses.replace(memory[run], saturation_step=step)
                if checks[row]:
                    stop_reason, memory[run] = stopping_decision(
                        configs[run],
                        memory[run],
                        step,
                        metrics.val_acc[row],  # type: ignore[union-attr]
                    )
                if scheduled[row] or saturated_now[row] or stop_reason:
                    state = _state_of(batch, row, step, memory[run])
                    yield Snapshot(
                        run=run,
                        step=step,
                        weights=dict(
                            zip(PARAM_NAMES, (t[0].numpy() for t in state.params.tensors()))
                        ),
                        metrics=metrics.of(row),  # type: ignore[union-attr]
                        state=state,
                        is_saturation=saturated_now[row],
                        is_final=bool(stop_reason),
                        stop_reason=stop_reason,
                    )
                if metrics is not None and (checks[row] or scheduled[row] or saturated_now[row]):
                    latest[run] = dict(
                        train_loss=metrics.train_loss[row],
                        train_acc=metrics.train_acc[row],
                        val_acc=metrics.val_acc[row],
                    )
                if stop_reason:
                    leaving.append(row)
            if on_step is not None:
                on_step({run: steps[run] for run in batch.runs}, latest)
            if leaving:
                rows = [r for r in range(len(batch.runs)) if r not in leaving]
                grads = grads[rows]
                batch = batch.keep(rows)
                if not batch.runs:
                    break
            for run in batch.runs:
                steps[run] += 1
            _adamw_update(batch, grads, [steps[run] for run in batch.runs], configs)

"""The paper's stopping rule, in one place: training applies it step by step, and the
completeness and resume checks ask it about what a trajectory already holds.

The rule (checked every `eval_every` steps and at the step cap): stop when validation
accuracy reaches `stop_val_acc`; or when the best validation accuracy has not gained
PATIENCE_MIN_GAIN for `patience` steps; or at the step cap, in that order. With
stop_val_acc None (`--stop-val-acc off`) only the step cap stops a run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mechgrok.config import RunConfig
from mechgrok.store.reader import RecordedProgress

PATIENCE_MIN_GAIN = (
    1e-4  # the paper: stop when best val acc has not improved by this for `patience` steps
)


@dataclass(frozen=True)
class StoppingMemory:
    """What the stopping rule remembers of one run: the best validation accuracy (gains
    below PATIENCE_MIN_GAIN do not count), the step it was reached, and the saturation step
    (first step with training accuracy >= SATURATION_TRAIN_ACC; -1 before)."""

    best_val_acc: float = -1.0
    best_val_step: int = 0
    saturation_step: int = -1


def is_check_step(config: RunConfig, step: int) -> bool:
    """The stopping rule is checked every `eval_every` steps and at the step cap."""
    return step % config.eval_every == 0 or step >= config.steps


def reaches_target(config: RunConfig, val_acc: float) -> bool:
    """Validation accuracy at or above the stopping threshold (never, with the rule off)."""
    return config.stop_val_acc is not None and val_acc >= config.stop_val_acc


def patience_stop_step(config: RunConfig, best_val_step: int) -> float:
    """The first check step at which patience runs out for a run whose best validation
    accuracy was reached at `best_val_step` and not bettered since (inf with the rule off)."""
    if config.stop_val_acc is None:
        return math.inf
    due = best_val_step + config.patience
    return -(-due // config.eval_every) * config.eval_every


def stopping_decision(
    config: RunConfig, memory: StoppingMemory, step: int, val_acc: float
) -> tuple[str, StoppingMemory]:
    """The rule at a check step: (stop reason or "", updated memory)."""
    if val_acc >= memory.best_val_acc + PATIENCE_MIN_GAIN:
        memory = dataclasses.replace(memory, best_val_acc=val_acc, best_val_step=step)
    if reaches_target(config, val_acc):
        return f"validation accuracy {val_acc:.4f} >= {config.stop_val_acc}", memory
    if config.stop_val_acc is not None and step - memory.best_val_step >= config.patience:
        return f"no validation gain for {config.patience} steps", memory
    if step >= config.steps:
        return f"step cap {config.steps} reached", memory
    return "", memory


def is_complete(progress: RecordedProgress, config: RunConfig | None = None) -> bool:
    """True when a trajectory's recording has ended (it holds its final snapshot) and,
    given `config`, that config's step cap and stopping rule would have ended it too."""
    final = progress.final_step
    if final < 0 or config is None:
        return final >= 0
    frozen = StoppingMemory(best_val_acc=math.inf, best_val_step=progress.best_val_step)
    reason, _ = stopping_decision(config, frozen, final, float(progress.val_acc[-1]))
    return bool(reason)


def earliest_stop_on_file(config: RunConfig, progress: RecordedProgress) -> tuple[int, str] | None:
    """(step, option) of the earliest check before the last snapshot on file at which
    `config`'s rule would have stopped the run, as far as the file can tell: a lower step
    cap, a validation threshold a committed snapshot at a check reached, or patience that
    ran out before the latest checkpoint. None when the rule lets the run go on."""
    last = progress.last_step
    if config.steps < last:
        return config.steps, "steps"
    for step, val_acc in zip(progress.steps.tolist(), progress.val_acc.tolist()):
        if step < last and step % config.eval_every == 0 and reaches_target(config, val_acc):
            return step, "stop_val_acc"
    # checks between snapshots: the stopping memory holds the best accuracy any check reached
    # (gains under PATIENCE_MIN_GAIN aside), and the step it was reached at
    if 0 <= progress.best_val_step < last and reaches_target(config, progress.best_val_acc):
        return progress.best_val_step, "stop_val_acc"
    if progress.best_val_step >= 0:
        stop = patience_stop_step(config, progress.best_val_step)
        if stop <= progress.checkpoint_step and stop < last:
            return int(stop), "patience"
    return None

"""A training run's configuration (the paper's experiment by default) and its validation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunConfig:
    """One training run. Defaults are the paper's experiment (paper.md, 'The paper's setting').
    `every` > 0 snapshots every `every` steps; `every` = 0 uses the log schedule with
    `per_decade` snapshots per decade of steps (every step while that is denser)."""

    modulus: int = 97
    width: int = 256
    train_frac: float = 0.3
    noise: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    seed: int = 0
    steps: int = 500_000
    bias: bool = True
    stop_val_acc: float = 0.999
    patience: int = 50_000
    eval_every: int = 100
    every: int = 0
    per_decade: int = 100
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks = [
            (self.modulus >= 3, f"modulus must be >= 3, got {self.modulus}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (0.0 < self.train_frac < 1.0, f"train_frac must lie in (0, 1), got {self.train_frac}"),
            (0.0 <= self.noise < 1.0, f"noise must lie in [0, 1), got {self.noise}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
             f"betas must be two numbers in [0, 1), got {self.betas}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (0.0 < self.stop_val_acc <= 1.0 + 1e-12, f"stop_val_acc must lie in (0, 1], got {self.stop_val_acc}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.every >= 0, f"every must be >= 1 (or 0 for the log schedule), got {self.every}"),
            (self.per_decade >= 1, f"per_decade must be >= 1, got {self.per_decade}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_device(self.device)


def check_device(device: str) -> None:
    """Raise ValueError unless torch can place tensors on `device` here."""
    if device == "cpu":
        return
    import torch  # imported only here so that the CLI's --help does not wait for torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use cpu or cuda")

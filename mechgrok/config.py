"""A training run's configuration (the paper's experiment by default) and its validation.

Every option's constraint is declared once, in OPTION_LIMITS; RunConfig, the CLI's click
types and the trajectory reader all check against it. Pure Python: no torch, no I/O.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from mechgrok.errors import InvalidOptionError, ResourceError

MIN_MODULUS = (
    5  # p = 3 has one frequency (k = 1), so periodicity and dominant frequency say nothing
)
ACTIVATIONS = (
    "relu",
    "gelu",
    "silu",
    "quadratic",
    "identity",
)  # hidden nonlinearities mechgrok trains and scores
# the training GEMMs' operands: fp32 (the paper's), or bf16 with fp32 master weights, softmax and AdamW state
PRECISIONS = ("fp32", "bf16")
OPERATIONS = (
    "add",
    "sub",
    "mul",
    "div",
)  # (a + b), (a - b), (a * b), (a * b^-1) mod p; mul and div over 1..p-1 (operations.py)
SATURATION_TRAIN_ACC = (
    0.99  # the paper's saturation checkpoint: first step with training accuracy >= this
)


@dataclass(frozen=True)
class Limit:
    """Allowed values of one numeric option: low/high bounds (None: unbounded), open or
    closed at each end. Floats must be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        def number(value: float) -> str:
            return str(int(value)) if float(value).is_integer() else f"{value:g}"

        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {number(self.low)}"
        high = "" if self.high is None else f"{'<' if self.high_open else '<='} {number(self.high)}"
        return " and ".join(part for part in (low, high) if part)

    def admits(self, value: float) -> bool:
        """Integers are compared exactly (float(2^63 - 1) rounds up past the seed's bound)."""
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


# The integers' upper bounds are what a run can use: more steps than any run here could
# train, more snapshots per decade than there are steps to snapshot (10^5 per decade already
# snapshots every step up to ~43,000), seeds numpy and torch both accept.
MAX_STEPS = 10**9
RUN_LIMITS: dict[str, Limit] = {
    "modulus": Limit(MIN_MODULUS, 100_000),
    "width": Limit(1, 10**7),
    "train_frac": Limit(0, 1, low_open=True, high_open=True),
    "noise": Limit(0, 1, high_open=True),
    "lr": Limit(0, 10, low_open=True),
    "weight_decay": Limit(0, 1e3),
    "seed": Limit(0, 2**63 - 1),
    "steps": Limit(0, MAX_STEPS),
    "stop_val_acc": Limit(0, 1, low_open=True),
    "patience": Limit(1, MAX_STEPS),
    "eval_every": Limit(1, MAX_STEPS),
    "every": Limit(0, MAX_STEPS),
    "per_decade": Limit(1, 100_000),
    "d_model": Limit(1, 65_536),
    "heads": Limit(1, 1024),
}
BETA_LIMIT = Limit(0, 1, high_open=True)
ANALYSIS_LIMITS: dict[str, Limit] = {
    "threshold": Limit(0, low_open=True),
    "threshold_low": Limit(0, low_open=True),
    "grok_acc": Limit(0, 1),
    "structure_acc": Limit(0, 1),
    "chunk_steps": Limit(1, 10**6),
    "shuffle_draws": Limit(1, 10**4),
}
OPTION_LIMITS = {**RUN_LIMITS, **ANALYSIS_LIMITS}
# Defaults of the analysis options that have fixed ones (the thresholds scale with p): read by
# AnalysisParams and by the CLI's options alike
ANALYSIS_DEFAULTS = {"grok_acc": 0.9, "structure_acc": 0.9, "chunk_steps": 8, "shuffle_draws": 16}


def modulus_caveat(p: int, operation: str = "add") -> str | None:
    """What a reader should know about the Fourier analysis at modulus p, or None. For an even
    group size n (p itself, or p - 1 for mul and div, read over the nonzero residues) the
    frequency n/2 is real (a +-1 alternation with no phase), so the dominant frequency is
    sought among k = 1..n/2 - 1 and structure at n/2 goes unseen."""
    n = p - 1 if operation in ("mul", "div") else p
    if n % 2 == 0 and operation in ("mul", "div"):
        return (
            f"{operation} is read over the {n} nonzero residues in discrete-log order; {n} is even, so the "
            f"frequency {n // 2} has no phase and is left out of the dominant-frequency search"
        )
    if n % 2 == 0:
        return (
            f"modulus {p} is even: the frequency p/2 = {p // 2} has no phase and is left out of the "
            "dominant-frequency search (the paper uses a prime modulus)"
        )
    return None


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def check_operation(operation: str, modulus: int) -> None:
    """ValueError unless `operation` is known and, for mul and div, the modulus is prime (the
    nonzero residues form a group, cyclic with a generator, only then)."""
    if operation not in OPERATIONS:
        raise InvalidOptionError(
            f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}"
        )
    if operation in ("mul", "div") and not is_prime(modulus):
        raise InvalidOptionError(
            f"operation {operation} needs a prime modulus: at p = {modulus} some nonzero residues have no "
            "inverse and there is no generator for the discrete-log order"
        )


def check_option(name: str, value: float) -> None:
    """Raise ValueError naming the option unless `value` is within OPTION_LIMITS[name]."""
    limit = OPTION_LIMITS[name]
    if not limit.admits(value):
        raise InvalidOptionError(f"{name} must be {limit.describe()}, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """One training run. Defaults are the paper's experiment (docs/paper.md, 'The paper's setting').
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
    stop_val_acc: float | None = 0.999
    patience: int = 50_000
    eval_every: int = 100
    every: int = 0
    per_decade: int = 100
    device: str = "cpu"
    operation: str = "add"
    activation: str = "relu"
    precision: str = "fp32"
    model: str = "mlp"
    d_model: int = 128  # the transformer's; `width` is its MLP's neurons (d_mlp)
    heads: int = 4

    def __post_init__(self) -> None:
        for name in RUN_LIMITS:
            if not (
                name == "stop_val_acc" and self.stop_val_acc is None
            ):  # None: train the full --steps
                check_option(name, getattr(self, name))
        if self.activation not in ACTIVATIONS:
            raise InvalidOptionError(
                f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}"
            )
        check_operation(self.operation, self.modulus)
        if self.operation in ("mul", "div") and self.modulus - 1 < MIN_MODULUS:
            raise InvalidOptionError(
                f"operation {self.operation} at p = {self.modulus} leaves {self.modulus - 1} nonzero "
                f"residues, fewer than the {MIN_MODULUS} a Fourier analysis needs; use a prime p >= 7"
            )
        if self.precision not in PRECISIONS:
            raise InvalidOptionError(
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}"
            )
        if len(self.betas) != 2 or not all(BETA_LIMIT.admits(float(b)) for b in self.betas):
            raise InvalidOptionError(
                f"betas must be two numbers {BETA_LIMIT.describe()}, got {self.betas}"
            )
        if self.lr * self.weight_decay >= 1:
            raise InvalidOptionError(
                f"lr x weight_decay must be < 1 (AdamW multiplies the weights by 1 - lr x weight_decay "
                f"each step), got {self.lr:g} x {self.weight_decay:g}"
            )
        check_device(self.device)
        if self.model not in MODELS:
            raise InvalidOptionError(
                f"unknown model {self.model!r}; use one of {', '.join(MODELS)}"
            )
        if self.model == "transformer":
            self._check_transformer()

    def _check_transformer(self) -> None:
        if self.d_model % self.heads:
            raise InvalidOptionError(
                f"d_model {self.d_model} is not a multiple of heads {self.heads} (the heads "
                "share the residual stream equally)"
            )
        unsupported = {
            "activation": (self.activation, "relu"),
            "precision": (self.precision, "fp32"),
            "bias": (self.bias, True),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise InvalidOptionError(
                    f"{name} {value!r} is not available for the transformer (mechgrok trains "
                    f"Nanda et al.'s model: {name} {supported!r})"
                )


# the architectures `record` trains (models.ARCHITECTURES holds their code)
MODELS = ("mlp", "transformer")
# the transformer's defaults where they differ from the MLP's: Nanda et al. (2023)'s size, and
# half the snapshots per decade (a snapshot holds 1.6 MB at that size: ~300 MB to 15,000 steps)
TRANSFORMER_DEFAULTS = {"modulus": 113, "width": 512, "per_decade": 50}


def estimated_memory_bytes(config: RunConfig, n_models: int = 1) -> int:
    """Peak memory (bytes) of training `n_models` runs shaped like `config` as one ensemble:
    parameters, AdamW moments, gradients and temporaries (~8 copies of the 3pH + H + p
    weights), the hidden layer and logits of the N training pairs (~4 copies each), and the
    split itself (a p x p random matrix and its argsort). An estimate, within ~2x."""
    p, H = config.modulus, config.width
    n_train = p * max(1, round(config.train_frac * p))
    n_params = 3 * p * H + H + p
    float32 = 4
    per_model = float32 * (8 * n_params + 4 * n_train * H + 4 * n_train * p)
    if config.model == "transformer":  # per pair: each head's rows of the MLP input, the stream
        d, h = config.d_model, config.heads
        per_model += float32 * n_train * (4 * h * d + 4 * d) + float32 * 8 * p * h * 3 * d
    return n_models * per_model + 16 * p * p


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(config: RunConfig, n_models: int = 1) -> None:
    """Raise ResourceError, naming the estimate and the options that drive it, when training
    would need more than 90% of this machine's memory."""
    total = physical_memory_bytes()
    need = estimated_memory_bytes(config, n_models)
    if total is not None and need > 0.9 * total:
        runs = f"{n_models} runs of " if n_models > 1 else ""
        raise ResourceError(
            f"{runs}modulus {config.modulus}, width {config.width}, train_frac {config.train_frac:g} needs "
            f"~{format_bytes(need)} of memory, more than this machine's {format_bytes(total)}",
            remedy="lower {modulus}, {width} or {train_frac}"
            + (" or use {max_ensemble}" if n_models > 1 else ""),
        )


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_device(device: str) -> None:
    """Raise ValueError unless torch can place tensors on `device` here."""
    if device == "cpu":
        return
    import torch  # imported only here so that the CLI's --help does not wait for torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InvalidOptionError(f"unknown device {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidOptionError(f"unsupported device {device!r}: use cpu or cuda")


def installed_version(package: str) -> str:
    """An installed package's version from its metadata, without importing it (files record
    mechgrok's and torch's); "unknown" where it is not installed (a source tree never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"

"""The four operations mechgrok trains and the group each lives in. Pure numpy.

  add: c = (a + b) mod p          sub: c = (a - b) mod p          over residues 0..p-1
  mul: c = (a * b) mod p          div: c = (a * b^-1) mod p       over residues 1..p-1 (p prime)

Residue 0 takes no part in mul and div (it has no inverse, and 0 * b = 0 would be a class of
its own): operands and answers are the p - 1 nonzero residues; token 0 and class 0 exist in
the model but never occur. The analysis reads mul and div in discrete-log order: with a
generator g of the nonzero residues, token g^i becomes position i, and a * b (a * b^-1)
becomes i + j (i - j) mod p - 1, so they are addition and subtraction over n = p - 1
positions and the phase law is phi_out = phi_a + phi_b (add, mul) or phi_a - phi_b (sub, div).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechgrok.config import check_operation
from mechgrok.errors import InvalidOptionError


def operate(operation: str, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a o b mod p for residue arrays (mul and div expect nonzero a, b)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if operation == "add":
        return (a + b) % p
    if operation == "sub":
        return (a - b) % p
    if operation == "mul":
        return (a * b) % p
    return (a * inverse(b, p)) % p


def inverse(b: np.ndarray, p: int) -> np.ndarray:
    """b^-1 mod prime p (b nonzero), by Fermat: b^(p-2)."""
    return np.array([pow(int(x), p - 2, p) for x in np.ravel(b)], dtype=np.int64).reshape(
        np.shape(b)
    )


def operands(operation: str, p: int) -> np.ndarray:
    """The residues that occur as operands and answers: 0..p-1, or 1..p-1 for mul and div."""
    return np.arange(1, p) if operation in ("mul", "div") else np.arange(p)


def second_operand(operation: str, a: np.ndarray, c: np.ndarray, p: int) -> np.ndarray:
    """The b with a o b = c mod p (one for every a, c among the operands)."""
    a, c = np.asarray(a, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if operation == "add":
        return (c - a) % p
    if operation == "sub":
        return (a - c) % p
    if operation == "mul":
        return (c * inverse(a, p)) % p
    return (a * inverse(c, p)) % p


def primitive_root(p: int) -> int:
    """The smallest generator g of the nonzero residues mod prime p."""
    if p == 2:
        return 1
    factors = {
        q for q in range(2, p) if (p - 1) % q == 0 and all(q % d for d in range(2, int(q**0.5) + 1))
    }
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    raise InvalidOptionError(f"{p} is not prime")


@dataclass(frozen=True)
class GroupView:
    """How the analysis reads an operation: `order` lists the model's tokens at analysis
    positions 0..n-1 (identity for add and sub; g^0, g^1, ... for mul and div), `n` is the
    group's size (the analysis's modulus) and `sign` the phase law phi_out = phi_a + sign phi_b."""

    operation: str
    order: np.ndarray
    n: int
    sign: int
    generator: int | None = None


def recorded_operation(attrs) -> str:
    """The operation a trajectory's or analysis's attributes record (bytes decoded); "add" for
    files made before mechgrok knew other operations."""
    operation = attrs.get("operation", "add")
    return operation.decode() if isinstance(operation, bytes) else str(operation)


def group_view(operation: str, p: int) -> GroupView:
    """The GroupView of `operation` at modulus p (see the module docstring)."""
    check_operation(operation, p)
    sign = -1 if operation in ("sub", "div") else 1
    if operation in ("add", "sub"):
        return GroupView(operation, np.arange(p), p, sign)
    g = primitive_root(p)
    order = np.array([pow(g, i, p) for i in range(p - 1)], dtype=np.int64)
    return GroupView(operation, order, p - 1, sign, g)


def law_labels(n: int, sign: int = 1) -> np.ndarray:
    """(i + sign j) mod n for all pairs of analysis positions, flattened i-major (index i * n + j)."""
    i, j = np.divmod(np.arange(n * n), n)
    return (i + sign * j) % n

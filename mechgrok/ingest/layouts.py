"""Find a two-hot MLP's curves in someone else's parameters. Pure numpy; no I/O.

mechgrok's analysis reads three curves per hidden neuron i over the p tokens: W_a[i] and
W_b[i] (the input weights from token a and from token b) and W_out[i] (the output weights to
each class), plus the optional biases b_in (H,) and b_out (p,). Codebases store them as:

- `nn.Linear(2p, H)` on the two-hot input [one_hot(a), one_hot(b)]: weight [H, 2p], so
  W_a = weight[:, :p] and W_b = weight[:, p:] (or the same stored transposed, [2p, H]);
- `nn.Linear(H, p)` for the output: weight [p, H], so W_out = weight.T (or stored [H, p]);
- biases of length H (first layer) and p (output);
- one input weight [H, p] shared by both tokens, for models fed one_hot(a) + one_hot(b)
  (W_a = W_b; named with keys, since shapes cannot tell it from the output weight);
- a token embedding E [p, d] then a linear layer on the concatenated or summed embeddings
  (or one linear layer per token): effective input curves W_a = W_in,a E^T (keys
  `embedding`, `input`, optional `input_b`, `output`);
- or a mapping that already holds `W_a`, `W_b`, `W_out` in (neuron, token) layout.

Roles are found from shapes; where shapes cannot tell (H = 2p, H = p), `keys` names the
parameter of each role: {"input": name, "output": name, "b_in": name, "b_out": name}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from mechgrok.errors import CheckpointImportError

ROLES = ("input", "input_b", "embedding", "output", "b_in", "b_out")
CURVES = ("W_a", "W_b", "W_out", "b_in", "b_out")


class LayoutError(CheckpointImportError):
    """The parameters do not look like a two-hot MLP, or their roles are ambiguous."""


def as_numpy(value) -> np.ndarray:
    """A tensor (torch, on any device) or array-like as a float32 numpy array; LayoutError for
    complex values (their imaginary part would be dropped without a word)."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu")
        if value.is_floating_point() and value.dtype.itemsize < 4:  # bf16, fp16: numpy has no bf16
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if np.iscomplexobj(array):
        raise LayoutError(f"complex values (dtype {array.dtype}); mechgrok reads real weights")
    return array.astype(np.float32, copy=False)


def curves_from_parameters(
    parameters: Mapping[str, object],
    modulus: int | None = None,
    keys: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """W_a, W_b, W_out as (neuron, token) float32 arrays, and b_in (neuron,), b_out (token,)
    when the model has either (the other then zeros: a trajectory stores both or neither),
    from a state_dict-like mapping (see module docstring). `modulus` is inferred from the
    shapes when not given. Raises LayoutError naming what was found."""
    curves = _curves(parameters, modulus, keys)
    H, p = curves["W_a"].shape
    if ("b_in" in curves) != ("b_out" in curves):
        curves.setdefault("b_in", np.zeros(H, np.float32))
        curves.setdefault("b_out", np.zeros(p, np.float32))
    return curves


def _curves(
    parameters: Mapping[str, object],
    modulus: int | None = None,
    keys: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The curves as the model stores them (see curves_from_parameters)."""
    arrays = {}
    for key, value in parameters.items():
        try:
            arrays[str(key)] = as_numpy(value)
        except LayoutError as err:
            raise LayoutError(f"{key}: {err}") from None
    if all(name in arrays for name in ("W_a", "W_b", "W_out")):
        return _direct(arrays)
    keys = dict(keys or {})
    unknown = set(keys) - set(ROLES)
    if unknown:
        raise LayoutError(f"unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    missing = [name for name in keys.values() if name not in arrays]
    if missing:
        raise LayoutError(f"no parameter named {missing[0]!r} (parameters: {', '.join(arrays)})")
    arrays = without_wrapper_prefix(arrays)
    _refuse_transformers(arrays)
    if not keys:
        keys, modulus = _roles_by_name(arrays, modulus)
    matrices = {name: a for name, a in arrays.items() if a.ndim == 2}
    p = modulus if modulus is not None else _infer_modulus(matrices, keys)
    if "embedding" in keys:
        return _embedded(arrays, keys, p)
    if (
        "input" in keys
        and arrays[keys["input"]].ndim == 2
        and 2 * p not in arrays[keys["input"]].shape
    ):
        return _shared_input(arrays, keys, p)
    input_name = keys.get("input") or _only(
        [name for name, a in matrices.items() if 2 * p in a.shape and name != keys.get("output")],
        "input layer",
        f"a 2-D parameter with a side of 2p = {2 * p}",
        "input",
    )
    weight = matrices[input_name] if input_name in matrices else arrays[input_name]
    if weight.ndim != 2 or 2 * p not in weight.shape:
        raise LayoutError(
            f"{input_name} has shape {weight.shape}; an input layer needs a side of 2p = {2 * p}"
        )
    first = weight if weight.shape[1] == 2 * p else weight.T  # [H, 2p]
    H = first.shape[0]
    readouts = [
        n for n, a in matrices.items() if sorted(a.shape) == sorted((p, H)) and n != input_name
    ]
    _refuse_unread_layers(arrays, [input_name, *readouts, keys.get("output")], H)
    output_name = keys.get("output") or _only(
        [
            name
            for name, a in matrices.items()
            if sorted(a.shape) == sorted((p, H)) and name != input_name
        ],
        "output layer",
        f"a 2-D parameter shaped ({p}, {H}) or ({H}, {p})",
        "output",
    )
    out = arrays[output_name]
    if sorted(out.shape) != sorted((p, H)):
        raise LayoutError(
            f"{output_name} has shape {out.shape}; the output layer needs ({p}, {H}) or ({H}, {p})"
        )
    if p == H and "output" not in keys:
        raise LayoutError(
            f"width equals the modulus ({p}): say which side of {output_name} is the class with keys"
        )
    W_out = out.T if out.shape == (p, H) and p != H else out  # nn.Linear(H, p).weight is [p, H]
    curves = {"W_a": first[:, :p], "W_b": first[:, p:], "W_out": W_out}
    vectors = {name: a for name, a in arrays.items() if a.ndim == 1}
    for role, length in (("b_in", H), ("b_out", p)):
        name = keys.get(role) or _optional(
            [n for n, a in vectors.items() if a.size == length], role, H == p
        )
        if name is not None:
            curves[role] = arrays[name].reshape(-1)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in curves.items()}


def _embedded(
    arrays: dict[str, np.ndarray], keys: Mapping[str, str], p: int
) -> dict[str, np.ndarray]:
    """An embedding MLP: token embedding E [p, d] (nn.Embedding; or [d, p]), then a linear
    layer on the concatenated embeddings ([H, 2d]: W_a = W[:, :d] E^T, W_b = W[:, d:] E^T), on
    their sum ([H, d]: W_a = W_b = W E^T), or one per token (`input` and `input_b`, [H, d]
    each). These effective input curves are exact: nothing nonlinear lies between."""
    embedding = arrays[keys["embedding"]]
    if embedding.ndim != 2 or p not in embedding.shape:
        raise LayoutError(
            f"{keys['embedding']} has shape {embedding.shape}; a token embedding needs a side of p = {p}"
        )
    E = embedding if embedding.shape[0] == p else embedding.T  # [p, d]
    d = E.shape[1]
    if "input" not in keys or "output" not in keys:
        raise LayoutError(
            "with an embedding, name the input and output weights too (keys {'input': ..., 'output': ...})"
        )

    def rows(name: str, width: int) -> np.ndarray:  # [H, width]
        weight = arrays[name]
        if weight.ndim != 2 or width not in weight.shape:
            raise LayoutError(
                f"{name} has shape {weight.shape}; expected a side of {width} after a {d}-wide embedding"
            )
        return weight if weight.shape[1] == width else weight.T

    if "input_b" in keys:
        left, right = rows(keys["input"], d), rows(keys["input_b"], d)
    elif 2 * d in arrays[keys["input"]].shape:
        weight = rows(keys["input"], 2 * d)
        left, right = weight[:, :d], weight[:, d:]
    else:
        left = right = rows(keys["input"], d)
    H = left.shape[0]
    out = arrays[keys["output"]]
    if sorted(out.shape) != sorted((p, H)) or p == H:
        raise LayoutError(
            f"{keys['output']} has shape {out.shape}; the output layer needs ({p}, {H}) or ({H}, {p}), "
            "with a width other than p"
        )
    _refuse_unread_layers(arrays, [keys.get(r) for r in ROLES], H)
    curves = {"W_a": left @ E.T, "W_b": right @ E.T, "W_out": out.T if out.shape == (p, H) else out}
    for role in ("b_in", "b_out"):
        if role in keys:
            curves[role] = arrays[keys[role]].reshape(-1)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in curves.items()}


def _shared_input(
    arrays: dict[str, np.ndarray], keys: Mapping[str, str], p: int
) -> dict[str, np.ndarray]:
    """A model fed one_hot(a) + one_hot(b): one input weight [H, p] (or [p, H]) serves both
    tokens, so W_a = W_b and the phase law reads phi_out = 2 phi_a. Named by keys only: by
    shape alone its input and output weights cannot be told apart."""
    weight = arrays[keys["input"]]
    if p not in weight.shape or weight.shape[0] == weight.shape[1]:
        raise LayoutError(
            f"{keys['input']} has shape {weight.shape}: a shared input weight needs one side of p = {p} "
            "and one of the width"
        )
    first = weight if weight.shape[1] == p else weight.T  # [H, p]
    H = first.shape[0]
    if "output" not in keys:
        raise LayoutError(
            "with a shared input weight, name the output weight too (keys {'output': ...})"
        )
    out = arrays[keys["output"]]
    if sorted(out.shape) != sorted((p, H)):
        raise LayoutError(
            f"{keys['output']} has shape {out.shape}; the output layer needs ({p}, {H}) or ({H}, {p})"
        )
    _refuse_unread_layers(arrays, [keys.get(r) for r in ROLES], H)
    curves = {"W_a": first, "W_b": first, "W_out": out.T if out.shape == (p, H) else out}
    for role in ("b_in", "b_out"):
        if role in keys:
            curves[role] = arrays[keys[role]].reshape(-1)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in curves.items()}


WRAPPER_PREFIXES = ("module.", "_module.")  # DataParallel / DistributedDataParallel, Opacus


def without_wrapper_prefix(
    arrays: dict[str, np.ndarray], prefixes: tuple[str, ...] = WRAPPER_PREFIXES
) -> dict[str, np.ndarray]:
    """Parameter names without the prefixes wrapper modules add to every one of them (each
    of `prefixes` in turn, so wrappers of wrappers come off too)."""
    for prefix in prefixes:
        if arrays and all(name.startswith(prefix) for name in arrays):
            arrays = {name[len(prefix) :]: a for name, a in arrays.items()}
    return arrays


def _roles_by_name(
    arrays: dict[str, np.ndarray], modulus: int | None
) -> tuple[dict[str, str], int | None]:
    """Roles that names make clear where shapes alone cannot: an embedding MLP (a token
    embedding `*embed*` [p, d], one layer on the embeddings, an `*unembed*` or output layer)
    and a shared input (`*W_in*` [H, p] and `*W_out*` [p, H], p told by a [p, p] buffer or the
    modulus). Returns (roles, modulus): no roles where names say nothing (shape inference then
    takes over), and the modulus the names imply where it was not given."""
    matrices = {name: a for name, a in arrays.items() if a.ndim == 2}
    lower = {name: name.lower() for name in matrices}
    embeds = [n for n in matrices if "embed" in lower[n] and "unembed" not in lower[n]]
    if len(embeds) == 1:
        embedding = matrices[embeds[0]]
        p = modulus if modulus is not None else embedding.shape[0]  # nn.Embedding(p, d).weight
        if p not in embedding.shape:
            return {}, modulus
        d = embedding.shape[1] if embedding.shape[0] == p else embedding.shape[0]
        unembeds = [n for n in matrices if "unembed" in lower[n]]
        rest = [n for n in matrices if n not in embeds and n not in unembeds]
        inputs = [n for n in rest if d in matrices[n].shape or 2 * d in matrices[n].shape]
        outputs = unembeds or [n for n in rest if p in matrices[n].shape and n not in inputs]
        if len(inputs) == 1 and len(outputs) == 1:
            keys = {"embedding": embeds[0], "input": inputs[0], "output": outputs[0]}
            H = matrices[inputs[0]].shape[0 if matrices[inputs[0]].shape[1] in (d, 2 * d) else 1]
            for role, size in (("b_in", H), ("b_out", p)):
                vectors = [n for n, a in arrays.items() if a.ndim == 1 and a.size == size]
                if len(vectors) == 1 and H != p:
                    keys[role] = vectors[0]
            return keys, p
        return {}, modulus
    ins = [n for n in matrices if "w_in" in lower[n]]
    outs = [n for n in matrices if "w_out" in lower[n]]
    if len(ins) == 1 and len(outs) == 1 and matrices[ins[0]].shape == matrices[outs[0]].shape[::-1]:
        sides = set(matrices[ins[0]].shape)
        squares = {a.shape[0] for n, a in matrices.items() if a.shape[0] == a.shape[1]}
        p = modulus if modulus is not None else next(iter(sides & squares), None)
        if p is not None and p in sides and len(sides) == 2:
            return {"input": ins[0], "output": outs[0]}, p
    return {}, modulus


TRANSFORMER_MARKS = ("attn", "W_Q", "W_K", "W_V", "W_pos", "pos_embed", "unembed.W_U", "blocks.")


def _refuse_transformers(arrays: Mapping[str, np.ndarray]) -> None:
    """A transformer's parameters can hold shapes that pass for an MLP's: refuse them by name."""
    marked = [name for name in arrays if any(mark in name for mark in TRANSFORMER_MARKS)]
    if marked:
        shown = ", ".join(marked[:4]) + (", ..." if len(marked) > 4 else "")
        raise LayoutError(
            f"this is a transformer ({shown}), not a two-hot or embedding MLP: import it "
            "without --key (mechgrok finds Nanda et al.'s one-layer transformer by its names)"
        )


def _refuse_unread_layers(arrays: Mapping[str, np.ndarray], read: list[str | None], H: int) -> None:
    """Refuse a state dict whose parameters do not all belong to the one-hidden-layer MLP just
    read: another parameter with a side of the width H (a second hidden layer, a norm, a bias
    of a layer not read) means the model is something else, and reading it as this MLP would
    be silently wrong. Names each parameter found, in order."""
    used = {name for name in read if name}
    used.update(
        name for name, a in arrays.items() if a.ndim == 1 and a.size == H
    )  # b_in: checked below
    extra = [
        name for name, a in arrays.items() if name not in used and a.ndim >= 2 and H in a.shape
    ]
    widths = [name for name, a in arrays.items() if a.ndim == 1 and a.size == H]
    hidden_layers = 1 + len(extra)
    if extra or len(widths) > 1 + len(extra):
        layers = ", ".join(
            f"{name} {list(a.shape)}" for name, a in arrays.items() if a.ndim >= 2 or a.size == H
        )
        what = (
            f"{hidden_layers} hidden layers" if extra else "more width-sized vectors than one bias"
        )
        raise LayoutError(
            f"{what} found ({layers}); reading it as a one-hidden-layer MLP would drop "
            "layers (mechgrok reads a deeper MLP without --key only as a plain stack of "
            "nn.Linear weights [out, in], numbered in their names in the order they run)"
        )


def _direct(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    shapes = {name: arrays[name].shape for name in ("W_a", "W_b", "W_out")}
    if len(set(shapes.values())) != 1 or len(shapes["W_a"]) != 2:
        raise LayoutError(f"W_a, W_b, W_out must share one (neuron, token) shape, got {shapes}")
    return {
        name: np.ascontiguousarray(arrays[name], dtype=np.float32)
        for name in CURVES
        if name in arrays
    }


def _infer_modulus(matrices: dict[str, np.ndarray], keys: Mapping[str, str]) -> int:
    """p such that one matrix has a side 2p and another a side p (the input and output layers)."""
    sides = {name: set(a.shape) for name, a in matrices.items()}
    found = set()
    for name, shape in sides.items():
        for side in shape:
            if side % 2 == 0 and any(
                side // 2 in other for other_name, other in sides.items() if other_name != name
            ):
                found.add(side // 2)
    if len(found) != 1:
        what = "no" if not found else f"several ({sorted(found)})"
        raise LayoutError(
            f"{what} modulus fits these shapes ({', '.join(f'{n} {a.shape}' for n, a in matrices.items())}); "
            "give the modulus"
        )
    return found.pop()


def _only(names: list[str], what: str, expected: str, role: str) -> str:
    if len(names) == 1:
        return names[0]
    if not names:
        raise LayoutError(f"no {what} found: expected {expected}")
    raise LayoutError(
        f"several parameters could be the {what} ({', '.join(names)}); name one with keys {{{role!r}: ...}}"
    )


def _optional(names: list[str], role: str, ambiguous: bool) -> str | None:
    if not names:
        return None
    if len(names) > 1 or ambiguous:
        raise LayoutError(
            f"cannot tell which parameter is {role} ({', '.join(names)}); name it with keys {{{role!r}: ...}}"
        )
    return names[0]


def mlp_stack(parameters: Mapping[str, object]) -> dict[str, np.ndarray] | None:
    """The parameters of a two-hot MLP with several hidden layers (nn.Linear weights [out, in]
    chained from the two-hot input, in = 2p, to the p classes, with biases or none; the hidden
    layers numbered in their names in the order they run, as nn.Sequential and fc1, fc2, ...
    name them), in that order and under their names, or None when the parameters are not
    exactly such a stack (then the one-hidden-layer reading applies, and refuses what it
    cannot read). What weights cannot show is assumed: each layer runs once, in that order,
    with the activation between layers and no skip connections."""
    arrays = without_wrapper_prefix({name: as_numpy(value) for name, value in parameters.items()})
    weights = [name for name, value in arrays.items() if value.ndim == 2]
    if len(weights) < 3 or any(value.ndim not in (1, 2) for value in arrays.values()):
        return None
    if any("embed" in name.lower() for name in weights):
        return None  # an embedding is linear, with no activation after it: not a hidden layer
    # the state dict lists layers in the order they were registered, which need not be the
    # order they run: read a stack only when the hidden layers' names number them in that order
    numbers = [re.findall(r"\d+", name.rsplit(".", 1)[0]) for name in weights[:-1]]
    if not all(numbers) or [int(n[-1]) for n in numbers] != sorted({int(n[-1]) for n in numbers}):
        return None
    shapes = [arrays[name].shape for name in weights]
    p = shapes[-1][0]
    chained = all(shapes[i][1] == shapes[i - 1][0] for i in range(1, len(shapes)))
    if not chained or shapes[0][1] != 2 * p:
        return None
    biases = {
        name: name.rsplit(".", 1)[0] + ".bias" for name in weights if name.endswith(".weight")
    }
    known = set(weights) | {bias for bias in biases.values() if bias in arrays}
    if set(arrays) != known or any(
        arrays[bias].shape != (arrays[weight].shape[0],)
        for weight, bias in biases.items()
        if bias in arrays
    ):
        return None
    stack = {}
    for name in weights:
        bias = biases.get(name, "")
        stack[name] = arrays[name]
        stack[bias or f"{name}.bias"] = (
            arrays[bias] if bias in arrays else np.zeros(arrays[name].shape[0], np.float32)
        )
    return stack

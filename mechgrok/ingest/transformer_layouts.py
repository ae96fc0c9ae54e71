"""Find Nanda et al.'s one-layer transformer in someone else's parameters. Pure numpy; no I/O.

Two layouts of the same model are read, recognised by their names and shapes:

- the progress-measures code (`transformers.py`): `embed.W_E` [d_model, vocab],
  `pos_embed.W_pos` [n_ctx, d_model], `blocks.0.attn.W_Q/W_K/W_V` [heads, d_head, d_model],
  `W_O` [d_model, heads * d_head], `blocks.0.mlp.W_in` [d_mlp, d_model], `b_in`, `W_out`
  [d_model, d_mlp], `b_out`, `unembed.W_U` [d_model, vocab] (its loss drops the '=' class);
- TransformerLens's HookedTransformer: the same transposed (`embed.W_E` [vocab, d_model],
  `W_Q` [heads, d_model, d_head], `W_O` [heads, d_head, d_model], `mlp.W_in` [d_model, d_mlp]),
  attention biases `b_Q/b_K/b_V/b_O` and `unembed.b_U` (zero in the grokking runs), and
  buffers `mask` and `IGNORE`.

Both become mechgrok's layout (models.layout: TransformerLens names and shapes, no biases
outside the MLP, W_U over the p answers). What the weights cannot say (the activation, the
attention rule) comes from a config where the container has one; variants mechgrok does
not run are refused by name (LayoutError).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from mechgrok.ingest.layouts import (
    LayoutError,
    as_numpy,
    curves_from_parameters,
    mlp_stack,
    without_wrapper_prefix,
)
from mechgrok.models.layout import PARAM_NAMES
from mechgrok.models.tables import mlp_stack_curves, transformer_curves
from mechgrok.operations import group_view

TRANSFORMER_MARKS = ("attn", "W_Q", "W_K", "W_V", "W_pos", "pos_embed")  # attention, positions
BUFFERS = ("blocks.0.attn.mask", "blocks.0.attn.IGNORE")
ZERO_BIASES = (
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.attn.b_O",
    "unembed.b_U",
)
# DataParallel, torch.compile, and Lightning-style modules that hold the model as `model`
TRANSFORMER_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def snapshot_curves(
    parameters: Mapping[str, object],
    modulus: int | None = None,
    keys: Mapping[str, str] | None = None,
    config: Mapping[str, object] | None = None,
    operation: str = "add",
    activation: str = "relu",
) -> tuple[dict[str, np.ndarray], str | None]:
    """What a trajectory stores of one snapshot of someone else's model, and the layout read
    through activation tables ("nanda", "transformerlens", "mlp_stack"; None for a
    one-hidden-layer MLP): an MLP with several hidden layers read at its last (models.tables.
    mlp_stack_curves), an MLP's curves (layouts.curves_from_parameters), or a
    transformer's effective curves and table variables with its parameters as
    "model/<name>" (models.tables.transformer_curves, its 2D frequency read in `operation`'s
    group order). `keys` name an MLP's roles."""
    if not keys and not is_transformer(parameters):
        stack = mlp_stack(parameters)
        if stack is not None:  # several hidden layers: read at the last, through its tables
            return _stack_curves(stack, modulus, operation, activation), "mlp_stack"
    if keys or not is_transformer(parameters):
        return curves_from_parameters(parameters, modulus, keys), None
    if activation != "relu":
        raise LayoutError(
            f"a transformer given activation {activation!r}: mechgrok reads transformers with a "
            "ReLU MLP (their config says otherwise when it is not; leave --activation out)"
        )
    params, layout = transformer_parameters(parameters, config)
    p = params["unembed.W_U"].shape[1]
    try:
        order = group_view(operation, p).order
    except ValueError as err:
        raise LayoutError(str(err)) from None
    curves = dict(transformer_curves(params, order, operation))
    if modulus is not None and p != modulus:
        raise LayoutError(
            f"a transformer over {p} residues (unembed.W_U), not the declared modulus {modulus}"
        )
    curves.update({f"model/{name}": value for name, value in params.items()})
    return curves, layout


def _stack_curves(
    stack: dict[str, np.ndarray], modulus: int | None, operation: str, activation: str
) -> dict[str, np.ndarray]:
    names = list(stack)
    layers = [(stack[names[i]], stack[names[i + 1]]) for i in range(0, len(names), 2)]
    p = layers[-1][0].shape[0]
    if modulus is not None and p != modulus:
        raise LayoutError(f"an MLP with {p} output classes, not the declared modulus {modulus}")
    try:
        order = group_view(operation, p).order
    except ValueError as err:
        raise LayoutError(str(err)) from None
    curves = dict(mlp_stack_curves(layers, activation, order, operation))
    curves.update({f"model/{name}": value for name, value in stack.items()})
    return curves


def model_shapes_of(curves: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]] | None:
    """The parameter shapes among a snapshot's curves ("model/<name>"), or None for an MLP."""
    shapes = {
        name[len("model/") :]: tuple(value.shape)
        for name, value in curves.items()
        if name.startswith("model/")
    }
    return shapes or None


def transformer_attrs(shapes: Mapping[str, tuple[int, ...]], layout: str) -> dict:
    """What an imported or user-recorded model read through its activation tables (a
    transformer, an MLP with several hidden layers) says of itself in its trajectory."""
    if layout == "mlp_stack":
        widths = [shape[0] for name, shape in shapes.items() if len(shape) == 2][:-1]
        return {
            "model": "mlp",
            "hidden_layers": len(widths),
            "hidden_widths": np.asarray(widths, np.int64),
            "read_layer": "the last hidden layer, through its activation tables (W_a, W_b, "
            "b_in are effective curves; W_out is the readout's weight)",
        }
    heads, d_model, _ = shapes["blocks.0.attn.W_Q"]
    return {
        "model": "transformer",
        "d_model": d_model,
        "heads": heads,
        "source_layout": LAYOUT_NAMES[layout],
        "assumed": "ReLU MLP and causal softmax attention scaled by 1/sqrt(d_head) (the weights "
        "cannot say; a config saying otherwise is refused); answers are classes 0..p-1 (an "
        "output column for '=' is dropped, as the original accuracy and progress code reads "
        "logits[:, -1, :-1])",
    }


LAYOUT_NAMES = {
    "nanda": "Nanda et al. progress-measures code",
    "transformerlens": "TransformerLens HookedTransformer",
}


def is_transformer(parameters: Mapping[str, object]) -> bool:
    """Whether the names are a transformer's (attention, positions, unembedding)."""
    return any(any(mark in name for mark in TRANSFORMER_MARKS) for name in parameters)


def transformer_parameters(
    parameters: Mapping[str, object], config: Mapping[str, object] | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """(parameters in mechgrok's layout as float32, the layout found: "nanda" or
    "transformerlens"). `config`: the run's saved options where the container has them
    (act_type / act_fn, normalization, n_layers, attention). LayoutError for anything else."""
    arrays = {name: as_numpy(value) for name, value in parameters.items()}
    arrays = without_wrapper_prefix(arrays, TRANSFORMER_WRAPPER_PREFIXES)
    _refuse_variants(arrays, config or {})
    missing = [name for name in PARAM_NAMES if name not in arrays]
    if missing:
        raise LayoutError(
            f"a transformer without {', '.join(missing)}; mechgrok reads Nanda et al.'s and "
            "TransformerLens's one-layer layouts"
        )
    layout = "transformerlens" if arrays["blocks.0.attn.W_O"].ndim == 3 else "nanda"
    try:
        params = (
            _from_transformerlens(arrays) if layout == "transformerlens" else _from_nanda(arrays)
        )
        # an output class for '=' (Nanda's W_U always has one; TransformerLens's when its
        # d_vocab_out is the vocabulary) is left out, as the original accuracy code reads them
        if layout == "nanda" or params["unembed.W_U"].shape[1] == params["embed.W_E"].shape[0]:
            params["unembed.W_U"] = params["unembed.W_U"][:, :-1]
        _check_shapes(params)
    except LayoutError:
        raise
    except (ValueError, TypeError, IndexError):
        shapes = ", ".join(f"{name} {arrays[name].shape}" for name in PARAM_NAMES[:7])
        raise LayoutError(
            f"transformer parameters of shapes mechgrok cannot lay out as one model ({shapes})"
        ) from None
    unread = sorted(set(arrays) - set(_read_names(layout)) - set(BUFFERS))
    if unread:
        raise LayoutError(
            f"transformer parameters mechgrok does not know: {', '.join(unread[:6])}; "
            "it reads the one-layer model of Nanda et al. (2023)"
        )
    return {name: np.ascontiguousarray(params[name], np.float32) for name in PARAM_NAMES}, layout


def _read_names(layout: str) -> list[str]:
    names = list(PARAM_NAMES)
    return names + list(ZERO_BIASES) if layout == "transformerlens" else names


def _refuse_variants(arrays: dict[str, np.ndarray], config: Mapping[str, object]) -> None:
    layers = sorted(
        {int(m.group(1)) for name in arrays if (m := re.match(r"blocks\.(\d+)\.", name))}
    )
    if len(layers) > 1:
        raise LayoutError(
            f"a transformer with {len(layers)} layers; mechgrok reads one-layer transformers"
        )
    norms = [name for name in arrays if re.search(r"(^|\.)(ln\w*|norm\w*)\.", name)]
    if norms or config.get("normalization_type") not in (None, "", "None"):
        shown = ", ".join(norms[:3]) or f"normalization_type {config.get('normalization_type')}"
        raise LayoutError(
            f"a transformer with LayerNorm ({shown}); mechgrok reads the model without it "
            "(Nanda et al. 2023)"
        )
    if config.get("use_ln") is True:
        raise LayoutError("a transformer with LayerNorm (use_ln True in its config)")
    activation = str(config.get("act_type") or config.get("act_fn") or "relu").lower()
    if activation != "relu":
        raise LayoutError(
            f"a transformer whose MLP uses {activation} (its config says so); mechgrok reads "
            "ReLU MLPs in transformers"
        )
    unusual = {
        "positional_embedding_type": (
            config.get("positional_embedding_type", "standard"),
            "standard",
        ),
        "use_attn_scale": (config.get("use_attn_scale", True), True),
        "parallel_attn_mlp": (config.get("parallel_attn_mlp", False), False),
    }
    W_Q = arrays.get("blocks.0.attn.W_Q")
    if W_Q is not None and W_Q.ndim == 3:  # TransformerLens stores sqrt(d_head), or -1 for it
        d_head = W_Q.shape[2] if arrays["blocks.0.attn.W_O"].ndim == 3 else W_Q.shape[1]
        scale = config.get("attn_scale", -1.0)
        if isinstance(scale, (int, float)) and scale not in (-1.0,):
            unusual["attn_scale"] = (
                scale if abs(scale - d_head**0.5) > 1e-6 else d_head**0.5,
                d_head**0.5,
            )
    for name, (value, standard) in unusual.items():
        if value != standard and value is not None:
            raise LayoutError(
                f"a transformer whose config sets {name} = {value!r}; mechgrok runs the standard "
                "one-layer model (learned positions, attention scaled by 1/sqrt(d_head), "
                "attention then MLP)"
            )
    attention = str(config.get("attention_dir", "causal")).lower()
    if attention != "causal" or config.get("attn_only") is True:
        raise LayoutError(
            f"a transformer with {attention} attention{' and no MLP' if config.get('attn_only') else ''}; "
            "mechgrok reads causal softmax attention with an MLP"
        )


def _from_nanda(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    heads, d_head, d_model = a["blocks.0.attn.W_Q"].shape
    return {
        "embed.W_E": a["embed.W_E"].T,
        "pos_embed.W_pos": a["pos_embed.W_pos"],
        **{
            f"blocks.0.attn.{n}": a[f"blocks.0.attn.{n}"].transpose(0, 2, 1)
            for n in ("W_Q", "W_K", "W_V")
        },
        "blocks.0.attn.W_O": a["blocks.0.attn.W_O"].T.reshape(heads, d_head, d_model),
        "blocks.0.mlp.W_in": a["blocks.0.mlp.W_in"].T,
        "blocks.0.mlp.b_in": a["blocks.0.mlp.b_in"],
        "blocks.0.mlp.W_out": a["blocks.0.mlp.W_out"].T,
        "blocks.0.mlp.b_out": a["blocks.0.mlp.b_out"],
        "unembed.W_U": a["unembed.W_U"],
    }


def _from_transformerlens(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for name in ZERO_BIASES:
        if name in a and np.any(a[name]):
            raise LayoutError(
                f"{name} is not zero (largest |value| {float(np.abs(a[name]).max()):.3g}); "
                "mechgrok's transformer has no attention or unembedding biases"
            )
    return {name: a[name] for name in PARAM_NAMES}


def _check_shapes(params: dict[str, np.ndarray]) -> None:
    """The shapes of one model: vocabulary p + 1 with '=' as token p, positions [a, b, =]."""
    W_E, W_pos, W_U = params["embed.W_E"], params["pos_embed.W_pos"], params["unembed.W_U"]
    vocab, d_model = W_E.shape
    p = W_U.shape[1]
    if W_pos.shape[0] == 2:
        raise LayoutError(
            "a transformer with 2 positions (W_pos [2, d_model]): no '=' token; mechgrok reads "
            "the input [a, b, =]"
        )
    if W_pos.shape[0] != 3:
        raise LayoutError(
            f"a transformer with {W_pos.shape[0]} positions; mechgrok reads the input [a, b, =]"
        )
    if vocab != p + 1:
        raise LayoutError(
            f"a vocabulary of {vocab} tokens for {p} answers; mechgrok reads one vocabulary of "
            "the p residues and '=' (separate vocabularies for a and b are not read)"
        )
    heads, _, d_head = params["blocks.0.attn.W_Q"].shape
    expected = {
        "pos_embed.W_pos": (3, d_model),
        "blocks.0.attn.W_K": params["blocks.0.attn.W_Q"].shape,
        "blocks.0.attn.W_V": params["blocks.0.attn.W_Q"].shape,
        "blocks.0.attn.W_O": (heads, d_head, d_model),
        "blocks.0.mlp.W_out": params["blocks.0.mlp.W_in"].shape[::-1],
        "blocks.0.mlp.b_in": (params["blocks.0.mlp.W_in"].shape[1],),
        "blocks.0.mlp.b_out": (d_model,),
        "unembed.W_U": (d_model, p),
    }
    for name, shape in expected.items():
        if tuple(params[name].shape) != tuple(shape):
            raise LayoutError(f"{name} has shape {params[name].shape}, not {tuple(shape)}")
    if params["blocks.0.attn.W_Q"].shape[1] != d_model:
        raise LayoutError("attention weights do not match the embedding width")

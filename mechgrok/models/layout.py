"""How the transformer's parameters are named and shaped (no torch: the store writes them,
the importer maps other codebases' names onto them). Names and layouts are TransformerLens's
HookedTransformer state_dict keys (docs/format.md, "Model parameters")."""

from __future__ import annotations

import math

from mechgrok.config import RunConfig

# name -> shape in terms of p (answers), V = p + 1 (vocabulary), d (d_model), h (heads),
# k (d_head), m (d_mlp); the flat order of resume slots follows this order
PARAM_SHAPES: dict[str, tuple[str | int, ...]] = {
    "embed.W_E": ("V", "d"),
    "pos_embed.W_pos": (3, "d"),
    "blocks.0.attn.W_Q": ("h", "d", "k"),
    "blocks.0.attn.W_K": ("h", "d", "k"),
    "blocks.0.attn.W_V": ("h", "d", "k"),
    "blocks.0.attn.W_O": ("h", "k", "d"),
    "blocks.0.mlp.W_in": ("d", "m"),
    "blocks.0.mlp.b_in": ("m",),
    "blocks.0.mlp.W_out": ("m", "d"),
    "blocks.0.mlp.b_out": ("d",),
    "unembed.W_U": ("d", "p"),
}
PARAM_NAMES = tuple(PARAM_SHAPES)
DIMENSION_NAMES = {
    "V": "vocab",
    "d": "d_model",
    "h": "head",
    "k": "d_head",
    "m": "neuron",
    "p": "token",
    3: "position",
}
# what a transformer's snapshot stores from its activation table besides the curves
# (models.tables.transformer_curves): per neuron, and per head
TABLE_VARIABLES: dict[str, tuple[str | None, str]] = {
    "all_acc": (None, "float64"),  # the whole model's accuracy on all pairs (dim: step only)
    "additivity": ("neuron", "float32"),
    "neuron_freq_2d": ("neuron", "int64"),
    "neuron_freq_share": ("neuron", "float32"),
    "attention_a": ("head", "float32"),
    "attention_b": ("head", "float32"),
}


def param_shapes(modulus: int, d_model: int, heads: int, d_mlp: int) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape for a model of these sizes."""
    sizes = {
        "p": modulus,
        "V": modulus + 1,
        "d": d_model,
        "h": heads,
        "k": d_model // heads,
        "m": d_mlp,
    }
    return {
        name: tuple(s if isinstance(s, int) else sizes[str(s)] for s in shape)
        for name, shape in PARAM_SHAPES.items()
    }


def model_shapes(config: RunConfig) -> dict[str, tuple[int, ...]] | None:
    """The parameter shapes a trajectory of `config` stores beside its curves (group `model`),
    or None for the MLP, whose curves are its parameters."""
    if config.model != "transformer":
        return None
    return param_shapes(config.modulus, config.d_model, config.heads, config.width)


def n_params(shapes: dict[str, tuple[int, ...]]) -> int:
    """How many numbers the parameters hold (the length of the flat vector)."""
    return sum(math.prod(shape) for shape in shapes.values())

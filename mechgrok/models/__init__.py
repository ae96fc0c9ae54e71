"""Model architectures: their parameters and activations. `mlp` is the paper's two-hot MLP
(torch, used by recording); `activations` holds the numpy activations analysis uses."""

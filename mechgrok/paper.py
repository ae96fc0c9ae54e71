"""The paper's published numbers (Swaroop 2026, arXiv 2603.23784; docs/paper.md), for
side-by-side comparison in reports. Keys are label-noise levels alpha."""

# Table 2: validation accuracy of the real model and of idealized models, at the final and
# the saturation checkpoint. None where the paper prints "<0.0001".
TABLE2: dict[float, dict[str, float | None]] = {
    0.00: dict(
        final_real=0.9991,
        final_sq_sq=0.9719,
        final_sq_cos=0.9979,
        final_cos_cos=0.9988,
        sat_real=None,
        sat_sq_sq=0.6912,
        sat_sq_cos=0.8133,
        sat_cos_cos=0.7661,
    ),
    0.05: dict(
        final_real=0.9358,
        final_sq_sq=0.9705,
        final_sq_cos=0.9970,
        final_cos_cos=0.9979,
        sat_real=None,
        sat_sq_sq=0.7545,
        sat_sq_cos=0.8407,
        sat_cos_cos=0.7967,
    ),
    0.10: dict(
        final_real=0.5663,
        final_sq_sq=0.9607,
        final_sq_cos=0.9954,
        final_cos_cos=0.9957,
        sat_real=None,
        sat_sq_sq=0.7586,
        sat_sq_cos=0.8825,
        sat_cos_cos=0.8420,
    ),
    0.15: dict(
        final_real=0.1797,
        final_sq_sq=0.9505,
        final_sq_cos=0.9912,
        final_cos_cos=0.9921,
        sat_real=0.0005,
        sat_sq_sq=0.6408,
        sat_sq_cos=0.7799,
        sat_cos_cos=0.7289,
    ),
    0.20: dict(
        final_real=0.0436,
        final_sq_sq=0.9135,
        final_sq_cos=0.9778,
        final_cos_cos=0.9766,
        sat_real=0.0002,
        sat_sq_sq=0.6402,
        sat_sq_cos=0.7571,
        sat_cos_cos=0.6959,
    ),
    0.25: dict(
        final_real=0.0120,
        final_sq_sq=0.9320,
        final_sq_cos=0.9813,
        final_cos_cos=0.9765,
        sat_real=0.0003,
        sat_sq_sq=0.5086,
        sat_sq_cos=0.6496,
        sat_cos_cos=0.5912,
    ),
    0.30: dict(
        final_real=0.0023,
        final_sq_sq=0.8735,
        final_sq_cos=0.9548,
        final_cos_cos=0.9405,
        sat_real=0.0011,
        sat_sq_sq=0.5641,
        sat_sq_cos=0.6501,
        sat_cos_cos=0.5944,
    ),
}

# Fig. 5 (and Fig. 4 for alpha = 0): circular correlation r over all neurons and r' over
# structured neurons of the final model.
FIG5 = {
    0.00: (0.988, 0.999),
    0.05: (0.992, 0.999),
    0.10: (0.919, 0.998),
    0.15: (0.959, 0.998),
    0.20: (0.924, 0.999),
    0.30: (0.896, 1.000),
}

# The 19 noise levels of the paper's grid (plus the clean model).
NOISE_LEVELS = tuple([0.0] + [round(0.01 * i, 2) for i in range(1, 16)] + [0.20, 0.25, 0.30])


def paper_row(noise: float) -> dict | None:
    """Table 2's row for a noise level, matched to 1e-9; None if the paper has none."""
    for level, row in TABLE2.items():
        if abs(level - noise) < 1e-9:
            return row
    return None

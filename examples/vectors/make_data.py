"""Writes the two regression data sets of the vectors examples to examples/data/vectors/.

    python examples/vectors/make_data.py        # from the repository root; numpy only, no downloads

The CSVs it writes are committed, so the examples run without this script; running it again rewrites
them byte for byte (fixed seed). Every file has eight numeric feature columns x1..x8 and a numeric
target column y.

How the data are made. A fixed random two-layer tanh network maps the eight inputs to eight hidden
features g(x); both tasks are a readout of these shared features plus noise:

    source.csv            4,000 rows   y = w_s . g(x) + noise                 (the pretraining task)
    target_train.csv        150 rows   y = w_t . g(x) + noise                 (the small task)
    target_validation.csv   300 rows   same as target_train.csv, new rows     (picks the best epoch)
    target_test.csv         500 rows   same as target_train.csv, new rows     (for strop evaluate)

Inputs are standard normal before each feature gets its own mean and scale; the noise is normal with
standard deviation 0.05 (the best RMSE any model can reach). The target's readout w_t is related to the
source's but not the same: w_t = 0.9 w_s + 0.44 u, with u a unit direction of g orthogonal to w_s. So a
network that has learned g(x) on the large source set needs few examples to learn the target, while one
that starts from random weights must learn g(x) from 150 rows. The features have different means and
scales (strop standardises inputs and targets itself and saves the statistics with the model).

Both targets are on the same scale (y: mean -0.34, sd 0.80 in source.csv; -0.38 and 0.77 in
target_train.csv), as for one quantity measured in two settings. That matters to strop: a run started from
the pretraining run with the same task and target column continues the whole model, head and target
standardisation included. A first version of this generator also shifted the target by 1.5 and scaled it
by 0.8; the pretrained head then had to move 1.9 standard deviations at the fine-tuning rate (1e-4), and
fine-tuning was no better than training from scratch (validation RMSE 0.232 against 0.241, train.seed 42).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 20240611
N_FEATURES = 8
HIDDEN = 16
OUT = Path(__file__).resolve().parents[1] / "data" / "vectors"

SIZES = {"source.csv": 4000, "target_train.csv": 150, "target_validation.csv": 300, "target_test.csv": 500}
SOURCE_NOISE = 0.05
TARGET_NOISE = 0.05
TARGET_MIX = 0.9  # share of the target readout's direction taken from the source readout
WEIGHT_SCALE = 2.0  # the shared network's weights: larger is more nonlinear


def build(seed: int = SEED):
    """The fixed parts: input means and scales, the shared network, and both readouts."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-5, 5, N_FEATURES)
    scales = rng.uniform(0.5, 3.0, N_FEATURES)
    w1 = rng.normal(0, WEIGHT_SCALE / np.sqrt(N_FEATURES), (N_FEATURES, HIDDEN))
    b1 = rng.normal(0, 0.3, HIDDEN)
    w2 = rng.normal(0, WEIGHT_SCALE / np.sqrt(HIDDEN), (HIDDEN, N_FEATURES))
    b2 = rng.normal(0, 0.3, N_FEATURES)
    w_s = rng.normal(0, 1, N_FEATURES)
    w_s /= np.linalg.norm(w_s)
    other = rng.normal(0, 1, N_FEATURES)
    other -= other @ w_s * w_s
    other /= np.linalg.norm(other)
    w_t = TARGET_MIX * w_s + np.sqrt(1 - TARGET_MIX**2) * other
    return rng, dict(means=means, scales=scales, w1=w1, b1=b1, w2=w2, b2=b2, w_s=w_s, w_t=w_t)


def features(z, p):
    """The shared hidden features g(x) of standard-normal inputs z."""
    return np.tanh(np.tanh(z @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])


def make(rng, p, n, task):
    z = rng.normal(0, 1, (n, N_FEATURES))
    g = features(z, p)
    if task == "source":
        y = g @ p["w_s"] + SOURCE_NOISE * rng.normal(0, 1, n)
    else:
        y = g @ p["w_t"] + TARGET_NOISE * rng.normal(0, 1, n)
    x = p["means"] + p["scales"] * z
    return x, y


def main(out: Path = OUT, seed: int = SEED) -> None:
    rng, p = build(seed)
    out.mkdir(parents=True, exist_ok=True)
    header = ",".join([f"x{i + 1}" for i in range(N_FEATURES)] + ["y"])
    for name, n in SIZES.items():
        x, y = make(rng, p, n, "source" if name == "source.csv" else "target")
        rows = np.column_stack([x, y])
        np.savetxt(out / name, rows, fmt="%.4f", delimiter=",", header=header, comments="")
        print(f"{out / name}: {n} rows")


if __name__ == "__main__":
    main()

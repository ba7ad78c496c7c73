"""The fine-tuning controls against each other: what trains (full, bottom-k frozen with its cache, gradual
unfreezing, layer-wise rate decay, BitFit), class imbalance (none against auto on a 10:1 draw of SST-2), text
augmentation (word deletion, swap and synonym replacement with full fine-tuning) and mixup for vectors (a new MLP
on scikit-learn's bundled digits and breast-cancer data).

    python bench/controls.py methods --rows sst2-1k,trec --seeds 3
    python bench/controls.py imbalance --seeds 3
    python bench/controls.py imbalance --seeds 3 --set method.name=freeze   # frozen body, cached features: minutes
    python bench/controls.py augment --seeds 3
    python bench/controls.py mixup --seeds 5

Every run is `strop fit` with strop's defaults except the variant's settings and the seed, on the benchmark's
own rows (bench/rows.py, same data seed); accuracy and macro-F1 on the row's scoring split, wall seconds of
the fit and strop's own training seconds. The 1-minute load average is recorded before each run: timings
taken while other jobs share the machine are noisy, the accuracies are not affected. Prints one JSON line a
run and a table (mean ± std over the seeds), and writes both to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows as bench_rows  # noqa: E402

METHODS = {
    "full": ["method.freeze_layers=0"],  # every layer (the default freezes the bottom half up to 2,000 texts)
    "freeze-bottom-3": ["method.freeze_layers=3"],  # embeddings + 2 of the bundled model's 6 blocks, cached
    "freeze-bottom-4": ["method.freeze_layers=4"],  # embeddings + 3 of 6 blocks
    "freeze-bottom-5": ["method.freeze_layers=5"],  # embeddings + 4 of 6 blocks
    "gradual": ["method.name=gradual"],
    "layer-decay-0.8": ["optim.layer_decay=0.8"],
    "bitfit": ["method.name=bitfit"],
}
IMBALANCE = {"none": ["train.imbalance=none"], "auto": ["train.imbalance=auto"]}
AUGMENT = {"none": ["method.freeze_layers=0"], "deletion": ["data.augment=deletion"], "swap": ["data.augment=swap"],
           "deletion_swap": ["data.augment=deletion_swap"], "synonym": ["data.augment=synonym"]}  # full fine-tuning of every layer, texts (augmenting keeps freeze_layers=auto at 0)
MIXUP = {"none": ["model.name=mlp"], "mixup-0.2": ["model.name=mlp", "data.mixup=0.2"],
         "mixup-0.4": ["model.name=mlp", "data.mixup=0.4"]}  # a new MLP on vectors
STUDIES = {"methods": (METHODS, "sst2-1k,trec"), "imbalance": (IMBALANCE, "sst2-1k"),
           "augment": (AUGMENT, "sst2-fs64,trec-fs8,sst2-1k"), "mixup": (MIXUP, "digits-300,breast_cancer-100")}
VECTOR_SETS = {"digits": "load_digits", "breast_cancer": "load_breast_cancer"}  # bundled with scikit-learn


def vector_row(name: str):
    """(train, score) frames of a scikit-learn data set: "digits-300" trains on a stratified draw of 300 rows
    (the data seed) and scores on the rest."""
    import pandas as pd
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    dataset, size = name.rsplit("-", 1)
    loaded = getattr(sklearn.datasets, VECTOR_SETS[dataset])()
    frame = pd.DataFrame(loaded.data, columns=[f"x{i}" for i in range(loaded.data.shape[1])])
    frame["label"] = [str(loaded.target_names[t]) for t in loaded.target]
    train, score = train_test_split(frame, train_size=int(size), stratify=frame["label"],
                                    random_state=bench_rows.DATA_SEED)
    return train, score
IMBALANCE_RATIO = 10  # majority : minority in the training draw


def imbalanced(train, ratio: int, seed: int):
    """SST-2's training draw with the positive class cut to 1/ratio of the negative one (the scoring split is
    left as it is, balanced, so macro-F1 weighs both classes alike)."""
    counts = train["label"].value_counts()
    majority, minority = counts.index[0], counts.index[-1]
    keep = len(train[train["label"] == majority]) // ratio
    minority_rows = train[train["label"] == minority].sample(n=keep, random_state=seed)
    import pandas as pd

    return pd.concat([train[train["label"] == majority], minority_rows]).sample(frac=1.0, random_state=seed)


def run_one(train_file: Path, score_file: Path, settings: list[str], seed: int, workdir: Path) -> dict:
    import strop

    load = os.getloadavg()[0]
    started = time.perf_counter()
    run = strop.fit(None, [f"data.train={train_file}", f"data.validation={score_file}", *settings,
                           f"train.seed={seed}", "train.quiet=true", f"output_dir={workdir / 'run'}",
                           "train.keep_checkpoint=false"])
    wall = time.perf_counter() - started
    summary = json.loads((run / "summary.json").read_text())
    result = {"accuracy": summary["validation"]["accuracy"], "macro_f1": summary["validation"].get("macro_f1"),
              "wall_seconds": round(wall, 1), "train_seconds": summary["train_seconds"],
              "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"], "load_before": load}
    shutil.rmtree(run)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--rows", default="", help="the rows (default: methods sst2-1k,trec; imbalance sst2-1k; "
                                                   "augment sst2-fs64,trec-fs8,sst2-1k; mixup digits-300,breast_cancer-100)")
    parser.add_argument("--variants", default="", help="comma-separated subset of the study's variants")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds run from here (to add seeds to a study)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting added to every run (e.g. method.name=freeze), repeatable")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants, default_rows = STUDIES[args.study]
    if args.variants:
        variants = {name: variants[name] for name in args.variants.split(",")}
    rows = (args.rows or default_rows).split(",")
    out = Path(args.out or f"bench/results/controls-{args.study}.json")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row_name in rows:
            if args.study == "mixup":
                train, score = vector_row(row_name)
            else:
                train, score = bench_rows.build(bench_rows.resolve(row_name))
            score_file = Path(tmp) / f"{row_name}-score.csv"
            score.to_csv(score_file, index=False)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                data = imbalanced(train, IMBALANCE_RATIO, seed) if args.study == "imbalance" else train
                train_file = Path(tmp) / f"{row_name}-{seed}-train.csv"
                data.to_csv(train_file, index=False)
                for name, settings in variants.items():
                    result = {"row": row_name, "variant": name, "seed": seed, "train_examples": len(data),
                              **run_one(train_file, score_file, [*args.set, *settings], seed, Path(tmp))}
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2))
    print(table(results))


def table(results: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["row"], r["variant"]), []).append(r)

    def spread(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {std:.4f}"

    lines = ["| row | variant | seeds | accuracy | macro-F1 | wall s | train s | epochs | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (row, variant), runs in groups.items():
        lines.append(f"| {row} | {variant} | {len(runs)} | {spread([r['accuracy'] for r in runs])} | "
                     f"{spread([r['macro_f1'] for r in runs])} | {statistics.fmean(r['wall_seconds'] for r in runs):.0f} | "
                     f"{statistics.fmean(r['train_seconds'] for r in runs):.0f} | "
                     f"{statistics.fmean(r['epochs_run'] for r in runs):.1f} | "
                     f"{statistics.fmean(r['load_before'] for r in runs):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

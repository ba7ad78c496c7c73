"""Learning curve against reality (issue 19): fit `strop curve` on up to 500 SST-2 examples, predict the
accuracy at 1,000 and at all 6,920, then train at both sizes and compare (`--data trec`: the same on TREC's
4,452 training questions, scored on the benchmark's held-out 1,000).

    nice -n 5 python bench/curve_check.py                          # the real run (about 20 min on 2 cores)
    python bench/curve_check.py --pool 60 --big 120 --full 240 --seeds 1 --epochs 1   # smoke run

1. A stratified, seeded (data seed 0) subset of --pool (500) examples of sst2/train.csv.
2. `strop.curve.learning_curve` on it: fractions 0.1,0.2,0.4,0.6,0.8,1 of the pool, --seeds (3) seeds
   (train.seed 42, 43, ...), every run scored on sst2/dev.csv (data.validation), train.epochs=--epochs (3).
3. The prediction at --big (1,000) and --full (6,920, the whole train.csv) from the curve's fitted parameters
   (`curve.forecast`: for accuracy the mean of the saturating and the ceiling-free laws, each also printed
   alone), with the 95% interval of the same residual bootstrap `curve.analyse` draws
   (`curve.bootstrap`, same seed, same number of draws; `curve.interval`).
4. The same config trained at --big (a stratified subset drawn by `curve.nested_subsets` for each seed, as
   the curve draws its own; --big-seeds seeds) and on all of train.csv (--full-seeds seeds), each run through
   `strop.cv.fit_and_score`, the function the curve's own runs go through, so every number is the same
   measurement (the restored best epoch's accuracy on dev.csv).

Writes bench/results/curve-check-<stamp>.json (and the curve's folder beside it) and prints the table.

On a busy machine the parts can run apart (in parallel) and be put together afterwards:

    nice -n 5 python bench/curve_check.py --actual-only 1000 --big-seeds 1     # trains at 1,000 only
    nice -n 5 python bench/curve_check.py --actual-only full                   # trains on all of train.csv only
    python bench/curve_check.py --curve <curve folder>/curve.json --actual A.json B.json   # no training

`--curve` takes the points of a curve.json, also of a curve run stopped before its end (it is rewritten after
every run), and fits them with `strop.curve.analyse`, as `learning_curve` does at its end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FRACTIONS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="sst2",
                        help="a data folder under the data root (BENCH_DATA), as bench/run.py's rows: scored on its "
                             "dev.csv (sst2), or on the benchmark's held-out part of its train.csv (trec, "
                             "banking77: 1,000)")
    parser.add_argument("--pool-seed", type=int, default=0, help="the seed of the pool's subset (default 0)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another override of every run (e.g. train.device=cuda); repeatable")
    parser.add_argument("--pool", type=int, default=500, help="examples the curve is fitted on (default 500)")
    parser.add_argument("--big", type=int, default=1000, help="the first size checked (default 1000)")
    parser.add_argument("--full", type=int, default=None, help="the second size checked (default: all of train.csv)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per curve size (default 3)")
    parser.add_argument("--big-seeds", type=int, default=3, help="seeds at --big (default 3)")
    parser.add_argument("--full-seeds", type=int, default=1, help="seeds at --full (default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="train.epochs of every run (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--actual-only", metavar="SIZE", help="train at SIZE (a number, or full) only; no curve")
    parser.add_argument("--curve", type=Path, help="use this curve.json's points instead of running the curve")
    parser.add_argument("--actual", type=Path, nargs="+", help="with --curve: the --actual-only result files")
    args = parser.parse_args(argv)
    if args.actual_only and args.actual_only != "full" and not (args.actual_only.isdigit() and int(args.actual_only)):
        parser.error(f"--actual-only {args.actual_only}: give a number of examples >= 1, or full")
    if args.curve and not args.curve.is_file():
        parser.error(f"--curve {args.curve}: no such file; give the curve.json of a curve run")
    sys.path.insert(0, str(HERE))  # the harness's own modules, also when imported from elsewhere
    import rows

    try:  # the data before anything is written: a bad folder or file is one message, not a traceback
        train, score = (frame.reset_index(drop=True) for frame in rows.checked_splits(args.data))
    except LookupError as error:
        parser.error(str(error))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from strop.config import load_config
    from strop.curve import (analyse, bootstrap, fit_ceiling_free, forecast, interval, learning_curve, nested_subsets,
                             parameters_of, power_law)
    from strop.cv import fit_and_score
    from strop.fit import resolve_config

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    stamp += f"-{args.data}" if args.data != "sst2" else ""
    stamp += f"-pool{args.pool_seed}" if args.pool_seed else ""
    stamp += f"-n{args.actual_only}" if args.actual_only else ""  # parts started together get their own files
    work = args.out / f"curve-check-{stamp}"
    (work / "data").mkdir(parents=True)
    dev = work / "data" / "score.csv"
    score.to_csv(dev, index=False)
    full = args.full or len(train)
    labels = train["label"].tolist()

    def subset(size: int, seed: int, name: str) -> Path:
        rows = nested_subsets(labels, [size], seed)[0] if size < len(train) else np.arange(len(train))
        path = work / "data" / f"{name}.csv"
        train.iloc[rows].to_csv(path, index=False)
        return path

    # Every layer trains at every size, as in the check recorded in docs/benchmarks.md (method.freeze_layers=auto
    # would freeze the bottom blocks of the smaller fits, so the curve and the big fits would measure two methods).
    overrides = [f"data.validation={dev}", f"train.epochs={args.epochs}", "method.freeze_layers=0", *args.set]
    pool_file = subset(args.pool, args.pool_seed, f"pool{args.pool}")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
              "data_root": rows.data_roots()["data_root"], "load_before": os.getloadavg(), "overrides": overrides,
              "pool": args.pool, "fractions": FRACTIONS, "seeds": args.seeds, "epochs": args.epochs,
              "pool_seed": args.pool_seed}
    cfg = resolve_config(load_config(None, [f"data.train={pool_file}", *overrides]))
    out_file = args.out / f"curve-check-{stamp}.json"
    started = time.perf_counter()

    def actual_runs(size: int, seeds: int) -> list[dict]:
        runs = []
        for seed in range(cfg.train.seed, cfg.train.seed + seeds):
            train_file = subset(size, seed, f"n{size}-seed{seed}")
            t0, load = time.perf_counter(), os.getloadavg()[0]
            # its validation scores (data.validation: the scoring file) and the examples it trained on
            scores, _ = fit_and_score(cfg, train_file, None, seed, work / "runs" / f"n{size}-seed{seed}", False)
            runs.append({"size": size, "seed": seed, "accuracy": scores["accuracy"], "load_before": load,
                         "wall_seconds": time.perf_counter() - t0})
            print(f"{size} examples, seed {seed}: accuracy {scores['accuracy']:.4f} "
                  f"({runs[-1]['wall_seconds']:.0f} s)", flush=True)
            result.setdefault("actual_runs", []).append(runs[-1])
            out_file.write_text(json.dumps(result, indent=1))
        return runs

    if args.actual_only:
        size = full if args.actual_only == "full" else int(args.actual_only)
        actual_runs(size, args.full_seeds if args.actual_only == "full" else args.big_seeds)
        result["load_after"] = os.getloadavg()
        out_file.write_text(json.dumps(result, indent=1))
        print(f"results: {out_file}")
        return 0
    if args.curve:
        curve = json.loads(args.curve.read_text())
        n = np.array([p["examples"] for p in curve["points"]], dtype=float)
        y = np.array([p["scores"][curve["metric"]] for p in curve["points"]])
        curve["fit"] = analyse(n, y, bounded=bool(y.max() <= 1.0), seed=curve["config"]["train"]["seed"])
        # The curve's own settings: this invocation's --pool, --seeds, --epochs, --pool-seed and overrides trained
        # nothing of it (its pool seed is not in curve.json).
        result.update(curve_file=str(args.curve), pool=curve["pool_examples"], fractions=curve["fractions"],
                      seeds=len(curve["seeds"]), epochs=curve["config"]["train"]["epochs"], pool_seed=None,
                      overrides=None)
    else:
        curve = learning_curve(None, [f"data.train={pool_file}", *overrides], fractions=FRACTIONS,
                               seeds=args.seeds, output=work / "curve")
        result["curve_seconds"] = time.perf_counter() - started
        n = np.array([p["examples"] for p in curve["points"]], dtype=float)
        y = np.array([p["scores"][curve["metric"]] for p in curve["points"]])
    fit = curve["fit"]
    # analyse's own bootstrap: same points, bounded as it was (accuracy <= 1), its seed and number of draws
    bounded = bool(y.max() <= 1.0)
    draws = bootstrap(n, y, bounded=bounded, seed=curve["config"]["train"]["seed"])
    params = parameters_of(fit)  # strop's forecast: for accuracy the mean of the two laws below
    saturating = params[:3]
    ceiling_free = params[3:] if len(params) == 5 else fit_ceiling_free(n, y)  # an unbounded score: for the record
    result["curve"] = {"points": curve["points"], "fit": fit}
    given = [r for path in (args.actual or []) for r in json.loads(path.read_text()).get("actual_runs", [])]

    checks = []
    for size, seeds in ((args.big, args.big_seeds), (full, args.full_seeds)):
        predicted = float(forecast(size, params))
        low, high = interval([forecast(size, d) for d in draws])
        runs = [r for r in given if r["size"] == size] if args.curve else actual_runs(size, seeds)
        if not runs:
            continue
        actual = [r["accuracy"] for r in runs]
        checks.append({"size": size, "predicted": predicted, "interval": [low, high], "runs": runs,
                       "predicted_saturating": float(power_law(size, *saturating)),
                       "predicted_ceiling_free": float(power_law(size, 1.0, *ceiling_free)),
                       "actual_mean": float(np.mean(actual)),
                       "actual_std": float(np.std(actual, ddof=1)) if len(actual) > 1 else None,
                       "gap_points": 100 * (float(np.mean(actual)) - predicted),
                       "inside_interval": bool(low <= np.mean(actual) <= high)})
        result["checks"] = checks
        out_file.write_text(json.dumps(result, indent=1))
    result["load_after"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    out_file.write_text(json.dumps(result, indent=1))

    print(f"\nfit on {result['pool']} examples ({fit['model']}, {result['seeds']} seeds a size): a "
          f"{saturating[0]:.4f}, b {saturating[1]:.4g}, c {saturating[2]:.3f}; b' {ceiling_free[0]:.4g}, "
          f"c' {ceiling_free[1]:.3f}; train.epochs={result['epochs']}")
    print("| size | strop's forecast (95% interval) | actual (mean ± std, seeds) | actual − forecast | "
          "saturating law: predicted, gap | ceiling-free law: predicted, gap |")
    print("|---|---|---|---|---|---|")
    for c in checks:
        spread = f" ± {c['actual_std']:.4f}" if c["actual_std"] is not None else ""
        print(f"| {c['size']:,} | {c['predicted']:.4f} [{c['interval'][0]:.4f}, {c['interval'][1]:.4f}] | "
              f"{c['actual_mean']:.4f}{spread} ({len(c['runs'])}) | {c['gap_points']:+.1f} points | "
              f"{c['predicted_saturating']:.4f}, {100 * (c['actual_mean'] - c['predicted_saturating']):+.1f} | "
              f"{c['predicted_ceiling_free']:.4f}, {100 * (c['actual_mean'] - c['predicted_ceiling_free']):+.1f} |")
    print(f"\nresults: {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

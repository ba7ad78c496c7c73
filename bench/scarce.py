"""Scarce labels (issue 19): every method at a few labelled examples per class, with an unlabelled pool.

    nice -n 5 python bench/scarce.py --cells trec:8,sst2:8,sst2:64 --draws 1       # most informative first
    nice -n 5 python bench/scarce.py --datasets sst2,trec --per-class 8,16,64 --draws 3   # the whole matrix
    python bench/scarce.py --cells trec:8 --draws 1 --methods full,frozen --pool-cap 200 --out /tmp/scarce  # smoke

For each draw d (1..N), dataset and per-class count k: a seeded (random_state=d) stratified sample of k
examples of each class of train.csv (a class with fewer gives all it has: said, and recorded as the cell's
short_classes); the rest of train.csv, labels dropped, shuffled with the same seed and
capped at --pool-cap texts (default 2,000), is the unlabelled pool; the scoring split is the dataset's
dev.csv, or for a dataset without one (TREC) the harness's own seeded held-out 20% of train.csv (at most
1,000; `rows.source_splits`), which is then neither in the sample nor in the pool. Every method of a cell
trains on the same files, with train.seed=d, each in its own process:

    fewshot    strop fit method.name=fewshot (its defaults)
    setfit     bench/run.py's SetFit worker (`run.launch`), 1 epoch (the docs' Few-shot budget)
    full       strop fit method.freeze_layers=0 (every layer trains; the default since 3 December 2026
               freezes the bottom half of a text classifier up to 2,000 examples: pinned here so that every
               draw of the matrix trains alike; selftrain and pretrain pin it too)
    frozen     strop fit method.name=freeze (frozen body, the head trains)
    selftrain  strop fit data.unlabeled=<pool.csv> (one round; the last round's model is scored)
    pretrain   strop pretrain --data <pool.txt> train.epochs=1, then strop fit model.name=<that>/model
    auto       strop fit method.name=auto (the method it chose is recorded)

Accuracy is strop's summary.json validation accuracy (the restored best epoch on the scoring file) for the
strop runs, the SetFit worker's accuracy on the same file for SetFit. Wall seconds are the whole process
(pretrain: both processes). Writes <out>/scarce-<stamp>.json after every run and <out>/scarce-<stamp>.md at
the end: mean ± std over draws, the paired gap of each method against fewshot (mean over the draws both
finished), mean wall seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rows  # noqa: E402  (the harness's data: train.csv, dev.csv or its held-out split)
import run as harness  # noqa: E402  (the SetFit worker, the workers' environment)

METHODS = ["fewshot", "setfit", "full", "frozen", "selftrain", "pretrain", "auto"]
STROP = str(Path(sys.executable).parent / "strop")
EVERY_LAYER = ["method.freeze_layers=0"]  # full, selftrain and pretrain: as the matrix's first draws trained
STROP_METHOD = {"fewshot": ["method.name=fewshot"], "full": EVERY_LAYER, "frozen": ["method.name=freeze"],
                "auto": ["method.name=auto"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="sst2,trec")
    parser.add_argument("--per-class", default="8,16,64")
    parser.add_argument("--cells", help="dataset:k pairs in run order (overrides --datasets and --per-class), "
                                        "e.g. trec:8,sst2:8,sst2:64")
    parser.add_argument("--draws", type=int, default=3, help="draws 1..N of every cell (the draw is the seed)")
    parser.add_argument("--first-draw", type=int, default=1, help="start at this draw (to add draws later)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--pool-cap", type=int, default=2000, help="at most this many unlabelled texts")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--table", type=Path, nargs="+", metavar="RESULT.json",
                        help="only print the table of these result files (merged: where they overlap, the later "
                             "file's run counts); runs nothing")
    args = parser.parse_args(argv)
    if args.table:
        return args
    if args.cells:
        args.cells = parse_cells(parser, args.cells, "--cells")
    else:
        datasets = [d for d in args.datasets.split(",") if d]
        counts = [k for k in args.per_class.split(",") if k]
        args.cells = parse_cells(parser, ",".join(f"{d}:{k}" for d in datasets for k in counts), "--per-class")
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {METHODS}")
    check_data(parser, [dataset for dataset, _ in args.cells])
    return args


def parse_cells(parser: argparse.ArgumentParser, value: str, option: str) -> list[tuple[str, int]]:
    """'trec:8,sst2:64' -> [('trec', 8), ('sst2', 64)]; a cell without a whole number k >= 1 after its ':'
    is refused (parser.error: exit 2). Also fewshot_screen.py's --cells."""
    cells = []
    for item in (c.strip() for c in value.split(",") if c.strip()):
        dataset, _, k = item.partition(":")
        if not dataset or not (k.isdigit() and int(k) >= 1):
            parser.error(f"{option} {item}: give each cell as DATASET:K, K the labelled examples per class, a whole "
                         "number >= 1 (e.g. trec:8)")
        cells.append((dataset, int(k)))
    return cells


def check_data(parser: argparse.ArgumentParser, datasets: list[str]) -> None:
    """Every data folder the cells draw from passes `rows.checked_splits` (it exists, has the columns text,label,
    can be read, and has two classes and a scorable example), before anything is written: else one message and
    exit 2. Also fewshot_screen.py's (curve_check.py calls `rows.checked_splits` itself)."""
    for dataset in dict.fromkeys(datasets):
        try:
            rows.checked_splits(dataset)
        except LookupError as error:
            parser.error(str(error))


def prepare(dataset: str, per_class: int, draw: int, pool_cap: int, folder: Path) -> dict:
    """The cell's files: train.csv (k a class), pool.csv (text only) and pool.txt, score.csv."""
    train, score = rows.source_splits(dataset)
    counts = train["label"].value_counts()
    short = counts.index[counts < per_class]  # these classes give all they have (Banking77 at 64: 31 to 168)
    drawn = train[~train["label"].isin(short)].groupby("label", group_keys=False).sample(n=per_class,
                                                                                        random_state=draw)
    sample = pd.concat([drawn, train[train["label"].isin(short)]])
    rest = train.drop(index=sample.index).sample(frac=1.0, random_state=draw).head(pool_cap)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": folder / "train.csv", "score": folder / "score.csv", "pool": folder / "pool.csv",
             "pool_txt": folder / "pool.txt"}
    sample.sort_index().to_csv(files["train"], index=False)
    score.to_csv(files["score"], index=False)
    rest[["text"]].to_csv(files["pool"], index=False)
    files["pool_txt"].write_text("".join(" ".join(t.split()) + "\n" for t in rest["text"]), encoding="utf-8")
    return {"files": files, "n_train": len(sample), "n_score": len(score), "n_pool": len(rest),
            "classes": int(sample["label"].nunique()),
            # classes with fewer than k examples in train.csv, each trained on all of them
            "short_classes": {str(label): int(counts[label]) for label in short}}


def strop(command: list[str], log: Path) -> tuple[int, float]:
    """Runs one strop command, its output appended to log; (exit code, wall seconds)."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, **harness.WORKER_ENV}).returncode
    return code, time.perf_counter() - started


def tail(log: Path) -> str:
    lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    return lines[-1][:400] if lines else "(no output)"


def auto_choice(run_dir: Path) -> dict:
    """What method.name=auto chose and why: provenance.json's method_choice (config.yaml's method.name says
    the same)."""
    path = run_dir / "provenance.json"
    choice = json.loads(path.read_text()).get("method_choice") if path.is_file() else None
    return choice or {"chosen": None, "why": "no method_choice in provenance.json"}


def run_method(method: str, cell: dict, draw: int, work: Path, log: Path) -> dict:
    f = cell["files"]
    data = [f"data.train={f['train']}", f"data.validation={f['score']}", f"train.seed={draw}"]
    if method == "setfit":
        files = SimpleNamespace(name=None, train=f["train"], score=f["score"], task="text_classification")
        files.name = f"{f['train'].parent.name}"
        result = harness.launch("setfit", files, draw, 1, log.parent)
        if "error" in result or "skipped" in result:
            return {"error": result.get("error") or result.get("skipped")}
        return {"accuracy": result["accuracy"], "wall_seconds": result["process_seconds"],
                "train_seconds": result.get("train_seconds")}
    out = work / method
    if method == "pretrain":
        code, pre_wall = strop([STROP, "pretrain", "--data", str(f["pool_txt"]), "--output", str(work / "mlm"),
                                "--quiet", "train.epochs=1", f"train.seed={draw}"], log)
        if code != 0:
            return {"error": f"strop pretrain exit {code}: {tail(log)}", "wall_seconds": pre_wall}
        code, wall = strop([STROP, "fit", *data, f"model.name={work / 'mlm' / 'model'}", *EVERY_LAYER,
                            f"output_dir={out}", "--quiet"], log)
        wall += pre_wall
    else:
        extra = [f"data.unlabeled={f['pool']}", *EVERY_LAYER] if method == "selftrain" else STROP_METHOD[method]
        code, wall = strop([STROP, "fit", *data, *extra, f"output_dir={out}", "--quiet"], log)
    if code != 0:
        return {"error": f"strop exit {code}: {tail(log)}", "wall_seconds": wall}
    run_dir = out
    result = {"wall_seconds": wall}
    if method == "selftrain":
        report = json.loads((out / "self_training.json").read_text())
        run_dir = Path(report["rounds"][-1]["run"])
        result["self_training"] = {"pool": report["pool"], "rounds": [
            {k: r.get(k) for k in ("round", "pseudo_labels", "confident", "per_class")}
            | {"accuracy": r["validation"].get("accuracy")} for r in report["rounds"]]}
    summary = json.loads((run_dir / "summary.json").read_text())
    result.update(accuracy=summary["validation"]["accuracy"], train_seconds=summary.get("train_seconds"),
                  epochs_run=summary.get("epochs_run"))
    if method == "auto":
        result["auto"] = auto_choice(run_dir)
    if method == "pretrain":
        result["pretrain_wall_seconds"] = pre_wall
    return result


def table(runs: list[dict]) -> str:
    """Markdown: per cell and method, mean ± std over draws, the paired gap against fewshot, wall s. Of runs of
    the same (dataset, per_class, draw, method), as in result files that overlap, the last one counts."""
    runs = list({(r["dataset"], r["per_class"], r["draw"], r["method"]): r for r in runs}.values())
    lines = ["| data | k/class | method | draws | accuracy (mean ± std) | gap vs fewshot (paired) | wall s |",
             "|---|---|---|---|---|---|---|"]
    cells = list(dict.fromkeys((r["dataset"], r["per_class"]) for r in runs))
    for dataset, k in cells:
        here = [r for r in runs if (r["dataset"], r["per_class"]) == (dataset, k)]
        base = {r["draw"]: r["accuracy"] for r in here if r["method"] == "fewshot" and "accuracy" in r}
        for method in METHODS:
            done = [r for r in here if r["method"] == method and "accuracy" in r]
            failed = [r for r in here if r["method"] == method and "accuracy" not in r]
            if not done and not failed:
                continue
            if not done:
                lines.append(f"| {dataset} | {k} | {method} | 0 | not available: {failed[0]['error'][:160]} | | |")
                continue
            acc = [r["accuracy"] for r in done]
            spread = f" ± {np.std(acc, ddof=1):.3f}" if len(acc) > 1 else ""
            pairs = [r["accuracy"] - base[r["draw"]] for r in done if r["draw"] in base]
            gap = "" if method == "fewshot" or not pairs else f"{np.mean(pairs):+.3f} ({len(pairs)})"
            note = ""
            if method == "auto":
                chosen = sorted({str(r.get("auto", {}).get("chosen")) for r in done})
                note = f" (chose: {', '.join(chosen)})" if chosen else ""
            wall = np.mean([r["wall_seconds"] for r in done])
            lines.append(f"| {dataset} | {k} | {method}{note} | {len(done)} | {np.mean(acc):.3f}{spread} "
                         f"({', '.join(f'{a:.3f}' for a in acc)}) | {gap} | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        merged = [r for path in args.table for r in json.loads(path.read_text())["runs"]]
        print(table(merged))
        return 0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / f"scarce-{stamp}"
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + shlex.join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
              "commit": harness.source_commit(), "data_root": rows.data_roots()["data_root"],
              "load_before": os.getloadavg(), "pool_cap": args.pool_cap,
              "cells": args.cells, "methods": args.methods, "data": {}, "runs": []}
    json_file = args.out / f"scarce-{stamp}.json"
    for draw in range(args.first_draw, args.first_draw + args.draws):
        for dataset, k in args.cells:
            folder = logs / f"{dataset}-k{k}-draw{draw}"
            cell = prepare(dataset, k, draw, args.pool_cap, folder / "data")
            if cell["short_classes"] and draw == args.first_draw:
                print(f"{dataset} k={k}: {len(cell['short_classes'])} classes have fewer than {k} examples and "
                      f"train on all they have (recorded in the results' data, short_classes)", flush=True)
            result["data"][f"{dataset}-k{k}-draw{draw}"] = {key: v for key, v in cell.items() if key != "files"}
            for method in args.methods:
                load = os.getloadavg()[0]
                try:
                    measured = run_method(method, cell, draw, folder / "runs", folder / f"{method}.log")
                except Exception as error:  # a run's files not as expected: say so, go on with the others
                    measured = {"error": f"{type(error).__name__}: {error}"}
                entry = {"dataset": dataset, "per_class": k, "draw": draw, "method": method, "load_before": load,
                         **measured}
                result["runs"].append(entry)
                what = (f"accuracy {entry['accuracy']:.4f}" if "accuracy" in entry else f"FAILED: {entry['error']}")
                extra = f" auto: {entry['auto']}" if "auto" in entry else ""
                print(f"{dataset} k={k} draw {draw} {method}: {what}, wall {entry.get('wall_seconds', 0):.0f} s, "
                      f"load {load:.1f}{extra}", flush=True)
                json_file.write_text(json.dumps(result, indent=1, default=str))
    result["load_after"] = os.getloadavg()
    json_file.write_text(json.dumps(result, indent=1, default=str))
    md = table(result["runs"])
    json_file.with_suffix(".md").write_text(md)
    print("\n" + md + f"\nresults: {json_file}, logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

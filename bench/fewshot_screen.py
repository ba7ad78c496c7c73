"""Screens settings of `method.name=fewshot` over many draws of the scarce-label cells (issue 19): every variant on
the same draws, so each draw gives a paired difference against the first variant.

    python bench/fewshot_screen.py --cells sst2:16,sst2:64 --draws 10 --parallel 2 \\
        --variant "base" --variant "cosent method.pair_loss=cosent"
    python bench/fewshot_screen.py --table bench/results/fewshot-screen-<stamp>.jsonl   # only the table

A cell is `bench/scarce.py`'s: k labelled examples a class of train.csv drawn with the draw as seed (which is
also train.seed), scored on sst2/dev.csv or TREC's held-out 1,000 as the run's validation set. Each run is one
`strop.fit` in a worker process (--parallel of them at a time; `--set KEY=VALUE` adds an override to every
run, e.g. train.device=cuda). Writes one JSON line per run to bench/results/fewshot-screen-<stamp>.jsonl and
prints, per cell and variant, mean ± std accuracy and the mean paired gap to the first variant with how many
draws it wins.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cell_folder(cell: tuple[str, int], draw: int, work: Path) -> Path:
    """Where a draw's train.csv and score.csv are: written by bench/scarce.py's `prepare` (no unlabelled pool)
    before the runs start."""
    return work / "data" / f"{cell[0]}-{cell[1]}-{draw}"


def run_one(cell: tuple[str, int], draw: int, name: str, overrides: list[str], work: Path, rank: int = 0) -> dict:
    """One fewshot run of a variant on one draw of a cell (the variant "setfit": SetFit, as bench/run.py's
    worker runs it, 1 embedding epoch); its accuracy and times."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dataset, k = cell
    files = {part: cell_folder(cell, draw, work) / f"{part}.csv" for part in ("train", "score")}
    out = work / "runs" / f"{dataset}-{k}-{draw}-{name}"
    started = time.perf_counter()
    about = {"dataset": dataset, "per_class": k, "draw": draw, "variant": name, "rank": rank, "overrides": overrides}
    if name == "setfit":
        import workers

        result = workers.run_setfit(str(files["train"]), str(files["score"]), draw, 1, out)
        if "skipped" in result:
            raise RuntimeError(result["skipped"])
        return about | {"accuracy": result["accuracy"], "wall_seconds": round(time.perf_counter() - started, 2)}
    import strop

    run = strop.fit(None, [f"data.train={files['train']}", f"data.validation={files['score']}",
                           "method.name=fewshot", f"train.seed={draw}", f"output_dir={out}", "train.quiet=true",
                           *overrides])
    summary = json.loads((run / "summary.json").read_text())
    result = about | {"accuracy": summary["validation"]["accuracy"],
                      "wall_seconds": round(time.perf_counter() - started, 2)}
    stage = run / "contrastive" / "summary.json"  # none where a variant trains another method
    if stage.is_file():
        stage_summary = json.loads(stage.read_text())
        result |= {"contrastive_steps": stage_summary["steps"], "contrastive_seconds": stage_summary["train_seconds"]}
    return result


def table(runs: list[dict]) -> str:
    """Per cell and variant: mean ± std accuracy over draws, and the paired gap to the cell's first variant.
    Failed runs (an "error" line) are left out of the numbers and counted in the failed column."""
    lines = ["| data | k/class | variant | draws | accuracy (mean ± std) | gap vs first (paired) | wins | wall s "
             "| failed |", "|---|---|---|---|---|---|---|---|---|"]
    cells = list(dict.fromkeys((r["dataset"], r["per_class"]) for r in runs))
    for dataset, k in cells:
        here = [r for r in runs if (r["dataset"], r["per_class"]) == (dataset, k)]
        # in the order they were asked for (runs finish in any order; an error line of an older screen has no rank)
        variants = list(dict.fromkeys(r["variant"] for r in sorted(here, key=lambda r: r.get("rank", len(here)))))
        done = [r for r in here if "error" not in r]
        first = {r["draw"]: r["accuracy"] for r in done if r["variant"] == variants[0]}
        for name in variants:
            mine = {r["draw"]: r for r in done if r["variant"] == name}
            failed = [r for r in here if r["variant"] == name and "error" in r]
            if not mine:
                lines.append(f"| {dataset} | {k} | {name} | 0 | not available: {failed[0]['error'][:160]} | | | | "
                             f"{len(failed)} |")
                continue
            acc = np.array([r["accuracy"] for r in mine.values()])
            paired = [mine[d]["accuracy"] - first[d] for d in mine if d in first]
            reference = name == variants[0] or not paired
            gap = "" if reference else f"{np.mean(paired):+.4f} ({len(paired)})"
            wins = "" if reference else f"{sum(p > 0 for p in paired)}/{sum(p != 0 for p in paired)}"
            spread = f" ± {acc.std(ddof=1):.4f}" if len(acc) > 1 else ""
            wall = np.mean([r["wall_seconds"] for r in mine.values()])
            lines.append(f"| {dataset} | {k} | {name} | {len(acc)} | {acc.mean():.4f}{spread} | {gap} | {wins} | "
                         f"{wall:.0f} | {len(failed)} |")
    n_failed = sum("error" in r for r in runs)
    if n_failed:
        lines.append(f"\n{n_failed} of {len(runs)} runs failed and are left out (their errors are in the .jsonl)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="sst2:16,sst2:64", help="dataset:k pairs, e.g. trec:8,sst2:64")
    parser.add_argument("--draws", type=int, default=10, help="N draws of every cell: FIRST..FIRST+N-1")
    parser.add_argument("--first-draw", type=int, default=1, metavar="FIRST",
                        help="the first draw (default 1): a later one gives draws no earlier screen chose on")
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME KEY=VALUE ..."',
                        help="a name and its overrides; the first is the reference (default: base)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override of every run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, help="where the runs go (default: beside the results)")
    parser.add_argument("--table", type=Path, nargs="+", metavar="SCREEN.jsonl", help="only print their table")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(line) for path in args.table for line in path.read_text().splitlines() if line]))
        return 0
    import rows
    import scarce

    cells = scarce.parse_cells(parser, args.cells, "--cells")
    scarce.check_data(parser, [dataset for dataset, _ in cells])  # before anything is written
    data_root = rows.data_roots()["data_root"]
    variants = [shlex.split(v) for v in (args.variant or ["base"])]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / f"fewshot-screen-{stamp}.jsonl"
    work = args.work or args.out / f"fewshot-screen-{stamp}"
    draws = range(args.first_draw, args.first_draw + args.draws)
    jobs = [(cell, draw, v[0], v[1:] + args.set, work, rank) for cell in cells for draw in draws
            for rank, v in enumerate(variants)]
    short_classes = {}  # cell -> the classes with fewer than k examples in train.csv (the same for every draw)
    for cell in cells:  # written once, before the workers read them
        for draw in draws:
            short_classes[cell] = scarce.prepare(*cell, draw, 0, cell_folder(cell, draw, work))["short_classes"]
        if short_classes[cell]:
            print(f"{cell[0]} k={cell[1]}: {len(short_classes[cell])} classes have fewer than {cell[1]} examples and "
                  "train on all they have (recorded in each run's line, short_classes)", flush=True)
    print(f"{len(jobs)} runs, {args.parallel} at a time; results {out_file}", flush=True)
    runs = []
    with ProcessPoolExecutor(args.parallel) as pool:
        futures = {pool.submit(run_one, *job): job for job in jobs}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as error:  # one failed run is reported; the others go on
                cell, draw, name, _, _, rank = futures[future]
                result = {"dataset": cell[0], "per_class": cell[1], "draw": draw, "variant": name, "rank": rank,
                          "error": f"{type(error).__name__}: {error}"}
            result["data_root"] = data_root
            cell = (result["dataset"], result["per_class"])
            if short_classes[cell]:
                result["short_classes"] = short_classes[cell]
            with out_file.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
            runs.append(result)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

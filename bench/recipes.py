"""Recipe sweep: one config fitted several times with different overrides, a few runs at a time, every epoch's
metrics gathered into one JSON Lines file as the runs go. For comparing recipes epoch by epoch on a fast machine
(a GPU: accuracy after each epoch does not depend on the hardware) before timing the best on the target machine.

python bench/recipes.py examples/cifar10_finetune.yaml --parallel 4 --set train.patience=0 \
    --recipe "base" --recipe "px128 data.image_size=128 train.epochs=13" --recipe "seed1 train.seed=1"

Each --recipe is a name and its overrides (key=value, as `strop fit` takes them), on top of --set. Writes
<out>/recipes-<UTC stamp>.jsonl, a line per epoch of each run ({"recipe", "epoch", "val_...", "epoch_seconds", ...})
appended as soon as strop writes it, so a sweep cut short keeps what it measured, then prints each recipe's
best epoch. The runs' folders and logs go under --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the YAML config every recipe starts from")
    parser.add_argument("--recipe", action="append", required=True, metavar='"NAME KEY=VALUE ..."')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every recipe")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs", default="/tmp/strop-recipes", help="where the runs' folders and logs go")
    parser.add_argument("--out", default=str(HERE / "results"))
    return parser.parse_args(argv)


class Run:
    """One recipe's `strop fit` in a child process, and how much of its metrics.jsonl has been gathered."""

    def __init__(self, name: str, overrides: list[str], args, threads: int):
        self.name = name
        self.folder = Path(args.runs) / name
        self.log = Path(args.runs) / f"{name}.log"
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "strop", "fit", "--quiet", args.config, *args.set, *overrides,
                   f"output_dir={self.folder}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.started = time.time()
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.gathered = 0

    def new_epochs(self) -> list[dict]:
        metrics = self.folder / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        complete = [line for line in lines if line.endswith("}")]
        fresh = [json.loads(line) for line in complete[self.gathered:]]
        self.gathered = len(complete)
        return fresh


def sweep(args) -> Path:
    recipes = [(text.split()[0], text.split()[1:]) for text in args.recipe]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"recipes-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    waiting, running, best = list(recipes), [], {}
    while waiting or running:
        while waiting and len(running) < args.parallel:
            name, overrides = waiting.pop(0)
            running.append(Run(name, overrides, args, threads))
        time.sleep(2)
        for run in list(running):
            done = run.process.poll() is not None
            with path.open("a") as file:
                for epoch in run.new_epochs():
                    row = {"recipe": run.name, **epoch}
                    file.write(json.dumps(row) + "\n")
                    print(json.dumps({k: row.get(k) for k in ("recipe", "epoch", "val_accuracy", "val_loss",
                                                              "epoch_seconds", "train_samples_per_s")}), flush=True)
                    if row.get("best"):
                        best[run.name] = row
            if done:
                running.remove(run)
                wall = time.time() - run.started
                print(f"# {run.name}: exit {run.process.returncode} after {wall:.0f} s", flush=True)
                if run.process.returncode:
                    print(run.log.read_text()[-3000:], flush=True)
    for name, _ in recipes:
        row = best.get(name, {})
        print(f"{name}: best epoch {row.get('epoch')} val_accuracy {row.get('val_accuracy')}")
    return path


if __name__ == "__main__":
    print(sweep(parse_args()))

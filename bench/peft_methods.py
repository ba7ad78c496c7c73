"""Benchmark: parameter-efficient methods against full fine-tuning, and the compressed forms of the result.

    python bench/peft_methods.py                                # sst2-1k, full and lora, 3 seeds, 5 epochs
    python bench/peft_methods.py --rows trec --methods full,lora,ia3,prompt_tuning --seeds 1

Each (row, method, seed) is one `strop fit` in its own process on the harness's row files (bench/rows.py:
the same training sample and scoring split as bench/run.py), the bundled MiniLM-L6, the row's epoch budget
and strop's defaults otherwise (optim.lr=auto: 5e-5 for full fine-tuning, 1e-3 where the body is frozen).
Measured: validation accuracy of the saved model, wall seconds of the process, training seconds, and the
parameters that train (full: all; an adapter run: its adapter and the task head, as saved). Then
`strop compress` on the first seed's run of each method (--compress-seeds: more): size, latency per example at batch 1 and 32 and
accuracy of the fp32 model and its int8 and ONNX forms. Results: bench/results/peft-<timestamp>.json and .md.

(Not named peft.py: this folder is on sys.path, and the module would hide the peft package.) This is a
script of its own rather than tools of bench/run.py: its measurements (trainable parameters, the
compressed forms) are not the harness's, and it needs none of the peers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def trainable_parameters(run: Path) -> tuple[int, int]:
    """(parameters that trained, parameters of the model), as the run's summary.json records them."""
    counted = json.loads((run / "summary.json").read_text())["parameters"]
    return counted["trainable"], counted["total"]


def fit(files, method: str, seed: int, epochs: int, output: Path) -> dict:
    command = [sys.executable, "-m", "strop", "fit", f"data.train={files.train}", f"data.validation={files.score}",
               f"method.name={method}", f"train.epochs={epochs}", f"train.seed={seed}", f"output_dir={output}",
               "train.quiet=true"]
    load, started = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **ENV}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["(no output)"]}
    summary = json.loads((output / "summary.json").read_text())
    trained, total = trainable_parameters(output)
    return {"accuracy": summary["validation"]["accuracy"], "wall_seconds": round(wall, 1),
            "train_seconds": summary["train_seconds"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "peak_lr": summary.get("peak_lr"), "trainable_parameters": trained,
            "parameters": total, "load_before": round(load, 2)}


def aggregate(runs: list[dict]) -> list[dict]:
    table = []
    for row in dict.fromkeys(r["row"] for r in runs):
        for method in dict.fromkeys(r["method"] for r in runs if r["row"] == row):
            group = [r for r in runs if r["row"] == row and r["method"] == method and "error" not in r]
            if not group:
                continue
            accuracy = [r["accuracy"] for r in group]
            table.append({"row": row, "method": method, "seeds": len(group),
                          "accuracy_mean": statistics.mean(accuracy),
                          "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
                          "wall_seconds": statistics.mean(r["wall_seconds"] for r in group),
                          "train_seconds": statistics.mean(r["train_seconds"] for r in group),
                          "trainable_parameters": group[0]["trainable_parameters"],
                          "trainable_share": group[0]["trainable_parameters"] / group[0]["parameters"],
                          "load": statistics.mean(r["load_before"] for r in group)})
    return table


def markdown(table: list[dict], compressed: dict[str, list[dict]]) -> str:
    lines = ["| row | method | seeds | accuracy (mean ± std) | wall s | train s | trainable parameters | load |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for e in table:
        lines.append(f"| {e['row']} | {e['method']} | {e['seeds']} | {e['accuracy_mean']:.4f} ± {e['accuracy_std']:.4f} "
                     f"| {e['wall_seconds']:.0f} | {e['train_seconds']:.0f} | {e['trainable_parameters']:,} "
                     f"({e['trainable_share']:.2%}) | {e['load']:.1f} |")
    for name, rows in compressed.items():
        from strop.compress import table_text

        lines += ["", f"`strop compress` of {name}:", "", table_text(rows, ["accuracy", "macro_f1", "loss"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="sst2-1k", help="rows of bench/rows.py, comma-separated")
    parser.add_argument("--methods", default="full,lora", help="method.name values, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--compress", default="int8,onnx", help="forms for strop compress ('' for none)")
    parser.add_argument("--compress-seeds", type=int, default=1,
                        help="compress the runs of seeds 1 to N (the int8 accuracy loss varies by seed)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    import rows

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    result_file = args.out / f"peft-{stamp}.json"
    result = {"command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
              "date": stamp, "cpus": os.cpu_count(), "runs": [], "compress": {}}
    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="bench-peft-") as tmp:
        for row in [r for r in args.rows.split(",") if r]:
            files = rows.prepare(row, Path(tmp))
            print(f"{row}: {files.n_train} training examples, {files.n_score} scored", flush=True)
            for seed in range(1, args.seeds + 1):
                for method in methods:  # methods of one seed together: drifting load hits them alike
                    output = Path(tmp) / f"{row}-{method}-{seed}"
                    run = {"row": row, "method": method, "seed": seed, **fit(files, method, seed, args.epochs, output)}
                    result["runs"].append(run)
                    print(json.dumps(run), flush=True)
                    result_file.write_text(json.dumps(result, indent=1))
                    if seed <= args.compress_seeds and args.compress and "error" not in run:
                        from strop.compress import compress

                        forms = tuple(f for f in args.compress.split(",") if f)
                        result["compress"][f"{row} {method} (seed {seed})"] = compress(output, forms, quiet=True)
                        result_file.write_text(json.dumps(result, indent=1))
    result["table"] = aggregate(result["runs"])
    text = markdown(result["table"], result["compress"])
    result_file.write_text(json.dumps(result, indent=1))
    result_file.with_suffix(".md").write_text(f"{result['command']} ({result['cpus']} CPUs)\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Channel pruning of a fine-tuned timm CNN on real images: the bundled EfficientNet-Lite0 fine-tuned on a subset
of CIFAR-10 (bench/images.py's strop-full row), then `strop prune RUN --structure channels --sparsity S` for each S
(recovery: full fine-tuning, --recovery-epochs), then `strop compress` of the original and each pruned run.

    python bench/cnn_prune.py                                  # 100 images a class, sparsities 0.25 and 0.5
    python bench/cnn_prune.py --start RUN --sparsity 0.25      # prune an existing image run
    python bench/cnn_prune.py --start RUN --recovery-per-class 200 --val-per-class 0   # recover on a subset

Writes <out>/cnn-prune-<UTC stamp>.json and prints a Markdown table: parameters, size, latency per image at batch
1 and 32, and accuracy on the validation images (before pruning, pruned, after recovery), with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import images  # noqa: E402


def main(argv=None) -> int:
    from strop.compress import compress
    from strop.prune import prune

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", help="an image run to prune (default: fine-tune one, as bench/images.py strop-full)")
    parser.add_argument("--sparsity", default="0.25,0.5", help="shares of convolution channels to remove")
    parser.add_argument("--recovery-epochs", type=int, default=2)
    parser.add_argument("--recovery-per-class", type=int, default=0,
                        help="recover on the first N training images a class (0: the run's own training data)")
    parser.add_argument("--forms", default="int8", help="strop compress forms beside fp32 ('' for none)")
    known, rest = parser.parse_known_args(argv)
    args = images.parse_args(rest)  # the data, size, subset and training options of bench/images.py
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / f"cnn-prune-{stamp}"
    out.mkdir(parents=True)
    forms = tuple(f for f in known.forms.split(",") if f)
    result = {"command": " ".join(sys.argv), "date": stamp, "cpus": os.cpu_count(), "load_before": images.load(),
              "runs": []}

    def measure(name: str, run: Path, wall: float, report: dict | None = None) -> None:
        rows = compress(run, forms, quiet=True)
        result["runs"].append({"model": name, "run": str(run), "wall_s": round(wall, 1), "prune": report,
                               "compress": rows, "load_after": images.load()})
        print(json.dumps(result["runs"][-1]), flush=True)
        (out / "result.json").write_text(json.dumps(result, indent=2))

    started = time.perf_counter()
    if known.start:
        start = Path(known.start)
    else:
        images.strop_full(args, out)
        start = out / "strop-full"
    measure("original", start, time.perf_counter() - started)
    recovery = [f"train.epochs={known.recovery_epochs}", "train.quiet=true"]
    if known.recovery_per_class:
        recovery.append(f"data.train={images.subset(Path(args.data), 'train', known.recovery_per_class, out)}")
    for share in (float(s) for s in known.sparsity.split(",")):
        started = time.perf_counter()
        run = prune(start, share, [*recovery, f"output_dir={out / f'channels-{share}'}"], quiet=True,
                    structure="channels")
        measure(f"channels {share}", run, time.perf_counter() - started,
                json.loads((run / "prune.json").read_text()))
    print(markdown(result["runs"]))
    return 0


def markdown(runs: list[dict]) -> str:
    lines = ["| model | form | parameters | MB | batch 1 ms | batch 32 ms | accuracy: pruned / recovered |",
             "|---|---|---:|---:|---:|---:|---|"]
    for run in runs:
        for row in run["compress"]:
            pruned = f"{run['prune']['pruned']:.4f} / " if run["prune"] and row["form"] == "fp32" else ""
            lines.append(f"| {run['model']} | {row['form']} | {row['parameters']:,} | {row['size_mb']:.1f} | "
                         f"{row['ms_per_example_batch1']:.2f} | {row['ms_per_example_batch32']:.2f} | "
                         f"{pruned}{row['accuracy']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

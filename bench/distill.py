"""Distillation against direct fine-tuning: a 3-layer student of the bundled MiniLM-L6 (its embeddings, 3 of its 6
blocks and the head, taken from a fine-tuned teacher) trained on the teacher's soft targets and the labels
(`strop distill TEACHER --alpha 0.5`) against the same student, from the same start, trained on the labels
alone (`--alpha 0`).

    python bench/distill.py --rows sst2-1k --seeds 3

The teacher is one default `strop fit` of the row (seed 1); each student seed runs both variants with the
teacher's data and config. Accuracy on the row's scoring split, wall seconds and the 1-minute load average
before each run; one JSON line a run, then a table (mean ± std over the seeds), both written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows as bench_rows  # noqa: E402

VARIANTS = {"distilled": "0.5", "direct": "0"}  # --alpha: the soft targets' weight


def timed(action) -> tuple[Path, float, float]:
    load, started = os.getloadavg()[0], time.perf_counter()
    run = action()
    return run, time.perf_counter() - started, load


def accuracy(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["validation"]["accuracy"]


def main() -> None:
    import strop
    from strop.distill import distill

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="sst2-1k")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/distill.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        for row_name in args.rows.split(","):
            files = bench_rows.prepare(row_name, Path(tmp) / row_name)
            teacher, wall, load = timed(lambda: strop.fit(None, [
                f"data.train={files.train}", f"data.validation={files.score}", "train.seed=1", "train.quiet=true",
                f"output_dir={Path(tmp) / row_name / 'teacher'}"]))
            results.append({"row": row_name, "variant": "teacher", "seed": 1, "accuracy": accuracy(teacher),
                            "wall_seconds": round(wall, 1), "load_before": load})
            print(json.dumps(results[-1]), flush=True)
            for seed in range(1, args.seeds + 1):
                for name, alpha in VARIANTS.items():
                    output = Path(tmp) / row_name / f"{name}-{seed}"
                    student, wall, load = timed(lambda: distill(
                        teacher, [f"train.seed={seed}", f"output_dir={output}", "train.quiet=true"],
                        layers=args.layers, alpha=float(alpha)))
                    results.append({"row": row_name, "variant": name, "seed": seed, "alpha": float(alpha),
                                    "accuracy": accuracy(student), "wall_seconds": round(wall, 1),
                                    "load_before": load})
                    print(json.dumps(results[-1]), flush=True)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2))
    print(table(results))


def table(results: list[dict]) -> str:
    lines = ["| row | model | runs | accuracy (mean ± std) | wall s (mean) |", "|---|---|---:|---|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["row"], result["variant"]), []).append(result)
    for (row, variant), runs in groups.items():
        scores = [r["accuracy"] for r in runs]
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        lines.append(f"| {row} | {variant} | {len(runs)} | {statistics.mean(scores):.4f} ± {spread:.4f} | "
                     f"{statistics.mean(r['wall_seconds'] for r in runs):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Which sentence vector the head should read: the pooling a model was trained with (auto: mean for the
bundled all-MiniLM-L6-v2), [CLS], or BERT's pooler, on frozen, few-shot and full fine-tuning rows.

    python bench/pooling.py --rows trec-fs8,sst2-fs64,sst2-1k --methods full,freeze --seeds 3 --epochs 5

Every run is `strop fit` with strop's defaults but model.pooling, method.name, seed and epochs; the rows
are the benchmark's own (bench/rows.py, same data seed). Prints one line per run and a table of means, and
writes them to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows as bench_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="trec-fs8,sst2-fs64,sst2-1k")
    parser.add_argument("--methods", default="full,freeze")
    parser.add_argument("--poolings", default="mean,pooler,cls")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="bench/results/pooling.json")
    args = parser.parse_args()

    import strop

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row_name in args.rows.split(","):
            train, score = bench_rows.build(bench_rows.resolve(row_name))
            train_file, score_file = Path(tmp) / f"{row_name}-train.csv", Path(tmp) / f"{row_name}-score.csv"
            train.to_csv(train_file, index=False)
            score.to_csv(score_file, index=False)
            for method in args.methods.split(","):
                for pooling in args.poolings.split(","):
                    for seed in range(1, args.seeds + 1):
                        started = time.perf_counter()
                        run = strop.fit(None, [f"data.train={train_file}", f"data.validation={score_file}",
                                               f"model.pooling={pooling}", f"method.name={method}",
                                               f"train.seed={seed}", f"train.epochs={args.epochs}",
                                               "train.quiet=true", f"output_dir={Path(tmp) / 'run'}",
                                               "train.keep_checkpoint=false"])
                        summary = json.loads((run / "summary.json").read_text())
                        result = {"row": row_name, "method": method, "pooling": pooling, "seed": seed,
                                  "accuracy": summary["validation"]["accuracy"],
                                  "wall_seconds": round(time.perf_counter() - started, 1)}
                        results.append(result)
                        print(json.dumps(result), flush=True)
                        import shutil

                        shutil.rmtree(run)
    table = {}
    for r in results:
        table.setdefault((r["row"], r["method"], r["pooling"]), []).append(r["accuracy"])
    print("\n| row | method | pooling | accuracy (mean ± std) |\n|---|---|---|---|")
    for (row, method, pooling), values in table.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {row} | {method} | {pooling} | {statistics.mean(values):.4f} ± {std:.4f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: the same fine-tuning jobs with strop, the Hugging Face Trainer, SetFit and TF-IDF.

    python bench/run.py                                   # every row, every tool, 3 seeds, 5 epochs
    python bench/run.py --rows sst2-fs64 --seeds 1 --epochs 1
    python bench/run.py --write-docs                      # ... and rewrite docs/benchmarks.md

Each run is a separate worker process (`run.py --worker TOOL ...`) that writes its measurements as JSON;
this parent prepares the data, launches the workers one after another, prints each result as it comes,
and aggregates them into bench/results/<timestamp>.json and .md. See bench/README.md.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the worker's wall clock starts before any heavy import

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the harness's own modules, also when imported from elsewhere
DOCS = HERE.parent / "docs" / "benchmarks.md"
DOCS_RECORD = DOCS.with_suffix(".json")  # the published rows and their invocations; the .md is rendered from it
ALL_ROWS = ["sst2-1k", "sst2-full", "trec", "banking77", "sst2-fs64", "trec-fs8", "conll2003"]  # rows.ROWS, in order
TOKEN_TOOLS = ["strop", "trainer"]  # the tools with a token-classification job
FEW_SHOT_TOOLS = {"setfit", "strop-fewshot"}  # the tools for few-shot rows only
# strop: the peers' epoch budget; strop-default: `strop fit` with nothing but the data (its own epoch budget)
ALL_TOOLS = ["strop", "strop-default", "strop-fewshot", "trainer", "setfit", "tfidf"]
# The same environment for every worker: offline, no tokenizer thread pools fighting torch's.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ALL_ROWS),
                        help=f"comma-separated, of {', '.join(ALL_ROWS)} or any data folder with a train.csv "
                             "(or, under the NER data, a train.conll); ROW:N runs that row with N seeds")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help=f"comma-separated, of {', '.join(ALL_TOOLS)}")
    parser.add_argument("--seeds", type=int, default=3, help="number of training seeds (1, 2, ...) of each row")
    parser.add_argument("--epochs", type=int, default=5, help="epoch budget of every tool")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the rows measured into {DOCS.relative_to(HERE.parent)} (other rows stay)")
    parser.add_argument("--publish", type=Path, metavar="RESULT.json",
                        help="put a run's result file into the docs, as --write-docs would have (a stopped run: the "
                             "seeds every tool completed); runs nothing")
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)  # smoke runs: cap train and score rows
    # worker mode, used by the parent
    parser.add_argument("--worker", choices=ALL_TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--score", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--task", default="text_classification", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.row_seeds = _row_seeds(parser, args.rows, args.seeds)  # row -> number of seeds, in the order given
    args.rows, args.tools = list(args.row_seeds), _names(parser, args.tools, ALL_TOOLS)
    if args.worker or args.publish:  # --publish trains nothing: the rows' data need not be here
        return args
    _check_rows(parser, args.rows)
    if not plan(args):
        parser.error("no tool of --tools runs on any row of --rows: " + "; ".join(not_applying(args.rows, args.tools)))
    if args.write_docs and args.limit is not None:
        parser.error("--write-docs publishes full runs only; drop --limit")
    if args.write_docs:
        import rows

        if rows.data_roots() != rows.default_data_roots():
            parser.error(f"--write-docs publishes runs on the shipped data sets only; this run reads "
                         f"{rows.DATA_ROOT} (BENCH_DATA) and {rows.NER_ROOT}: drop --write-docs, or unset BENCH_DATA "
                         "and BENCH_NER_DATA")
    return args


def _names(parser: argparse.ArgumentParser, value: str, allowed: list[str]) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def _row_seeds(parser: argparse.ArgumentParser, value: str, default: int) -> dict[str, int]:
    """'sst2-1k,sst2-full:1' -> {'sst2-1k': default, 'sst2-full': 1}: the big rows can run fewer seeds."""
    counts = {}
    for item in value.split(","):
        name, _, count = item.strip().partition(":")
        if not name:
            continue
        if count and not (count.isdigit() and int(count) >= 1):
            parser.error(f"--rows {item.strip()}: the seed count after ':' must be a whole number >= 1")
        counts[name] = int(count) if count else default
    return counts


def _check_rows(parser: argparse.ArgumentParser, names: list[str]) -> None:
    import rows  # not at the top: a worker's wall clock should not pay for pandas and scikit-learn

    for name in names:
        try:
            rows.resolve(name)
        except LookupError as error:
            parser.error(str(error))


def worker(args: argparse.Namespace) -> int:
    """Worker mode: one job, its measurements written to --result as JSON."""
    from workers import measure

    result = measure(args.worker, args.train, args.score, args.seed, args.epochs, STARTED, args.task)
    args.result.write_text(json.dumps(result, indent=1))
    return 0


def applies(tool: str, row: str) -> bool:
    """The few-shot methods (SetFit, strop's method.name=fewshot) run on the few-shot rows only; the others
    run on every text row (the goal for strop is stated against the Trainer, few-shot rows included). A
    token row (named entities) runs strop and the Trainer only: SetFit and TF-IDF + logistic regression
    classify whole texts."""
    import rows

    row = rows.resolve(row)
    if row.task == rows.TOKENS:
        return tool in TOKEN_TOOLS
    return tool not in FEW_SHOT_TOOLS or row.few_shot


def not_applying(row_names: list[str], tools: list[str]) -> list[str]:
    """One line for each row that some of `tools` do not run on (see `applies`): which, and why."""
    import rows

    few_shot_rows = [name for name, row in rows.ROWS.items() if row.few_shot]
    lines = []
    for name in row_names:
        skipped = [tool for tool in tools if not applies(tool, name)]
        if not skipped:
            continue
        if rows.resolve(name).task == rows.TOKENS:
            why = f"a token row runs {' and '.join(TOKEN_TOOLS)} only"
        else:
            why = f"{' and '.join(sorted(FEW_SHOT_TOOLS))} run on the few-shot rows only: {', '.join(few_shot_rows)}"
        lines.append(f"{name}: {', '.join(skipped)} not run ({why})")
    return lines


def other_data(result: dict) -> str | None:
    """Why a result cannot be published under the official rows: it was measured on other data roots than
    the shipped data sets (BENCH_DATA or BENCH_NER_DATA set). None where it can; a result from before the data
    roots were recorded names none, and is taken as measured on the shipped data."""
    import rows

    defaults = rows.default_data_roots()
    other = [f"{key} {result[key]} (the published rows read {defaults[key]})"
             for key in defaults if result.get(key, defaults[key]) != defaults[key]]
    if not other:
        return None
    return (f"measured on other data than the published rows: {'; '.join(other)}; it is not published under their "
            "names. Run it again without BENCH_DATA / BENCH_NER_DATA to publish it")


def launch(tool: str, files, seed: int, epochs: int, logs: Path) -> dict:
    """Runs one worker process and returns its result, or an 'error' entry with the end of its log."""
    name = f"{files.name or files.train.parent.name}-{tool}-seed{seed}"
    result_file, log_file = logs / f"{name}.json", logs / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--train", str(files.train),
               "--score", str(files.score), "--seed", str(seed), "--epochs", str(epochs), "--result", str(result_file),
               "--task", files.task]
    load, started = os.getloadavg()[0], time.perf_counter()
    with log_file.open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **WORKER_ENV},
                              check=False).returncode
    if code != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit code {code}: {tail[0][:300]} (log: {log_file})"}
    result = json.loads(result_file.read_text())
    result.update(process_seconds=time.perf_counter() - started, load_before=load)
    return result


def source_commit() -> str | None:
    """The git commit of the code measured, with "+changes" when the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout


def warn_if_busy(cores: int | None) -> None:
    """Timings mean little while other processes share the CPU: say so before starting."""
    load = os.getloadavg()[0]
    if cores and load > 0.5:
        print(f"WARNING: load average {load:.1f} on {cores} cores before starting: other processes share the "
              "CPU, so times and rates will be low and noisy (each run records its load_before)", flush=True)


def progress(done: int, total: int, run: dict) -> str:
    """One line per finished run."""
    head = f"[{done}/{total}] {run['row']} seed {run['seed']} {run['tool']}:"
    if "error" in run or "skipped" in run:
        return f"{head} {'FAILED' if 'error' in run else 'skipped'}: {run.get('error') or run.get('skipped')}"
    line = (f"{head} {run.get('metric', 'accuracy')} {run['accuracy']:.4f}, wall {run['wall_seconds']:.1f} s, train "
            f"{run['train_seconds']:.1f} s, {run['samples_per_s']:.1f} samples/s, peak {run['peak_rss_mb']:.0f} MB")
    if run.get("tokens_per_s") is not None:
        line += f", {run['tokens_per_s']:.0f} tokens/s"
    if run.get("mfu") is not None:
        line += f", MFU {run['mfu']:.2%}"
    if "accuracy_reloaded" in run and abs(run["accuracy_reloaded"] - run["accuracy"]) > 1e-9:
        line += f"  WARNING: reloaded model scores {run['accuracy_reloaded']:.4f}"
    elif "accuracy_reloaded" in run:
        line += f" (reloaded: {run['accuracy_reloaded']:.4f})"
    return line


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(row, seed, tool) in run order: all tools of a seed together, so slow drift hits them alike."""
    return [(row, seed, tool) for row in args.rows for seed in range(1, args.row_seeds[row] + 1)
            for tool in args.tools if applies(tool, row)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import rows

    if args.publish:
        result = json.loads(args.publish.read_text())
        refusal = other_data(result)
        if refusal:
            print(f"run.py: error: {args.publish}: {refusal}", file=sys.stderr)
            return 2
        publish(result)
        return 0

    for line in not_applying(args.rows, args.tools):
        print(line, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as data_dir:
        try:  # every row's data before anything is written: a row no tool can run on stops the harness here
            files = {row: rows.prepare(row, Path(data_dir), args.limit) for row in args.rows}
        except LookupError as error:
            print(f"run.py: error: {error}", file=sys.stderr)
            return 2
        return measure_rows(args, argv, files)


def measure_rows(args: argparse.Namespace, argv: list[str] | None, files: dict) -> int:
    """Runs every (row, seed, tool) on the prepared files, and writes and prints the results."""
    import machine
    import report
    import rows

    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / stamp
    logs.mkdir()
    info = machine.describe()
    print(info["peak"]["line"], flush=True)
    warn_if_busy(info["peak"].get("cores"))
    command = "python " + " ".join(shlex.quote(a) for a in ([os.path.relpath(__file__)] + (argv or sys.argv[1:])))
    result = {"date": now.isoformat(timespec="seconds"), "command": command, "commit": source_commit(),
              "machine": info, **rows.data_roots(), "rows": args.rows,
              "tools": args.tools, "seeds": args.row_seeds, "epochs": args.epochs, "limit": args.limit, "data": {},
              "runs": []}
    todo = plan(args)
    for row, f in files.items():
        result["data"][row] = {"train": f.n_train, "score": f.n_score, "classes": f.n_classes}
        if f.task == "text_classification":
            line, left_out = (f"{row}: {f.n_train} training examples, {f.n_score} scored, {f.n_classes} classes",
                              "scoring rows left out: their labels do not occur in training")
        else:  # a token row: sentences, entity types, and the files themselves (the data set's own)
            result["data"][row].update(task=f.task, metric=f.metric, train_file=str(f.train), score_file=str(f.score))
            line, left_out = (f"{row}: {f.n_train} training sentences ({f.train}), {f.n_score} scored ({f.score}), "
                              f"{f.n_classes} entity types, scored by {f.metric}",
                              "scoring sentences left out: their tags do not occur in training")
        if f.n_unscorable:
            result["data"][row]["unscorable"] = f.n_unscorable
            line += f" ({f.n_unscorable} {left_out})"
        print(line, flush=True)
    for done, (row, seed, tool) in enumerate(todo, 1):
        run = {"row": row, "tool": tool, "seed": seed, **launch(tool, files[row], seed, args.epochs, logs)}
        if "error" not in run and "skipped" not in run:
            report.derive(run, info["peak"])
        result["runs"].append(run)
        print(progress(done, len(todo), run), flush=True)
        (args.out / f"{stamp}.json").write_text(json.dumps(result, indent=1))  # partial results survive a crash
    result["table"] = report.aggregate(result["runs"])
    result["ratios"] = report.ratios(result["table"], result["runs"])
    table_md = report.markdown(result["table"], result["ratios"], report.problems(result["runs"]))
    (args.out / f"{stamp}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stamp}.md").write_text(table_md)
    print("\n" + table_md + f"\nresults: {args.out / stamp}.json, .md; worker logs: {logs}")
    if args.write_docs:
        publish(result)
    return 0


def publish(result: dict) -> None:
    """Puts a full run's rows into docs/benchmarks.json (replacing the same rows of earlier runs) and
    renders docs/benchmarks.md from it. A result file whose invocation was stopped before its end (no
    table: it is rewritten after every run) is published with the seeds that every tool of a row completed,
    and the document says how many of the planned seeds those are."""
    import report

    if result.get("limit") is not None:
        raise SystemExit("a run with --limit is a smoke run; it is not published")
    if "table" not in result:
        result = report.completed_seeds(result)
        if not result["rows"]:
            raise SystemExit("the stopped run completed no seed of any row with every tool; nothing to publish")
        result["table"] = report.aggregate(result["runs"])
    result["ratios"] = report.ratios(result["table"], result["runs"])  # derived: current with this harness
    record = json.loads(DOCS_RECORD.read_text()) if DOCS_RECORD.is_file() else None
    record = report.merge(record, result, ALL_ROWS)
    DOCS_RECORD.write_text(json.dumps(record, indent=1) + "\n")
    DOCS.write_text(report.document(record, report.hand_sections(DOCS.read_text()) if DOCS.is_file() else ""))
    print(f"rewrote {DOCS} ({', '.join(result['rows'])}) and {DOCS_RECORD}")


if __name__ == "__main__":
    sys.exit(main())

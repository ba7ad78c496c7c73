"""Aggregation of the runs per row and tool, the Markdown tables, and docs/benchmarks.md."""

from __future__ import annotations

import statistics

TOOL_ORDER = ["strop", "strop-default", "strop-fewshot", "trainer", "setfit", "tfidf"]

# figure key, column title, cell format (see _cell); each also gets a strop / peer ratio
FIGURES = [
    ("wall_seconds", "wall s", "num"),
    ("train_seconds", "train s", "num"),
    ("samples_per_s", "samples/s", "num"),
    ("tokens_per_s", "tokens/s", "num"),
    ("peak_rss_mb", "peak RSS MB", "num"),
    ("mfu", "MFU", "{:.2%}"),
]


def derive(run: dict, peak: dict | float | None) -> dict:
    """Adds the rates to one worker result: samples/s, tokens/s, training FLOPs (6 N tokens) and MFU, the
    latter against the peak of the precision the run trained in (`precision`: bf16 or fp32, the default)."""
    if isinstance(peak, dict):
        bf16 = run.get("precision") == "bf16" and peak.get("bf16_peak_flops")
        peak_flops = peak["bf16_peak_flops"] if bf16 else peak.get("peak_flops")
    else:
        peak_flops = peak
    seconds = run["train_seconds"]
    run["samples_per_s"] = run["sentences"] / seconds if seconds else None
    if "tokens" in run:
        run["tokens_per_s"] = run["tokens"] / seconds
        run["train_flops"] = 6 * run["n_params"] * run["tokens"]
        run["mfu"] = run["train_flops"] / seconds / peak_flops if peak_flops else None
    return run


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per (row, tool) over the seeds that completed: the score's mean and std (under the keys
    accuracy_*; `metric` names it: accuracy, or entity F1 for a token row), the mean of each figure."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        if "error" not in run and "skipped" not in run:
            groups.setdefault((run["row"], run["tool"]), []).append(run)
    rows = list(dict.fromkeys(row for row, _ in groups))  # in the order they ran
    table = []
    for row, tool in sorted(groups, key=lambda key: (rows.index(key[0]), TOOL_ORDER.index(key[1]))):
        group = groups[(row, tool)]
        accuracies = [r["accuracy"] for r in group]
        entry = {"row": row, "tool": tool, "seeds": len(group), "metric": group[0].get("metric", "accuracy"),
                 "accuracy_mean": statistics.fmean(accuracies),
                 "accuracy_std": statistics.stdev(accuracies) if len(group) > 1 else 0.0}
        entry.update({key: _mean([r.get(key) for r in group]) for key, _, _ in FIGURES})
        if all("phases" in r for r in group):
            entry["phases"] = {phase: statistics.fmean(r["phases"][phase] for r in group)
                               for phase in group[0]["phases"]}
        table.append(entry)
    return table


def ratios(table: list[dict], runs: list[dict]) -> list[dict]:
    """strop / peer for the score (accuracy or entity F1) and every figure, per row (above 1: strop's figure
    is larger), and the score difference strop - peer paired by seed (see `paired_difference`)."""
    out = []
    by_key = {(e["row"], e["tool"]): e for e in table}
    for entry in table:
        strop = by_key.get((entry["row"], "strop"))
        if entry["tool"] == "strop" or strop is None:
            continue
        ratio = {"row": entry["row"], "peer": entry["tool"], "metric": entry.get("metric", "accuracy")}
        for key in ["accuracy_mean"] + [k for k, _, _ in FIGURES]:
            a, b = strop.get(key), entry.get(key)
            ratio[key] = a / b if a is not None and b else None
        ratio.update(paired_difference(runs, entry["row"], entry["tool"]))
        out.append(ratio)
    return out


def paired_difference(runs: list[dict], row: str, peer: str) -> dict:
    """strop's score (the runs' "accuracy": accuracy or entity F1) minus the peer's over the seeds both
    completed: the mean and the half-width of its 95% confidence interval (Student's t; none for one seed).
    Both tools see the same data and seed, so the pairs share that part of the variation and the interval
    says whether a gap is more than noise."""
    accuracy = {(r["tool"], r["seed"]): r["accuracy"] for r in runs
                if r["row"] == row and "error" not in r and "skipped" not in r}
    differences = [accuracy[("strop", seed)] - accuracy[(tool, seed)] for tool, seed in accuracy
                   if tool == peer and ("strop", seed) in accuracy]
    if not differences:
        return {"accuracy_diff": None, "accuracy_diff_ci95": None}
    if len(differences) == 1:
        return {"accuracy_diff": differences[0], "accuracy_diff_ci95": None}
    from scipy.stats import t

    n = len(differences)
    half_width = t.ppf(0.975, n - 1) * statistics.stdev(differences) / n ** 0.5
    return {"accuracy_diff": statistics.fmean(differences), "accuracy_diff_ci95": half_width}


def _difference_cell(ratio: dict) -> str:
    diff, half_width = ratio.get("accuracy_diff"), ratio.get("accuracy_diff_ci95")
    if diff is None:
        return "—"
    return f"{diff:+.4f}" + (f" ± {half_width:.4f}" if half_width is not None else "")


def _cell(value, fmt: str) -> str:
    """A table cell: "num" (4 significant digits) and "ratio" (3) write whole numbers from 1,000 on;
    anything else is a format string."""
    if value is None:
        return "—"
    if fmt in ("num", "ratio"):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{4 if fmt == 'num' else 3}g}"
    return fmt.format(value)


def markdown(table: list[dict], ratio_rows: list[dict], problems: list[str]) -> str:
    """The results table, the strop / peer table, and the runs that were skipped or failed. The score column
    holds each row's metric (accuracy, or entity F1 for a token row), named in the metric column."""
    lines = ["| row | tool | seeds | metric | score | " + " | ".join(t for _, t, _ in FIGURES) + " |",
             "|---|---|---:|---|---:|" + "---:|" * len(FIGURES)]
    for e in table:
        cells = [_cell(e[k], f) for k, _, f in FIGURES]
        spread = f"{e['accuracy_std']:.4f}" if e["seeds"] > 1 else "—"  # one seed has no spread to show
        lines.append(f"| {e['row']} | {e['tool']} | {e['seeds']} | {e.get('metric', 'accuracy')} | "
                     f"{e['accuracy_mean']:.4f} ± {spread} | " + " | ".join(cells) + " |")
    if ratio_rows:
        lines += ["", "strop / peer (score and throughput: above 1 favours strop; wall s, train s, "
                      "peak RSS: below 1 favours strop):", "",
                  "| row | peer | metric | score | score strop - peer (paired, 95%) | "
                  + " | ".join(t for _, t, _ in FIGURES) + " |",
                  "|---|---|---|---:|---:|" + "---:|" * len(FIGURES)]
        for r in ratio_rows:
            cells = [_cell(r[k], "ratio") for k in ["accuracy_mean"] + [k for k, _, _ in FIGURES]]
            cells.insert(1, _difference_cell(r))
            lines.append(f"| {r['row']} | {r['peer']} | {r.get('metric', 'accuracy')} | " + " | ".join(cells) + " |")
    lines += _phase_lines(table)
    if problems:
        lines += ["", "Not in the table:", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def _phase_lines(table: list[dict]) -> list[str]:
    """Where the wall time goes, in seconds (mean over seeds), for the runs that recorded it."""
    entries = [e for e in table if e.get("phases")]
    if not entries:
        return []
    names = list(entries[0]["phases"])
    lines = ["", "Where the wall time goes, seconds (mean over seeds; \"other\" is interpreter start, imports, "
             "reading data and whatever no phase times):", "",
             "| row | tool | wall s | " + " | ".join(names) + " |", "|---|---|---:|" + "---:|" * len(names)]
    for e in entries:
        lines.append(f"| {e['row']} | {e['tool']} | {_cell(e['wall_seconds'], 'num')} | "
                     + " | ".join(_cell(e["phases"].get(n), "{:.2f}") for n in names) + " |")
    return lines


def problems(runs: list[dict]) -> list[str]:
    """One line per run that was skipped or failed, with its reason."""
    return [_problem(r) for r in _failed(runs)]


def _failed(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("skipped") or r.get("error")]


def _problem(run: dict) -> str:
    kind = "skipped" if "skipped" in run else "failed"
    return f"{run['row']} / {run['tool']} / seed {run['seed']} {kind}: {run.get('skipped') or run.get('error')}"


DOC_NOTES = """\
## What runs

Each (row, tool, seed) is one fresh worker process (`python bench/run.py --worker ...`), so no tool
inherits another's imports, caches or memory. All tools get the same data files, the same bundled model
(all-MiniLM-L6-v2, a 6-layer BERT), the same seed and the same epoch budget. The seeds vary training
only: samples, few-shot sets and held-out splits are drawn once with a fixed data seed.

- **strop**: `strop.fit` with its defaults; only data, epochs, seed, output directory and quiet are set.
  The scoring split is its validation file, so it picks (and restores) its best epoch on it. Its default
  learning rate is `auto`: 5e-5 on every row but the few-shot ones, whose 15-20 optimizer steps in all
  get 2e-4; the new output layer trains at 20 times that rate (`optim.head_lr_scale`), the pretrained
  body at it. On the token row, `strop.fit` with a config dict as a user writes it: `task.name:
  token_classification`, the data set's `train.conll` and `dev.conll` as `data.train` and
  `data.validation`, `model.name: minilm-l6`, the epochs, the seed, `train.patience: 0` (no early stopping)
  and quiet; everything else strop's defaults. Its score is the entity F1 of the run's `summary.json`; the
  worker scores the saved model again, outside the timed job, with `strop.load(run).predict_tags(words)`
  and seqeval, as a check (`accuracy_reloaded` in the result file).
- **trainer**: Hugging Face `Trainer`, `AutoModelForSequenceClassification`, lr 5e-5, batch 16 (train and
  eval), weight decay 0.01, `DataCollatorWithPadding`, evaluation and a checkpoint each epoch,
  `load_best_model_at_end` on accuracy, `EarlyStoppingCallback(early_stopping_patience=2)`, fp32, the
  scoring split as `eval_dataset`; accuracy from `trainer.evaluate()` after training. On the token row,
  the transformers token-classification example's recipe (`run_ner.py`): `AutoModelForTokenClassification`,
  the words tokenized with `is_split_into_words=True` (truncated only at the tokenizer's 512 tokens, which
  no sentence reaches), each word's tag on its first subword and -100 on the others,
  `DataCollatorForTokenClassification`, and the settings above, the best epoch chosen on entity F1;
  entity F1 computed by seqeval from each word's first-subword prediction.
- **setfit**: `SetFitModel` on the same sentence-transformers folder, default contrastive pair sampling
  and logistic-regression head, batch 16, `num_epochs` = the epoch budget for the embedding phase; no
  validation, the final model is scored. Few-shot rows only. SetFit draws its contrastive pairs with a
  fixed seed of its own (`np.random.RandomState(seed=42)` in `setfit/sampler.py`), whatever seed it is
  given, so its spread over seeds is small and understates how much it varies with the data.
- **tfidf**: scikit-learn `TfidfVectorizer(ngram_range=(1, 2))` + `LogisticRegression(max_iter=1000)`.

Rows: `sst2-1k` (1,000 SST-2 train sentences drawn with a fixed seed), `sst2-full` (6,920), scored on the
SST-2 dev split (872); `trec` and `banking77` train on their train file less a held-out, seeded,
stratified 20% (at most 1,000 rows) that scores them; `sst2-fs64` (32 per class) and `trec-fs8` (8 per
class) are few-shot rows, scored like their full rows; SetFit runs on them only. Any other folder of the
data with a `train.csv` is a row of that name, trained on all of it and scored like `trec` (or on its
`dev.csv`). A class with one example stays in training; scoring rows whose label never occurs in training
are left out and counted, since no tool can predict them. `conll2003` is a token-classification row (named
entities: PER, ORG, LOC, MISC, IOB1 tags): the CoNLL-2003 English train file (14,041 sentences) and its dev
file (3,250 sentences, the scoring split), read from `../shared/data/ner/conll2003`; strop and the Trainer
only, since SetFit and TF-IDF classify whole texts.

## What is measured

- **score** on the scoring split, of the model each tool ends with (best epoch restored where the tool
  does so), mean ± standard deviation over the seeds; the **metric** column names it: **accuracy** on the
  text rows, **entity F1** on the token row: seqeval's entity-level F1 in its default (conlleval) mode,
  micro-averaged over the entity types, on the tags of every word of the scoring file (an entity counts
  only when its type and both ends are right; a word a tool's truncation cuts off counts as O).
- **score strop - peer (paired, 95%)**: strop's score minus the peer's on the same seed, averaged
  over the seeds, ± the half-width of its 95% confidence interval (Student's t over the paired
  differences). An interval that contains 0 means the runs cannot tell the two apart. Rows measured
  before per-seed results were kept show "—".
- **wall s**: the whole job in the worker, from process start: imports, model load, tokenisation,
  training, validation, checkpoints, final scoring.
- **train s**: training only: the epochs' step loops without validation and checkpoints (strop's
  `train_seconds`, a Trainer callback from epoch begin to epoch end); for SetFit all of `trainer.train()`
  (pair training and fitting the head), for tfidf the pipeline's `fit`.
- **samples/s** and **tokens/s**: sentences and real (non-pad) tokens that passed through the encoder
  in training mode, counted by one hook on `BertModel.forward` in every worker (so padding is not
  counted, whatever a tool pads to), divided by train s. SetFit's samples are the sentences of its pairs.
  For tfidf, training examples per second of `fit`.
- **peak RSS MB**: `ru_maxrss` of the worker process.
- **where the wall time goes** (strop and the Trainer): train s, then the time spent inside the functions
  that validate (strop's `evaluate`, `Trainer.evaluate`, the final validation included), write
  checkpoints (strop's `save_checkpoint`, `Trainer._save_checkpoint`), load the model and tokenizer
  (`from_pretrained`), tokenise (the tokenizer's `__call__`) and save the final model (strop's `model/`;
  the Trainer job saves none); "other" is the rest of the wall time. Timed by wrapping those functions in
  the worker (`PhaseTimer` in `bench/workers.py`).
- **MFU**: training FLOPs, estimated as 6 x non-embedding parameters x real tokens (forward and
  backward; embedding tables are looked up, not multiplied), per training second, over the peak above
  of the precision the run trained in: a strop run that chose bf16 (`train.mixed_precision=auto` where
  the probe finds it faster) against the bf16 peak (twice the fp32 one on CPUs with avx512_bf16), the
  others against the fp32 peak.
  The estimate leaves out the attention-score FLOPs (small at these lengths) and counts a full backward
  pass. Padding is not counted, so a tool that pads more shows a lower MFU for the same arithmetic.
- The peak's clock is what the CPU reports (`lscpu` max MHz, else `/proc/cpuinfo`); in a virtual machine
  that is often the base clock, and turbo can make the true peak higher.

## Serving: `strop serve` under load

`python bench/load_test.py RUN_DIR` (loopback, 200 requests a level, at most 120 s), the bundled MiniLM-L6 fine-tuned by `examples/demo.yaml`, one review text a request, on the 2-CPU machine while other jobs ran (load 2.6 to 2.9): micro-batching (`--max-batch 64`) against none (`--max-batch 1`) and against the same model in one process, one request at a time. Full method, both tables and reading: [serving.md](serving.md).

`--max-wait-ms 10`:

| concurrency | mode | requests/s | p50 ms | p99 ms | mean batch | errors | load (1 min) |
|---|---|---|---|---|---|---|---|
| 1 | in-process, one at a time | 61.9 | 15.4 | 25.0 | — | 0 | 2.7 |
| 1 | server, micro-batching (max-batch 64, max-wait 10 ms) | 29.6 | 32.8 | 48.4 | 1.0 | 0 | 2.7 |
| 1 | server, no batching (max-batch 1) | 44.2 | 21.4 | 36.8 | 1.0 | 0 | 2.7 |
| 4 | server, micro-batching (max-batch 64, max-wait 10 ms) | 73.7 | 52.5 | 82.7 | 4.0 | 0 | 2.7 |
| 4 | server, no batching (max-batch 1) | 52.9 | 74.9 | 103.1 | 1.0 | 0 | 2.7 |
| 16 | server, micro-batching (max-batch 64, max-wait 10 ms) | 82.2 | 187.4 | 303.0 | 7.1 | 0 | 2.6 |
| 16 | server, no batching (max-batch 1) | 48.6 | 320.1 | 417.0 | 1.0 | 0 | 2.8 |

`--max-wait-ms 0` (a few minutes later):

| concurrency | mode | requests/s | p50 ms | p99 ms | mean batch | errors | load (1 min) |
|---|---|---|---|---|---|---|---|
| 1 | in-process, one at a time | 67.1 | 14.5 | 21.9 | — | 0 | 2.9 |
| 1 | server, micro-batching (max-batch 64, max-wait 0 ms) | 53.5 | 18.2 | 25.0 | 1.0 | 0 | 2.8 |
| 1 | server, no batching (max-batch 1) | 46.0 | 20.6 | 37.0 | 1.0 | 0 | 2.9 |
| 4 | server, micro-batching (max-batch 64, max-wait 0 ms) | 69.2 | 58.3 | 71.9 | 2.0 | 0 | 2.8 |
| 4 | server, no batching (max-batch 1) | 57.5 | 67.5 | 99.7 | 1.0 | 0 | 2.9 |
| 16 | server, micro-batching (max-batch 64, max-wait 0 ms) | 88.2 | 165.3 | 288.2 | 6.2 | 0 | 2.7 |
| 16 | server, no batching (max-batch 1) | 54.0 | 288.9 | 408.2 | 1.0 | 0 | 2.8 |

## Images: EfficientNet-Lite0 on CIFAR-10

`python bench/images.py` (one process, rows one after the other): the bundled EfficientNet-Lite0 on
`../shared/data/images/cifar10` (train: 1,000 images a class; val: 100 a class). Method, numbers and
reading: [images.md](images.md).

## Class imbalance: `train.imbalance` none against auto

`python bench/controls.py imbalance --seeds 3 --set method.name=freeze` (bench/controls.py): the `sst2-1k` row's
training draw with the positive class cut to a tenth of the negative one (542 negative, 54 positive: 596
sentences; each seed draws its own positives), scored on the balanced held-out split (872 sentences), the
bundled MiniLM-L6 with a frozen body (cached features: full fine-tuning took some 8 minutes an epoch on the
loaded machine), strop's defaults otherwise. `auto` chose class weights (ratio 10:1).

| variant | seeds | accuracy | macro-F1 | macro-F1 per seed |
|---|---|---|---|---|
| none | 3 | 0.5099 ± 0.0007 | 0.3391 ± 0.0015 | 0.337, 0.340, 0.340 |
| auto | 3 | 0.6143 ± 0.0862 | 0.5738 ± 0.1307 | 0.579, 0.441, 0.702 |

Without a remedy the head predicts the majority class for nearly every sentence (macro-F1 0.34); `auto` is higher
in every seed (paired gain +0.235 on average). Its spread comes from early stopping: two of its runs stopped
after 3 epochs (best epoch 1, patience 2), the third ran 9 and reached 0.702. Measured 2026-12-02 at load 9 to 11.

## Few-shot: `method.name=fewshot` against SetFit

`python bench/run.py --rows trec-fs8:3 --tools strop-fewshot,setfit --epochs 1` and the same with
`--rows sst2-fs64:1` (one invocation each, the tools alternating per seed; results
bench/results/20261202-050627.json and -052929.json). `--epochs 1` for both tools: SetFit's default 5 epochs
(about 600 steps a seed) would not finish on the machine as it was (load 9 to 11 throughout); at one epoch both
train on about the same number of pairs (1,920 on TREC).

| row | seeds | strop-fewshot | SetFit | paired gap | wall s strop / SetFit |
|---|---|---|---|---|---|
| trec-fs8 | 3 | 0.805 ± 0.015 (0.803, 0.791, 0.820) | 0.752 ± 0.014 (0.737, 0.764, 0.756) | +0.052 | 174 / 229 (0.77) |
| sst2-fs64 | 1 | 0.737 | 0.736 | +0.001 | 328 / 362 (0.91) |

## Adapters and compression

`python bench/peft_methods.py --seeds 1 --epochs 2 --methods full --compress int8,onnx` and `--methods lora`: the
`sst2-1k` row, the bundled MiniLM-L6, one seed, two epochs (five would not finish under the load). The two runs'
wall times are not comparable: the full run ran at load ~16, LoRA at ~3.5.

| method | accuracy | trainable parameters |
|---|---|---|
| full fine-tuning | 0.8383 | 22,566,146 (100%) |
| LoRA (rank 8, query and value) | 0.8383 | 74,498 (0.33%) |

`strop compress` of the full run (2 threads, load about 10; latency per example, best of interleaved rounds):

| form | weights MB | batch 1 ms | batch 32 ms | accuracy |
|---|---|---|---|---|
| fp32 (PyTorch) | 90.3 | 128.9 | 36.7 | 0.8383 |
| dynamic int8 | 58.5 | 66.4 (1.94x) | 19.6 | 0.8119 |
| ONNX (onnxruntime) | 92.0 | 25.9 (4.97x) | 24.7 | 0.8383 |
"""


def merge(record: dict | None, result: dict, row_order: list[str]) -> dict:
    """The published record (docs/benchmarks.json) with this invocation's rows put in: they replace the same
    rows of earlier invocations, whose other rows stay. Each row stays wholly one invocation's, so every
    strop / peer ratio still compares runs of the same day, machine and load."""
    record = record or {"invocations": [], "table": [], "ratios": [], "problems": []}
    new_rows = set(result["rows"])
    invocations = []
    for old in record["invocations"]:
        kept = [row for row in old["rows"] if row not in new_rows]
        if kept:
            invocations.append({**old, "rows": kept, "seeds": {r: old["seeds"][r] for r in kept},
                                "data": {r: old["data"][r] for r in kept}})
            if old.get("stopped"):
                invocations[-1]["stopped"] = {r: n for r, n in old["stopped"].items() if r in kept}
    loads = [r["load_before"] for r in result["runs"] if "load_before" in r]
    invocations.append({"date": result["date"], "command": result["command"], "commit": result.get("commit"),
                        "machine": result["machine"],
                        "rows": result["rows"], "seeds": _seeds_per_row(result), "epochs": result["epochs"],
                        "data": result["data"], "max_load_before": max(loads) if loads else None})
    if result.get("stopped"):
        invocations[-1]["stopped"] = result["stopped"]

    def replace_rows(entries: list[dict], new: list[dict], tool_key: str) -> list[dict]:
        merged = [e for e in entries if e["row"] not in new_rows] + new
        return sorted(merged, key=lambda e: (_row_rank(e["row"], row_order), TOOL_ORDER.index(e[tool_key])))

    failures = [{"row": r["row"], "text": _problem(r)} for r in _failed(result["runs"])]
    return {"invocations": invocations,
            "table": replace_rows(record["table"], result["table"], "tool"),
            "ratios": replace_rows(record["ratios"], result["ratios"], "peer"),
            "problems": [p for p in record["problems"] if p["row"] not in new_rows] + failures}


def completed_seeds(result: dict) -> dict:
    """The result of an invocation stopped before its end, cut to the seeds of each row that every tool
    completed (tools run seed by seed, so a stop leaves at most one seed part-done): its rows, seeds, data
    and runs, and `stopped`: row -> "N of M planned seeds". Rows without a complete seed are left out."""
    planned = _seeds_per_row(result)
    rows, seeds, stopped, runs = [], {}, {}, []
    for row in result["rows"]:
        ran = [r for r in result["runs"] if r["row"] == row]
        tools = {r["tool"] for r in ran if r["seed"] == 1}
        complete = []
        for seed in range(1, planned[row] + 1):
            if not tools or not tools <= {r["tool"] for r in ran if r["seed"] == seed}:
                break
            complete.append(seed)
        if not complete:
            continue
        rows.append(row)
        seeds[row] = len(complete)
        stopped[row] = f"{len(complete)} of {planned[row]} planned seeds"
        runs += [r for r in ran if r["seed"] in complete]
    return {**result, "rows": rows, "seeds": seeds, "runs": runs, "stopped": stopped,
            "data": {row: result["data"][row] for row in rows}}


def _row_rank(row: str, row_order: list[str]) -> tuple[int, str]:
    """The named rows in their order, then other data sets by name."""
    return (row_order.index(row), "") if row in row_order else (len(row_order), row)


def _seeds_per_row(result: dict) -> dict[str, int]:
    seeds = result["seeds"]  # one number for every row in result files written before ROW:N
    return seeds if isinstance(seeds, dict) else {row: seeds for row in result["rows"]}


def _invocation(inv: dict) -> str:
    """One invocation of the harness: what it measured, how, where and when."""
    m = inv["machine"]
    peak = m["peak"]
    machine_line = (f"{peak['model']}, {peak['cores']} cores" if peak["device"] == "cpu" else peak["model"])
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    data = "; ".join(_data_line(row, d) for row, d in inv["data"].items())
    seeds = ", ".join(f"{row} {n}" for row, n in inv["seeds"].items())
    load = inv.get("max_load_before")
    commit = f" at commit `{inv['commit']}`" if inv.get("commit") else ""
    lines = [f"### {inv['date']}: {', '.join(inv['rows'])}", "", f"- command: `{inv['command']}`{commit}",
             f"- machine: {machine_line} ({m['platform']})", f"- {peak['line']}", f"- versions: {versions}",
             f"- seeds: {seeds}; epochs: {inv['epochs']}", f"- data: {data}"]
    if inv.get("stopped"):
        lines.append("- stopped by hand before its end; the tables hold the seeds every tool completed: "
                     + ", ".join(f"{row} {n}" for row, n in inv["stopped"].items()))
    if load is not None:
        lines.append(f"- load average before each run: at most {load:.1f}")
    return "\n".join(lines) + "\n"


def _data_line(row: str, d: dict) -> str:
    if d.get("task") == "token_classification":
        return (f"{row} {d['train']} train / {d['score']} scored sentences, {d['classes']} entity types "
                f"(`{_shared(d['train_file'])}`, `{_shared(d['score_file'])}`)"
                + (f" ({d['unscorable']} scoring sentences left out: tags absent from training)"
                   if d.get("unscorable") else ""))
    return (f"{row} {d['train']} train / {d['score']} scored, {d['classes']} classes"
            + (f" ({d['unscorable']} scoring rows left out: labels absent from training)" if d.get("unscorable")
               else ""))


def _shared(path: str) -> str:
    """A data file's path from ../shared/data on, as the project names it (the machine's prefix varies)."""
    marker = "/shared/data/"
    return "../shared/data/" + path.split(marker, 1)[1] if marker in path else path


def document(record: dict) -> str:
    """docs/benchmarks.md from the published record: the tables, then each invocation that measured them."""
    table_md = markdown(record["table"], record["ratios"], [p["text"] for p in record["problems"]])
    invocations = "\n".join(_invocation(inv) for inv in reversed(record["invocations"]))
    return ("# Benchmarks\n\nstrop against the Hugging Face Trainer, SetFit and a TF-IDF baseline on one machine. "
            "Each row's tools were all measured in one invocation of the harness, so every strop / peer ratio "
            "compares runs of the same day and load; the rows may come from different invocations, listed "
            "below with their exact commands. Generated by `bench/run.py --write-docs`, which replaces the "
            "rows it measured and keeps the others (the record is `docs/benchmarks.json`); do not edit by "
            f"hand.\n\n## Results\n\n{table_md}\n## Invocations (newest first)\n\n{invocations}\n{DOC_NOTES}")

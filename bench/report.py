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


INVOCATIONS_HEADING = "## Invocations (newest first)"


def hand_sections(text: str) -> str:
    """The sections of docs/benchmarks.md written by hand: every "## " section after the generated Results and
    Invocations (what runs, what is measured, the other studies); "" where there are none."""
    lines = text.splitlines(keepends=True)
    after = next((i for i, line in enumerate(lines) if line.startswith(INVOCATIONS_HEADING)), None)
    if after is None:
        return ""
    first = next((i for i in range(after + 1, len(lines)) if lines[i].startswith("## ")), None)
    return "".join(lines[first:]) if first is not None else ""


def document(record: dict, hand: str = "") -> str:
    """docs/benchmarks.md from the published record: the tables, then each invocation that measured them, then
    the hand-written sections `hand` (kept from the file as it was: see `hand_sections`)."""
    table_md = markdown(record["table"], record["ratios"], [p["text"] for p in record["problems"]])
    invocations = "\n".join(_invocation(inv) for inv in reversed(record["invocations"]))
    return ("# Benchmarks\n\nstrop against the Hugging Face Trainer, SetFit and a TF-IDF baseline on one machine. "
            "Each row's tools were all measured in one invocation of the harness, so every strop / peer ratio "
            "compares runs of the same day and load; the rows may come from different invocations, listed "
            "below with their exact commands. The Results and Invocations sections are generated by "
            "`bench/run.py --write-docs`, which replaces the rows it measured and keeps the others (the record is "
            "`docs/benchmarks.json`): do not edit them by hand. The sections after them are written by hand, and "
            "kept as they are by `--write-docs`."
            f"\n\n## Results\n\n{table_md}\n{INVOCATIONS_HEADING}\n\n{invocations}\n{hand}")

"""The run index: every run and trial of a runs folder, with its config, metrics and status, in one SQLite
file (runs/index.sqlite), so that runs can be listed, filtered, sorted and compared without opening each.

`strop fit` records a run when it starts (running), when it ends (complete) and when it stops (failed,
interrupted; a search marks its pruned trials). A search folder is a runs folder of its own: its trials are
recorded in its index, and `strop runs` lists the runs of a folder and of the search folders inside it.

Several processes may write at once (workers of a search, parallel fits): each write is one short
transaction (BEGIN IMMEDIATE, SQLite's write-ahead log, a 30 s wait for the lock). The index is a
convenience: a write that fails only warns, and a run missing from it is added from its files when its
folder is listed.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml

from strop.errors import StropError

INDEX_FILE = "index.sqlite"
# One row per run directory; JSON in the text columns.
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,         -- the run directory's name in its runs folder
    kind TEXT NOT NULL DEFAULT 'run',  -- run, or trial (of the search whose folder this is)
    status TEXT NOT NULL,          -- running, complete, failed, interrupted, pruned
    task TEXT, model TEXT, method TEXT,
    metric TEXT,                   -- the metric that picks the best epoch
    metrics TEXT,                  -- validation metrics: the saved model's, or the best epoch's so far
    config TEXT,                   -- the resolved config
    best_epoch INTEGER, epochs INTEGER, train_seconds REAL,
    trial INTEGER, params TEXT,    -- a search's trial: its number and the values searched
    error TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL
)"""
COLUMNS = ("name", "kind", "status", "task", "model", "method", "metric", "metrics", "config", "best_epoch", "epochs",
           "train_seconds", "trial", "params", "error", "created", "updated")
JSON_COLUMNS = ("metrics", "config", "params")


@contextlib.contextmanager
def _connect(folder: Path, write: bool) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(folder / INDEX_FILE, timeout=30, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        if write:
            with contextlib.suppress(sqlite3.OperationalError):  # e.g. a file system without shared memory
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(SCHEMA)
        yield connection
    finally:
        connection.close()


def record_run(run_dir: str | Path, status: str, error: BaseException | str | None = None, **fields: Any) -> None:
    """Records (or updates) a run in its runs folder's index from the files of its run directory.

    A run directory that no longer exists (a failed fit removes its half-written run), or holds no config.yaml
    (a folder the user made, emptied again), is removed from the index. Never raises: a failed write warns on
    stderr, as the run itself matters more than its entry.

    Args:
        run_dir: the run directory.
        status: running, complete, failed, interrupted or pruned.
        error: why it failed.
        fields: kind, trial, params (a search's trials).
    """
    run_dir = Path(run_dir)
    try:
        if not (run_dir / "config.yaml").is_file():
            forget_run(run_dir)
            return
        row = {**_read_run(run_dir), "status": status, "error": _message(error),
               **{k: v for k, v in fields.items() if v is not None}}
        _upsert(run_dir.parent, row)
    except Exception as failure:  # the index must never fail a run
        print(f"strop: warning: could not record {run_dir} in {run_dir.parent / INDEX_FILE}: {failure}",
              file=sys.stderr)


def forget_run(run_dir: str | Path) -> None:
    """Removes a run from its folder's index (where there is one)."""
    run_dir = Path(run_dir)
    if not (run_dir.parent / INDEX_FILE).is_file():
        return
    with _connect(run_dir.parent, write=True) as db:
        db.execute("DELETE FROM runs WHERE name = ?", (run_dir.name,))


def _message(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) if isinstance(error, StropError) else f"{type(error).__name__}: {error}"


def _upsert(folder: Path, row: dict) -> None:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row = {**row, "updated": now}
    values = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
    names = list(values)
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "name")
    with _connect(folder, write=True) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"INSERT INTO runs ({', '.join(names)}, created) VALUES ({', '.join('?' * len(names))}, ?) "
                       f"ON CONFLICT(name) DO UPDATE SET {updates}", [*values.values(), now])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _read_run(run_dir: Path) -> dict:
    """What the index holds of a run, from its files: config.yaml, summary.json (complete runs) or
    metrics.jsonl (the best epoch so far)."""
    config = _read_yaml(run_dir / "config.yaml")
    task = config.get("task", {}).get("name")
    # every column named, None where unknown yet: a new run in the folder of a removed one of the same name
    # must not show the old one's scores (the index updates the columns a row names)
    row = {"name": run_dir.name, "task": task, "model": config.get("model", {}).get("name"),
           "method": config.get("method", {}).get("name"), "config": config or None, "metric": None,
           "metrics": None, "best_epoch": None, "epochs": None, "train_seconds": None}
    summary = _read_json(run_dir / "summary.json")
    if summary:
        # the task it trained (a pretraining run's config keeps task.name=auto; its summary says masked_lm)
        row.update(task=summary.get("task") or task)
        row.update(metric=summary.get("metric"), metrics=summary.get("validation"), best_epoch=summary.get("best_epoch"),
                   epochs=summary.get("epochs_run"), train_seconds=summary.get("train_seconds"))
        return row
    history = _read_metrics(run_dir / "metrics.jsonl")
    # a run whose task names no metric until it completes (strop pretrain's: task.name=auto) is read by its loss
    metric = _lead_metric(task, config.get("train", {}).get("metric")) or "loss"
    row.update(metric=metric, epochs=len(history) or None,
               train_seconds=history[-1].get("time") if history else None)
    best = _best_record(history, metric, task)
    if best is not None:
        row.update(best_epoch=best.get("epoch"),
                   metrics={k[4:]: v for k, v in best.items() if k.startswith("val_")})
    return row


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_metrics(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):  # a line cut short by a kill
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict)]


def _lead_metric(task: str | None, metric: str | None) -> str | None:
    if metric and metric != "auto":
        return metric
    task_cls = _task_class(task)
    return task_cls.lead_metric if task_cls is not None else None


def _task_class(task: str | None):
    from strop.tasks import TASKS

    return TASKS.get(task) if task and task in TASKS else None


def minimised(metric: str, task: str | None) -> bool:
    """Whether lower is better for `metric` (the task's own list; loss for any task)."""
    task_cls = _task_class(task)
    return metric in (task_cls.minimised if task_cls is not None else {"loss"})


def _best_record(history: list[dict], metric: str | None, task: str | None) -> dict | None:
    scored = [r for r in history if isinstance(r.get(f"val_{metric}"), (int, float))]
    if not scored:
        return None
    pick = min if minimised(metric, task) else max
    return pick(scored, key=lambda r: r[f"val_{metric}"])


# --- reading ------------------------------------------------------------------------------------------

def list_runs(folder: str | Path) -> list[dict]:
    """The runs of `folder` and of the search folders in it (named search/trial-0003), from the index, with
    runs the index lacks added from their files and each running run's status checked against its lock
    (a run whose fit is gone is `interrupted`).

    Raises:
        StropError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StropError(f"no runs folder {folder}: give the folder that holds the run directories "
                         "(strop runs --dir FOLDER)")
    rows = _folder_rows(folder, prefix="")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and (p / INDEX_FILE).is_file()):
        rows += _folder_rows(sub, prefix=f"{sub.name}/")
    return rows


def _folder_rows(folder: Path, prefix: str) -> list[dict]:
    _add_missing(folder)
    if not (folder / INDEX_FILE).is_file():
        return []
    with _connect(folder, write=False) as db:
        rows = [_decoded(dict(r)) for r in db.execute("SELECT * FROM runs ORDER BY created, name")]
    for row in rows:
        run_dir = folder / row["name"]
        row["path"] = str(run_dir)
        row["name"] = prefix + row["name"]
        if not run_dir.is_dir():
            row["status"] = "deleted"
        elif row["status"] == "running" and not _locked(run_dir):
            row["status"] = "interrupted"
    return rows


def _add_missing(folder: Path) -> None:
    """Records the run directories of `folder` that its index lacks (runs from before the index, or whose
    entry could not be written)."""
    # Not links: a search's `best` points at one of its trials.
    runs = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file()]
    if not runs:
        return
    known = set()
    if (folder / INDEX_FILE).is_file():
        with _connect(folder, write=False) as db:
            known = {r[0] for r in db.execute("SELECT name FROM runs")}
    for run_dir in runs:
        if run_dir.name not in known:
            status = "complete" if (run_dir / "summary.json").is_file() else \
                "running" if _locked(run_dir) else "interrupted"
            record_run(run_dir, status)


def _locked(run_dir: Path) -> bool:
    """Whether a fit holds the run directory's lock (it is running)."""
    import fcntl

    lock_file = run_dir / ".lock"
    if not lock_file.is_file():
        return False
    try:
        with lock_file.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _decoded(row: dict) -> dict:
    for key in JSON_COLUMNS:
        if row.get(key) is not None:
            row[key] = json.loads(row[key])
    row["metrics"] = row.get("metrics") or {}
    row["config"] = row.get("config") or {}
    return row


def find_run(name: str, folder: str | Path = "runs") -> dict:
    """One run of the index: by its name in `folder` (search/trial-0003 for a trial), or by its path.

    Raises:
        StropError: no such run, naming the runs there are.
    """
    path = Path(name)
    if path.is_dir() and (path / "config.yaml").is_file():
        for row in _folder_rows(path.parent, prefix=""):
            if row["name"] == path.name:
                return row
    rows = list_runs(folder)
    for row in rows:
        if row["name"] == name:
            return row
    import difflib

    all_names = [r["name"] for r in rows]
    near = difflib.get_close_matches(name, all_names, n=1)
    shown = (f"did you mean '{near[0]}'? " if near else "") + (
        f"the newest of its {len(rows)} runs: " if len(rows) > 10 else "runs there: ")
    raise StropError(f"no run '{name}' in {folder}/{INDEX_FILE}; {shown}{', '.join(all_names[-10:]) or 'none'} (give "
                     "a run directory's path, or --dir FOLDER for another runs folder; strop runs lists them all)")


# --- filters, sorting, tables ---------------------------------------------------------------------

OPERATORS = ("!=", ">=", "<=", "=", ">", "<", "~")


def value_of(row: dict, key: str) -> Any:
    """A row's value for a filter or sort key: a column (status, task, ...), a metric, or a config key."""
    if key in row and key not in JSON_COLUMNS:
        return row[key]
    if key in row["metrics"]:
        return row["metrics"][key]
    if key.startswith("val_") and key[4:] in row["metrics"]:
        return row["metrics"][key[4:]]
    node: Any = row["config"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_filter(text: str) -> tuple[str, str, str]:
    """`KEY=VALUE` (also !=, >, >=, <, <=, and ~ for "contains") into (key, operator, value).

    Raises:
        StropError: no operator.
    """
    for op in OPERATORS:
        key, sep, value = text.partition(op)
        if sep and key and not any(o in key for o in OPERATORS):
            return key.strip(), op, value.strip()
    raise StropError(f"--filter '{text}' must look like KEY=VALUE (or !=, >, >=, <, <=, ~ for contains), e.g. "
                     "status=complete, accuracy>0.8, optim.lr<1e-4, model.name~minilm")


def matches(row: dict, key: str, op: str, wanted: str) -> bool:
    value = value_of(row, key)
    if value is None:
        return op == "!="
    if op == "~":
        return wanted.lower() in str(value).lower()
    number, target = _number(value), _number(wanted)
    if number is not None and target is not None:
        left, right = number, target
    else:
        left, right = _text(value), wanted
        if op in (">", ">=", "<", "<="):
            return False
    return {"=": left == right, "!=": left != right, ">": left > right, ">=": left >= right, "<": left < right,
            "<=": left <= right}[op]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value).lower() if isinstance(value, bool) else str(value)


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """Best first for a metric (lower first where lower is better), ascending otherwise; rows without a value
    last."""
    def is_metric(row):
        return key in row["metrics"] or (key.startswith("val_") and key[4:] in row["metrics"])

    present = [r for r in rows if value_of(r, key) is not None]
    absent = [r for r in rows if value_of(r, key) is None]

    def order(row):
        value = value_of(row, key)
        number = _number(value)
        if number is None:
            return (1, _text(value))
        if is_metric(row) and not minimised(key.removeprefix("val_"), row.get("task")):
            number = -number  # higher is better: best first
        return (0, number)

    present.sort(key=order, reverse=reverse)
    return present + absent


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table: a header line, then one line per row."""
    cells = [[_cell(value_of(r, c) if c not in ("name", "status") else r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _text(value)


def refuse_unknown_keys(rows: list[dict], named: list[tuple[str, str]]) -> None:
    """Raises StropError for a key (of --filter, --sort or --columns) that no run has, as a column, a metric or
    a config key, with the nearest one that exists: a typo would match no run, or sort by nothing, silently."""
    import difflib

    known = {c for c in COLUMNS if c not in JSON_COLUMNS}
    for row in rows:
        known |= set(row["metrics"]) | {f"val_{m}" for m in row["metrics"]} | set(_config_keys(row["config"]))
    for option, key in named:
        if rows and key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            raise StropError(f"{option}: no run has '{key}' (a column, a metric or a config key such as optim.lr)"
                             + (f"; did you mean '{near[0]}'?" if near else ""))


def _config_keys(node: Any, prefix: str = "") -> list[str]:
    """`section.key` of every value in a run's config (and each section's own name)."""
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        keys.append(prefix + str(name))
        keys += _config_keys(value, f"{prefix}{name}.")
    return keys


def default_columns(rows: list[dict]) -> list[str]:
    """name, status, task, model, method, the metrics the runs have (the lead ones first), the values a
    search's trials were given, epochs, seconds."""
    metrics: list[str] = []
    for row in rows:
        for name in [row.get("metric")] + list(row["metrics"]):
            if name and name not in metrics and isinstance(row["metrics"].get(name), (int, float)):
                metrics.append(name)
    searched = list(dict.fromkeys(key for row in rows for key in (row.get("params") or {})))
    return ["name", "status", "task", "model", "method", *metrics[:6], *searched[:4], "epochs", "train_seconds"]


# --- show and diff --------------------------------------------------------------------------------

def flatten(config: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": 1e-4}"""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# settings that change what a run's loss measures: two runs that differ in one have losses that do not compare
LOSS_KEYS = ("task.name", "task.loss", "train.imbalance", "train.focal_gamma", "train.label_smoothing")


def diff(a: dict, b: dict) -> dict:
    """The config keys whose values differ, and each metric of either run with its change from a to b
    (`better`: whether b is better, by the task's direction; not for a loss that measures another thing, where
    `unlike` names the setting)."""
    ca, cb = flatten(a["config"]), flatten(b["config"])
    config = {key: [ca.get(key), cb.get(key)] for key in sorted(set(ca) | set(cb))
              if ca.get(key) != cb.get(key) and key != "output_dir"}
    metrics = {}
    for name in list(dict.fromkeys([*a["metrics"], *b["metrics"]])):
        va, vb = _number(a["metrics"].get(name)), _number(b["metrics"].get(name))
        entry = {"a": a["metrics"].get(name), "b": b["metrics"].get(name)}
        if va is not None and vb is not None:
            entry["delta"] = vb - va
            unlike = [key for key in LOSS_KEYS if key in config] if name == "loss" else []
            if unlike:
                entry["unlike"] = unlike[0]
            elif vb != va:
                entry["better"] = (vb < va) == minimised(name, b.get("task") or a.get("task"))
        metrics[name] = entry
    return {"a": a["name"], "b": b["name"], "config": config, "metrics": metrics}


def describe(row: dict) -> str:
    """`strop runs show`: the run's facts, metrics and config."""
    lines = [f"{row['name']}  ({row['kind']}, {row['status']})", f"  path: {row['path']}"]
    for key in ("task", "model", "method", "metric", "best_epoch", "epochs", "train_seconds", "trial", "created",
                "updated"):
        if row.get(key) is not None:
            lines.append(f"  {key}: {_cell(row[key])}")
    if row.get("params"):
        lines.append("  searched: " + "  ".join(f"{k}={_cell(v)}" for k, v in row["params"].items()))
    if row.get("error"):
        lines.append(f"  error: {row['error']}")
    if row["metrics"]:
        lines.append("validation:")
        lines += [f"  {k}: {_cell(v)}" for k, v in row["metrics"].items() if not isinstance(v, (dict, list))]
    if row["config"]:
        lines.append("config:")
        lines += ["  " + line for line in yaml.safe_dump(row["config"], sort_keys=False).splitlines()]
    return "\n".join(lines)


def describe_diff(result: dict) -> str:
    lines = [f"{result['a']} -> {result['b']}"]
    if result["config"]:
        lines.append("config:")
        width = max(len(k) for k in result["config"])
        lines += [f"  {k:{width}}  {_cell(va)} -> {_cell(vb)}" for k, (va, vb) in result["config"].items()]
    else:
        lines.append("config: the same")
    if result["metrics"]:
        lines.append("validation:")
        width = max(len(k) for k in result["metrics"])
        for name, m in result["metrics"].items():
            if isinstance(m["a"], (dict, list)) or isinstance(m["b"], (dict, list)):
                continue
            change = ""
            if "delta" in m:
                judged = (f", not compared: {m['unlike']} differs" if "unlike" in m
                          else ", better" if m.get("better") else ", worse" if "better" in m else "")
                change = f"  ({m['delta']:+.4g}{judged})"
            lines.append(f"  {name:{width}}  {_cell(m['a'])} -> {_cell(m['b'])}{change}")
    return "\n".join(lines)


# --- strop runs -----------------------------------------------------------------------------------

def runs_command(words: list[str], folder: str = "runs", filters: list[str] = (), sort: str | None = None,
                 reverse: bool = False, limit: int | None = None, columns: str | None = None,
                 as_json: bool = False) -> str:
    """`strop runs [FOLDER]`, `strop runs show NAME`, `strop runs diff A B`: the text to print.

    Raises:
        StropError: a missing folder or run, a malformed filter, the wrong number of names.
    """
    from strop.runs import to_json

    if limit is not None and limit < 1:
        raise StropError(f"--limit must be a number of runs >= 1; got {limit} (leave it out to show every run)")
    if words[:1] == ["show"]:
        if len(words) != 2:
            raise StropError("strop runs show NAME: give one run's name (as strop runs lists it) or its path")
        row = find_run(words[1], folder)
        return to_json(row, indent=2) if as_json else describe(row)
    if words[:1] == ["diff"]:
        if len(words) != 3:
            raise StropError("strop runs diff A B: give two runs' names (as strop runs lists them) or paths")
        result = diff(find_run(words[1], folder), find_run(words[2], folder))
        return to_json(result, indent=2) if as_json else describe_diff(result)
    if len(words) > 1:
        raise StropError(f"strop runs takes one runs folder, or show NAME, or diff A B; got {' '.join(words)}")
    folder = words[0] if words else folder
    rows = list_runs(folder)
    conditions = [parse_filter(text) for text in filters]
    named = [("--filter", c[0]) for c in conditions] + ([("--sort", sort)] if sort else []) \
        + [("--columns", c) for c in (columns.split(",") if columns else [])]
    refuse_unknown_keys(rows, named)
    rows = [r for r in rows if all(matches(r, *condition) for condition in conditions)]
    if sort:
        rows = sort_rows(rows, sort, reverse)
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        return to_json(rows, indent=2)
    if not rows:
        return f"no runs in {folder}" + (" match the filters" if conditions else "")
    shown = columns.split(",") if columns else default_columns(rows)
    for key in [c[0] for c in conditions] + ([sort] if sort else []):  # what the runs were chosen or sorted by
        if key not in shown and key.removeprefix("val_") not in shown:
            shown.append(key)
    return table(rows, shown)

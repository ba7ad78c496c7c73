"""`strop cv`: k-fold cross-validation and repeated seeds, for data too small for one validation split to say
much. Every metric comes back as mean ± standard deviation over the runs, with a 95% interval for the mean.

Each seed draws its own folds (stratified by class where each example has one label) and trains with that
seed. A fold's run trains on the other folds, picks its best epoch on `data.validation` where the config
gives one and otherwise on a held-out share of its training part (data.validation_fraction), and is scored on
its fold afterwards, so the fold's score is not the one that chose the epoch. The fold files (Parquet, every
column as read) and cv.json stay in the output folder; the runs are deleted once scored unless kept.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from strop.config import Config, check_seeds, load_config
from strop.errors import StropError
from strop.progress import StudyClock
from strop.runs import (atomic_write_json, check_folder_path, check_same_data, data_fingerprints,
                        lock_study, make_output_folder, refuse_several_processes)
from strop.tasks.base import score_text

CV_FILE = "cv.json"


def fold_indices(targets: list, folds: int, seed: int, inner_split: bool = False,
                 inputs: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of each fold, shuffled with `seed`: stratified by class where every
    target is one label (a string), else plain k-fold. The held-out parts are disjoint and cover every row.
    inner_split: each fold's run splits a validation set off its training rows (no data.validation), which
    needs two of every class there. inputs: the rows' inputs; the folds then split the distinct inputs, every
    row of an input in one fold (`strop.data.splits.distinct_inputs`), so that no fold scores a text it
    trained on; with no input repeated, that is a split of the rows.

    Raises:
        StropError: fewer examples than folds; one class; a class with fewer examples than folds, or too few
            left in a fold's training rows to split; a label (multi-label) a fold holds out of training.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    from strop.data.splits import amounts_hint, distinct_inputs, rows_of

    first, of_row = distinct_inputs(list(range(len(targets))) if inputs is None else inputs)
    row_targets, targets = targets, [targets[i] for i in first]  # the folds split the distinct inputs
    noun = "example" if len(targets) == len(row_targets) else "distinct input"
    stratified = all(isinstance(t, str) for t in targets)
    if len(targets) < folds and not stratified:  # classes: each must fill every fold, said below with what works
        raise StropError(f"--folds {folds}: the training data has only {len(targets)} {noun}s; use --folds "
                         f"{max(2, len(targets))} or fewer")
    if stratified:
        counts = pd.Series(targets).value_counts()
        if len(counts) < 2:
            raise StropError(f"every example has the label '{counts.index[0]}': a classifier needs examples of at "
                             "least two classes")
        fewest = int(counts.min())
        if fewest < folds:
            # the folds that work: each holds one of the class at least, and (where each run splits its own
            # validation set off its training rows) leaves 2 of it to train on; more folds leave more
            workable = [k for k in range(2, fewest + 1) if not inner_split or fewest - math.ceil(fewest / k) >= 2]
            if workable:
                span = str(workable[0]) if len(workable) == 1 else f"{workable[0]} to {workable[-1]}"
                fix = f"use --folds {span}, or add examples"
            elif fewest < 2:
                fix = "cross-validation needs at least 2 a class: add examples of it, or drop it from the data"
            else:  # a validation file leaves every fold's training rows to train on: then 2 to `fewest` folds work
                plain = "2" if fewest == 2 else f"2 to {fewest}"
                fix = (f"add examples of it, or give data.validation=FILE for every run to validate on and use "
                       f"--folds {plain}")
            raise StropError(f"--folds {folds}: class '{counts.idxmin()}' has only {fewest} "
                             f"{noun}{'s' if fewest > 1 else ''}, too few to appear in every fold; {fix}"
                             + amounts_hint(targets))
        kept = fewest - math.ceil(fewest / folds)  # the fewest a fold's training rows hold of that class
        if inner_split and kept < 2:
            enough = [k for k in range(folds, fewest + 1) if fewest - math.ceil(fewest / k) >= 2]
            fix = f"use --folds {enough[0]} or more" if enough else "add examples of it"
            raise StropError(f"--folds {folds}: class '{counts.idxmin()}' has {fewest} {noun}s, so a fold trains on "
                             f"{kept}, and its run splits a validation set off them, which needs 2: {fix}, or give "
                             "data.validation=FILE for every run to validate on")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        numbers = all(isinstance(t, (list, tuple)) and not any(isinstance(x, str) for x in t) for t in targets)
        if numbers and len(targets) // folds < 2:  # a regression's r2 and spearman need 2 held out at least
            raise StropError(f"--folds {folds}: the {len(targets)} {noun}s leave folds of 1 held out, on which "
                             f"r2 and spearman cannot be computed; use --folds {max(2, len(targets) // 2)} or fewer"
                             + ("" if len(targets) >= 4 else ", or add examples"))
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    index = np.arange(len(targets))
    plan = [(np.array(rows_of(train, of_row)), np.array(rows_of(held_out, of_row)))
            for train, held_out in splitter.split(index, targets if stratified else None)]
    targets = row_targets
    label_sets = all(isinstance(t, (list, tuple)) and all(isinstance(x, str) for x in t) for t in targets)
    if label_sets:  # (a regression's targets are lists of numbers) each label must be trained on in every fold
        holding = Counter(label for i in first for label in set(row_targets[i]))  # distinct inputs with each label
        alone = sorted(label for label, count in holding.items() if count < 2)
        if alone:  # the fold that holds its one example out trains without it, whatever the folds or seed
            raise StropError(f"label(s) {', '.join(alone[:5])} of the training data have one {noun} each: the fold "
                             "that holds it out trains without the label, however the folds are drawn; "
                             "cross-validation needs 2 of each label: add examples of them, or drop them")
        for k, (train_rows, held_out) in enumerate(plan, start=1):
            trained = {label for i in train_rows for label in targets[i]}
            missing = sorted({label for i in held_out for label in targets[i]} - trained)
            if missing:
                fewer = "use fewer folds, " if folds > 2 else ""
                raise StropError(f"--folds {folds}: fold {k} holds every example of label(s) {', '.join(missing)} "
                                 "out of its training rows, so its model could not predict them: add examples of "
                                 f"them, {fewer}or draw other folds with another train.seed (label sets are not "
                                 "stratified)")
    return plan


def interrupted_note(command: str, out: Path, finished: int) -> str:
    """What an interrupted `strop cv` or `strop curve` leaves, and how to go on."""
    if not finished:
        return f"strop {command} stopped: nothing was measured, and {out} is removed"
    return (f"strop {command} stopped: the {finished} run(s) that finished are recorded in {out}; run the same "
            f"command with --output {out} train.resume=true to train the others, or another --output to start again")


def check_study(cfg: Config, command: str) -> None:
    """Raises StropError where the config self-trains (data.unlabeled): a study's runs train on their labelled
    part only, so its numbers would be plain training's, shown under a config that says otherwise; and where
    several processes were launched (each would write the study's files)."""
    refuse_several_processes(f"strop {command}", "strop fit is the command that trains one run on several "
                             "processes or GPUs")
    if cfg.data.unlabeled is not None:
        raise StropError(f"data.unlabeled is not used by strop {command}: its runs train on labelled data only, so "
                         f"it would measure plain training, not self-training; remove data.unlabeled (self-training "
                         f"is measured by strop fit with it, against strop fit without)")


def recorded_study(out: Path, file: str, cfg: Config, finished_key: str) -> dict | None:
    """What an interrupted study (cv.json, curve.json) in `out` recorded, to continue it where
    train.resume=true; None for a new study.

    Raises:
        StropError: `out` holds files without train.resume=true, holds no study to continue, or holds a
            finished one.
    """
    import json

    path = out / file
    check_folder_path(out, "--output")
    holds_files = out.exists() and any(out.iterdir())
    if not cfg.train.resume:
        if holds_files:
            raise StropError(f"--output {out} already holds files: choose another folder, or continue an "
                             "interrupted study there with train.resume=true")
        return None
    if not path.is_file():
        if holds_files:
            raise StropError(f"--output {out} holds no {file} to continue: choose another folder")
        # as a fit refuses to resume no run: a mistyped folder would start the whole study again unnoticed
        raise StropError(f"--output {out} holds no study to continue (one that measured nothing leaves none): check "
                         "the folder, or start the study without train.resume=true")
    saved = json.loads(path.read_text(encoding="utf-8"))
    if finished_key in saved:
        raise StropError(f"the study in {out} is finished (its results are in {path}): there is nothing to continue")
    return saved


# how a refusal names a planned value that no option of its own sets
PLAN_WORDS = {"seeds": "seeds (--seeds from train.seed)", "sizes": "training sizes (--fractions of the training rows)",
              "pool_examples": "number of training rows"}


def check_same_study(saved: dict | None, cfg: Config, plan: dict, out: Path) -> None:
    """Refuses to continue a study whose config or plan (its folds, seeds, sizes, ...: the keys of `plan`)
    differ from the command's: its recorded runs and the new ones would measure two studies."""
    from strop.fit import config_differences

    if saved is None:
        return
    differences = config_differences(saved["config"], cfg)
    differences += [PLAN_WORDS.get(key, f"--{key.replace('_', '-')}") for key, value in plan.items()
                    if saved.get(key) != value]
    if differences:
        raise StropError(f"cannot continue the study in {out}: it was run with another {', '.join(differences)}; "
                         "continue it with the command that started it, or give another --output")


def summarise(values: list[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """Mean, sample standard deviation, and the 95% interval of the mean (Student's t over the n values;
    none for a single value), cut to `bounds`, the values the metric can take (with 2 folds, Student's t
    reaches 12.7 standard errors: a loss's interval would otherwise go below 0, an accuracy's above 1). Runs that share training data
    are not independent, so for k-fold the interval is an approximation, the one commonly reported."""
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    n, mean = len(array), float(array.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    low, high = bounds
    return {"n": n, "mean": mean, "std": std, "ci95": [max(low, mean - half), min(high, mean + half)]}


def repeated_note(inputs: list, part: str) -> str | None:
    """What to say where some rows repeat another's input: they stay on one side of every split."""
    from strop.data.splits import distinct_inputs

    repeated = len(inputs) - len(distinct_inputs(inputs)[0])
    if not repeated:
        return None
    return (f"data.train: {repeated} row(s) repeat the input of another; the rows of an input stay in one {part}, "
            "so that none is scored on an input it trained on")


def read_training_table(cfg: Config, command: str = "cv") -> tuple[pd.DataFrame, list, list]:
    """The training file as a table (every column, as read), and its targets and inputs as the task reads them,
    row for row. `command`: the strop command that reads it, named in messages.

    Raises:
        StropError: the data cannot be split by rows (a CoNLL file, image folders) or cannot be read.
    """
    from strop.data.tables import read_table
    from strop.model import resolve_source
    from strop.tasks import TASKS

    if cfg.data.train is None:
        raise StropError(f"data.train is not set: give the training file, e.g. strop {command} data.train=reviews.csv")
    task_cls = TASKS.get(cfg.task.name)
    source = resolve_source(cfg.model.name)
    if task_cls.level != "sequence" or not {"text", "vector"} & set(task_cls.input_kinds):
        raise StropError(f"strop cv and strop curve split tables of texts or vectors by row; {task_cls.name} data "
                         "cannot be split that way yet: use strop fit with a validation file")
    examples = task_cls.read(cfg.data.train, cfg.data, source.input_kind, "data.train")
    frame = read_table(cfg.data.train, "data.train")
    if len(frame) != len(examples):
        raise StropError(f"data.train: {len(frame)} rows but {len(examples)} examples were read; strop cv needs one "
                         "example per row")
    return frame, list(examples.targets), list(examples.inputs)


def write_rows(frame: pd.DataFrame, rows: np.ndarray, path: Path) -> Path:
    """The given rows of the table as a Parquet file (columns as read; a column of mixed types as texts:
    `write_parquet`)."""
    from strop.data.tables import write_parquet

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_parquet(frame.iloc[np.sort(rows)], path)


def default_output(kind: str) -> Path:
    return Path(datetime.now(timezone.utc).strftime(f"{kind}/%Y%m%d-%H%M%S"))


def study_output(output: str | Path | None, cfg: Config, command: str) -> Path:
    """--output, or a new folder named by the time; train.resume=true continues a study in the folder it names,
    so it needs --output (a new folder would start the study again, and leave the interrupted one as it was)."""
    if output is None and cfg.train.resume:
        raise StropError(f"train.resume=true continues an interrupted strop {command} in its folder: give it with "
                         f"--output (the folder its message named, e.g. {command}/<time>)")
    return Path(output) if output is not None else default_output(command)


def recorded_config(cfg: Config) -> dict:
    """The config a study's JSON records: as it ran, with train.resume false (as a run's config.yaml has it), so
    that a continued study records what an uninterrupted one does."""
    from dataclasses import replace

    return replace(cfg, train=replace(cfg.train, resume=False)).to_dict()


def open_study(output: str | Path | None, cfg: Config, command: str, file: str,
               finished_key: str) -> tuple[Path, dict | None, dict]:
    """A study's folder (`study_output`), what an interrupted study there recorded (`recorded_study`; None for
    a new one), and the fingerprints of the files its runs read, checked against those it recorded: all before
    anything is written.

    Raises:
        StropError: see `study_output` and `recorded_study`; the data differ from the continued study's.
    """
    out = study_output(output, cfg, command)
    saved = recorded_study(out, file, cfg, finished_key)
    data = data_fingerprints(train=cfg.data.train, validation=cfg.data.validation)
    check_same_data((saved or {}).get("data"), data, f"the study in {out}",
                    "continue it with the data it started with, or give another --output")
    return out, saved, data


def fit_and_score(cfg: Config, train_file: Path, score_file: Path | None, seed: int, run_dir: Path,
                  keep_run: bool, method_choice: dict | None = None, show: str | None = None) -> tuple[dict, int]:
    """Trains one run on `train_file` and returns the scalar metrics of its model on `score_file` (scored
    after training), or its own validation metrics where `score_file` is None, and the examples it trained on
    (fewer than the file's rows where it split off its validation set). The run is deleted unless kept. The
    run prints nothing; where `show` (the run's name in the study), its progress bars show."""
    from strop.data.tables import notes_said
    from strop.fit import fit
    from strop.predict import load
    from strop.progress import bars_of_quiet_runs

    # a kept run keeps its checkpoint only where the config asks (train.keep_checkpoint); one that goes, never
    overrides = {"data": {"train": str(train_file)}, "output_dir": str(run_dir),
                 "train": {"seed": seed, "quiet": True, "keep_checkpoint": keep_run and cfg.train.keep_checkpoint,
                           "resume": False}}
    run_cfg = load_config(_merged(cfg.to_dict(), overrides))
    # the study read the user's file and said its notes: its parts say nothing again
    with notes_said(), bars_of_quiet_runs(show is not None, show or ""):
        run = fit(run_cfg, method_choice=method_choice)  # a kept run says why its method was chosen
        predictor = load(run)
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        if score_file is None:
            metrics = summary["validation"]
        else:
            from strop.evaluate.scoring import evaluate_file

            metrics = evaluate_file(predictor, score_file, show=f"{show}, scoring the held-out fold" if show else None)
    scalars = {name: float(metrics[name]) for name in predictor.task.metric_names if name in metrics}
    if not keep_run:
        shutil.rmtree(run, ignore_errors=True)
    return scalars, int(summary["train_examples"])


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def cross_validate(config=None, overrides: list[str] = (), folds: int = 5, seeds: int = 1,
                   output: str | Path | None = None, keep_runs: bool = False, quiet: bool = False) -> dict:
    """K-fold cross-validation (folds >= 2) or repeated training on the config's own split (folds == 1),
    with `seeds` seeds from train.seed on; writes <output>/cv.json and returns its content.

    Raises:
        StropError: bad config or data, or an output folder that already holds files.
    """
    from strop.fit import all_of_note, method_for_all_of, resolve_config
    from strop.methods.auto import freeze_layers_for_all_of
    from strop.report_studies import report_after
    from strop.tasks import TASKS

    if folds < 1 or seeds < 1:
        raise StropError(f"--folds and --seeds must be >= 1; got --folds {folds} --seeds {seeds}")
    cfg = resolve_config(load_config(config, overrides))
    quiet = quiet or cfg.train.quiet  # --quiet, or train.quiet in the config
    check_study(cfg, "cv")
    out, saved, data = open_study(output, cfg, "cv", CV_FILE, "summary")
    check_seeds("train.seed", cfg.train.seed, seeds)
    seed_values = [cfg.train.seed + i for i in range(seeds)]
    if folds >= 2:
        frame, targets, inputs = read_training_table(cfg)
        plans = {seed: fold_indices(targets, folds, seed, inner_split=cfg.data.validation is None, inputs=inputs)
                 for seed in seed_values}  # checked before any run
    # one fold too: cv.json then records the method its runs trained with, not auto
    cfg, method_choice = method_for_all_of(cfg)
    said = [all_of_note(method_choice)]
    if folds >= 2:
        cfg, note = freeze_layers_for_all_of(cfg, len(targets))
        said += [note, repeated_note(inputs, "fold")]
    for line in said:
        if line and not quiet:
            print(line, flush=True)
    make_output_folder(out, "--output")
    result = {"config": recorded_config(cfg), "data": data, "folds": folds, "seeds": seed_values,
              "keep_runs": keep_runs,
              "scored_on": "the held-out fold, after training" if folds >= 2 else "the run's validation data",
              "runs": [],
              # the accuracy of always predicting the most frequent class: what the report compares the runs with
              # (one fold scores on the run's own validation data, which the study does not read)
              "majority_share": (max(Counter(targets).values()) / len(targets) if folds >= 2 and targets
                                 and all(isinstance(t, str) for t in targets) else None)}
    check_same_study(saved, cfg, {key: result[key] for key in ("folds", "seeds", "keep_runs")}, out)
    if saved is not None:
        result["runs"] = saved["runs"]
        if not quiet:
            print(f"continuing the study in {out}: {len(saved['runs'])} run(s) recorded", flush=True)
    done = {(r["seed"], r["fold"]) for r in result["runs"]}
    clock = StudyClock([1] * (len(seed_values) * folds - len(done)))  # runs alike
    lock = lock_study(out, "cv")  # refused here, a second study into the folder removes nothing of the first's
    try:
        for seed in seed_values:
            for k in range(folds):
                if (seed, k + 1 if folds >= 2 else None) in done:
                    continue
                run_dir = out / "runs" / (f"seed{seed}-fold{k + 1}" if folds >= 2 else f"seed{seed}")
                shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run's: it trains again from its start
                if folds >= 2:
                    train_rows, held_out = plans[seed][k]
                    train_file = write_rows(frame, train_rows, out / "folds" / f"seed{seed}-fold{k + 1}-train.parquet")
                    score_file = write_rows(frame, held_out, out / "folds" / f"seed{seed}-fold{k + 1}-test.parquet")
                else:
                    train_file, score_file = Path(cfg.data.train), None
                label = f"seed {seed}" + (f" fold {k + 1}/{folds}" if folds >= 2 else "")
                metrics, trained_on = fit_and_score(cfg, train_file, score_file, seed, run_dir, keep_runs,
                                                    method_choice=method_choice, show=None if quiet else label)
                entry = {"seed": seed, "fold": k + 1 if folds >= 2 else None, "metrics": metrics,
                         "run_dir": str(run_dir) if keep_runs else None}
                if folds >= 2:  # the fold's training rows, of which the run trained on trained_on (the rest
                    # validated it, where no data.validation was given)
                    entry.update(train_examples=len(train_rows), trained_on=trained_on, scored_examples=len(held_out))
                result["runs"].append(entry)
                atomic_write_json(out / CV_FILE, result, "the cross-validation results")  # each run as it ends
                if not quiet:
                    print(f"{label}: " + "  ".join(f"{name} {score_text(value)}" for name, value in metrics.items())
                          + f"  {clock.lap()}", flush=True)
    except BaseException as error:
        if not result["runs"]:
            shutil.rmtree(out, ignore_errors=True)  # nothing measured: leave nothing behind
        elif not keep_runs:
            shutil.rmtree(out / "runs", ignore_errors=True)  # what was measured stays in cv.json; no run was asked
        if isinstance(error, KeyboardInterrupt):
            print(interrupted_note("cv", out, len(result["runs"])), file=sys.stderr)
        raise
    finally:
        lock.close()  # not left to the collector: a study continued in this process takes it again
    if not keep_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)  # the runs' index (index.sqlite) goes with them
    names = list(result["runs"][0]["metrics"])
    task_cls = TASKS.get(cfg.task.name)
    result["summary"] = {name: summarise([r["metrics"][name] for r in result["runs"]], task_cls.metric_range(name))
                         for name in names}
    atomic_write_json(out / CV_FILE, result, "the cross-validation results")
    report = report_after(out, "cv")
    if not quiet:
        print(summary_table(result) + f"\nresults in {out / CV_FILE}" + (f", report in {report}" if report else ""))
    return result


def summary_table(result: dict) -> str:
    """metric  mean ± std  [95% interval]  (n runs)."""
    lines = [f"{len(result['runs'])} runs ({result['folds']} fold(s) x {len(result['seeds'])} seed(s)), scored on "
             f"{result['scored_on']}:"]
    for name, s in result["summary"].items():
        spread = (f" ± {score_text(s['std'])}  95% interval [{score_text(s['ci95'][0])}, {score_text(s['ci95'][1])}]"
                  if s["std"] is not None else "")
        lines.append(f"  {name:12} {score_text(s['mean'])}{spread}")
    return "\n".join(lines)

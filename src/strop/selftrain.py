"""Self-training on unlabelled texts (pseudo-labelling; Lee 2013, "Pseudo-Label"; Xie et al. 2020, "Self-training
with Noisy Student"): `strop fit ... data.unlabeled=pool.csv`.

Round 0 trains on the labelled data. Each later round predicts the unlabelled pool with the previous round's
model, keeps the predictions whose probability reaches data.pseudo_label_threshold, balanced across classes
(each class at most as many as the class with the fewest confident predictions, the most confident first),
and trains again from the pretrained model on the labelled data plus those pseudo-labels. Every round is an
ordinary run in output_dir/round-<r>, validated on the same labelled examples in every round (data.validation, or
one split of data.train made before round 0, so that no round's validation holds a pseudo-label or an example an
earlier round trained on); self_training.json in output_dir says how many pseudo-labels each round
used, per class, and their accuracy where the pool file has labels too (they are never used for training).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from strop.data.inputs import clean_strings, normalise_labels
from strop.data.splits import distinct_inputs, input_key
from strop.data.tables import notes_said, shown_columns
from strop.errors import StropError
from strop.runs import (RunDir, atomic_write_json, check_folder_path, check_same_data, data_fingerprints,
                        default_run_name, refuse_several_processes)
from strop.tasks.base import score_text

REPORT_FILE = "self_training.json"
PSEUDO_LABEL_TASKS = ("text_classification", "pair_classification")  # one label per example, from probabilities


def select_pseudo_labels(probabilities: np.ndarray, threshold: float, predicted: np.ndarray | None = None
                         ) -> np.ndarray:
    """The pool rows to label: predicted with probability >= threshold, at most as many per class as the
    class with the fewest such rows (among the classes that have any), the most confident first.

    probabilities: (rows, classes). predicted: the model's class of each row (`Classification.decide`: with a
    tuned decision threshold, not always the most probable), whose probability is the row's confidence; by
    default the most probable class. Returns the chosen rows, sorted.
    """
    if predicted is None:
        predicted = probabilities.argmax(axis=1)
    confidence = confidence_of(probabilities, predicted)
    confident = confidence >= threshold
    counts = np.bincount(predicted[confident], minlength=probabilities.shape[1])
    if not counts.any():
        return np.array([], dtype=np.int64)
    cap = counts[counts > 0].min()
    chosen = []
    for c in np.flatnonzero(counts):
        rows = np.flatnonzero(confident & (predicted == c))
        chosen.append(rows[np.argsort(-confidence[rows], kind="stable")][:cap])
    return np.sort(np.concatenate(chosen))


def confidence_of(probabilities: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each row's probability of its predicted class."""
    return probabilities[np.arange(len(predicted)), predicted]


def self_train(cfg, on_epoch=None) -> Path:
    """Runs the rounds (see the module); returns the last round's run directory.

    Raises:
        StropError: a task other than single-label text classification, an unreadable pool, or an output
            folder that already holds files.
    """
    from strop.data.tables import read_table, write_parquet
    from strop.fit import _has_checkpoint, all_of_note, method_for_all_of
    from strop.predict import load
    from strop.tasks import TASKS

    from strop.model import resolve_source
    from strop.tasks.sentence import refuse_reading_the_answer

    d = cfg.data
    task_cls = TASKS.get(cfg.task.name)
    if task_cls.name not in PSEUDO_LABEL_TASKS:
        raise StropError(f"data.unlabeled (self-training) is for one label an example (text_classification or "
                         f"pair_classification, of texts or of vectors with model.name=mlp), not {task_cls.name}; "
                         "remove it")
    if d.train is None:
        raise StropError("data.train is not set: self-training starts from labelled data")
    refuse_several_processes("self-training (data.unlabeled)", "without data.unlabeled, strop fit trains on "
                             "several processes or GPUs")
    out = Path(cfg.output_dir) if cfg.output_dir is not None else Path(default_run_name())
    if cfg.train.resume and cfg.output_dir is None:
        raise StropError("train.resume=true needs output_dir=<the self-training folder to continue>")
    check_folder_path(out, "output_dir")
    if out.exists() and any(out.iterdir()) and not cfg.train.resume:
        raise StropError(f"output_dir {out} already holds files: choose another output_dir, or continue an "
                         "interrupted self-training there with train.resume=true")
    input_kind = resolve_source(cfg.model.name).input_kind
    by_name = training_columns(d, task_cls, input_kind)
    if input_kind == "text":  # said before the pool is read: it lacks the label column such a setting names
        refuse_reading_the_answer(by_name, task_cls.target_columns(by_name), task_cls.pair_column(by_name))
    pool_frame, pool = read_unlabeled(d.unlabeled, by_name, task_cls, input_kind, "data.unlabeled")
    pool_frame = with_pool_labels(pool_frame, d.label_column, d.unlabeled)
    pool_frame, pool, known = without_labelled(pool_frame, pool, replace(cfg, data=by_name), task_cls, input_kind)
    unknown = len(pool)  # left once the labelled examples are out, before the repeats are
    first = distinct_inputs(pool)[0]  # a text twice in the pool would be pseudo-labelled and trained on twice
    repeated = len(pool) - len(first)
    pool_frame, pool = pool_frame.iloc[first].reset_index(drop=True), [pool[i] for i in first]
    labelled = read_table(d.train, "data.train")
    base = replace(cfg, data=replace(d, unlabeled=None))
    check_same_self_training(cfg, out)
    # with method.name=auto, every round trains with the method round 0's data choose (a round's pseudo-labels
    # would otherwise move it across a threshold, and rounds would differ in method as well as in data)
    base, method_choice = method_for_all_of(base)
    if method_choice and not cfg.train.quiet:
        print(all_of_note(method_choice))
    if d.validation is None:
        labelled, validation = split_once(labelled, base, input_kind)
        out.mkdir(parents=True, exist_ok=True)
        write_parquet(labelled, out / LABELLED_FILE)
        write_parquet(validation, out / VALIDATION_FILE)
        base = replace(base, data=replace(base.data, train=str(out / LABELLED_FILE),
                                          validation=str(out / VALIDATION_FILE)))
    report = {"threshold": d.pseudo_label_threshold, "pool": len(pool_frame), "config": cfg.to_dict(),
              "data": self_training_data(cfg), "rounds": [],
              "pool_rows_in_labelled_data": known, "pool_rows_repeated": repeated}
    if known and not cfg.train.quiet:  # in the order they are left out, each with what then remains
        print(f"data.unlabeled: {known} of its rows are examples of data.train or data.validation, left out of the "
              f"pool (a validation example pseudo-labelled would be scored on its own guess); {unknown} remain")
    if repeated and not cfg.train.quiet:
        print(f"data.unlabeled: {repeated} of its rows repeat an earlier row's input, left out (each text is "
              f"pseudo-labelled once); {len(pool)} remain")
    try:
        if not (out / REPORT_FILE).is_file():
            # the settings are on record before round 0 trains, so that continuing a self-training interrupted
            # in round 0 with other settings is refused as the self-training (check_same_self_training), not as
            # round 0 alone, whose own resume would continue it as a plain run
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / REPORT_FILE, report, "the self-training report")
        with continue_hint(out):
            run = _round(base, round_folder(out, 0), on_epoch, method_choice)
    except StropError:
        # refused before training: no half-made self-training folder is left; but a round 0 that reached a
        # checkpoint before it failed (a full disk) is kept, to continue with train.resume=true as its message says
        if not cfg.train.resume and not _has_checkpoint(RunDir(round_folder(out, 0))):
            shutil.rmtree(out, ignore_errors=True)
        raise
    report["rounds"].append({"round": 0, "run": str(run), "pseudo_labels": 0, "validation": _validation(run)})
    atomic_write_json(out / REPORT_FILE, report, "the self-training report")
    with continue_hint(out):
        for r in range(1, d.self_training_rounds + 1):
            predictor = load(run)
            probabilities = np.stack(predictor.outputs(  # (pool, classes)
                model_inputs(pool, by_name.feature_columns),
                show=None if cfg.train.quiet else f"round {r}: scoring the pool of {len(pool)}"))
            # the classes the model predicts (strop predict's): with a tuned threshold, not always the most probable
            predicted = predictor.task.decide(probabilities)
            chosen = select_pseudo_labels(probabilities, d.pseudo_label_threshold, predicted)
            if len(chosen) == 0:  # retraining on the labelled data alone would repeat the last round
                report["stopped"] = (f"round {r}: no example of the pool reached data.pseudo_label_threshold="
                                     f"{d.pseudo_label_threshold:g}; the model of round {r - 1} stands")
                if not cfg.train.quiet:
                    print(f"self-training stopped: {report['stopped']} (lower the threshold to use the pool)")
                break
            names = predictor.task.labels
            guessed = [names[i] for i in predicted[chosen]]
            rows = pool_frame.iloc[chosen].copy()
            truth = rows[d.label_column].tolist() if d.label_column in rows else [None] * len(rows)
            rows[d.label_column] = guessed
            combined = pd.concat([labelled, rows[[c for c in labelled.columns if c in rows]]], ignore_index=True)
            train_file = out / f"round-{r}-train.parquet"
            write_parquet(combined, train_file)
            entry = {"round": r, "pseudo_labels": len(chosen),
                     "per_class": {name: guessed.count(name) for name in names if name in guessed},
                     "confident": int((confidence_of(probabilities, predicted) >= d.pseudo_label_threshold).sum())}
            # rows the pool file gives a label the model knows (another label cannot be guessed right or wrong)
            known = [(g, t) for g, t in zip(guessed, truth) if t in names]
            if known:
                entry["pseudo_label_accuracy"] = float(np.mean([g == t for g, t in known]))
                entry["pseudo_labels_with_known_label"] = len(known)
            with notes_said():  # round 0 read the user's file and said its notes; this round's file is part of it
                round_cfg = replace(base, data=replace(base.data, train=str(train_file)))
                run = _round(round_cfg, round_folder(out, r), on_epoch, method_choice)
            entry.update(run=str(run), validation=_validation(run))
            report["rounds"].append(entry)
            atomic_write_json(out / REPORT_FILE, report, "the self-training report")
            _rebuild_report(run)  # its page lists the rounds, this one now among them
            if not cfg.train.quiet:
                accuracy, checked = entry.get("pseudo_label_accuracy"), len(known)
                right = ("" if not known else f", {accuracy:.3f} of them right" if checked == len(chosen)
                         else f", {accuracy:.3f} right of the {checked} the pool file labels with a class of the model")
                per_class = ", ".join(f"{name} {count}" for name, count in entry["per_class"].items()) or "none"
                print(f"self-training round {r}: {len(chosen)} pseudo-labels of {entry['confident']} confident "
                      f"(per class: {per_class}; as many of each class that has any){right}; the model is in {run}")
                worse = worse_than_before(report["rounds"], type(predictor.task).minimised)
                if worse:
                    print(f"warning: {worse}", file=sys.stderr)
    atomic_write_json(out / REPORT_FILE, report, "the self-training report")
    return run


LABELLED_FILE, VALIDATION_FILE = "labelled-train.parquet", "validation.parquet"


def without_labelled(pool_frame: pd.DataFrame, pool: list, cfg, task_cls, input_kind: str) -> tuple[pd.DataFrame,
                                                                                                     list, int]:
    """The pool without the rows whose inputs are those of a labelled example (data.train, data.validation),
    and how many were left out: a pseudo-labelled validation example would make a round's score its own
    guess, and a training example would train twice, once perhaps with the wrong label.

    Raises:
        StropError: every row of the pool is a labelled example.
    """
    d = cfg.data
    labelled = {input_key(x) for x in task_cls.read(d.train, d, input_kind, "data.train").inputs}
    if d.validation is not None:
        labelled |= {input_key(x) for x in task_cls.read(d.validation, d, input_kind, "data.validation").inputs}
    keep = [i for i, x in enumerate(pool) if input_key(x) not in labelled]
    if not keep:
        raise StropError(f"data.unlabeled {d.unlabeled}: every one of its {len(pool)} rows is an example of data.train "
                         "or data.validation: give unlabelled rows the labelled data do not hold")
    return pool_frame.iloc[keep].reset_index(drop=True), [pool[i] for i in keep], len(pool) - len(keep)


def split_once(labelled: pd.DataFrame, cfg, input_kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """data.train's rows (`labelled`) split into training and validation rows as `strop fit` splits them
    (data.validation_fraction, stratified by class, train.seed): the same rows every time for a seed.

    Raises:
        StropError: data that cannot train the task, or too few examples to split.
    """
    from strop.tasks import TASKS

    task_cls = TASKS.get(cfg.task.name)
    examples = task_cls.read(cfg.data.train, cfg.data, input_kind, "data.train")
    task = task_cls.from_data(examples, None, cfg)
    # an example a row (a row without a label is refused, not dropped): the split of the row numbers is the
    # split of the examples
    train_rows, validation_rows = task.split(replace(examples, inputs=list(range(len(examples)))),
                                             cfg.data.validation_fraction, cfg.train.seed)
    return (labelled.iloc[train_rows.inputs].reset_index(drop=True),
            labelled.iloc[validation_rows.inputs].reset_index(drop=True))


def check_same_self_training(cfg, out: Path) -> None:
    """Raises StropError where train.resume=true continues a self-training folder whose settings differ (more
    rounds may be asked): its completed rounds and their records would mix two settings."""
    from strop.fit import config_differences

    report = out / REPORT_FILE
    if not (cfg.train.resume and report.is_file()):
        return
    recorded = json.loads(report.read_text(encoding="utf-8"))
    saved = recorded.get("config")
    differences = [] if saved is None else config_differences(saved, cfg, {("data", "self_training_rounds")})
    if differences:
        raise StropError(f"cannot continue the self-training in {out}: its config differs in "
                         f"{', '.join(differences)}; continue it with the settings it started with (the config in "
                         f"{report}) and output_dir={out} train.resume=true, or start a new one in another "
                         "output_dir")
    check_same_data(recorded.get("data"), self_training_data(cfg), f"the self-training in {out}",
                    f"continue it with the data it started with, or start a new one in another output_dir")


def self_training_data(cfg) -> dict:
    """The fingerprints of the files self-training reads (its rounds' labelled data and pool)."""
    d = cfg.data
    return data_fingerprints(train=d.train, validation=d.validation, unlabeled=d.unlabeled)


def round_folder(out: Path, r: int) -> Path:
    """Where round r's run is, in the self-training folder `out`."""
    return out / f"round-{r}"


def last_round(out: Path) -> Path | None:
    """The run of the last round of the self-training folder `out` (its model is the self-training's); None
    where `out` is no self-training folder."""
    report = out / REPORT_FILE
    if not report.is_file():
        return None
    rounds = json.loads(report.read_text(encoding="utf-8"))["rounds"]
    return round_folder(out, rounds[-1]["round"]) if rounds else None  # none: round 0 has not completed


def run_of(folder: str | Path, command: str, quiet: bool = False) -> Path:
    """The run `command` works on for `folder`: the folder itself, or, for a self-training folder, its last
    round's run (its model is the self-training's, as predict and serve read it), said unless quiet."""
    last = last_round(Path(folder))
    if last is None:
        return Path(folder)
    if not quiet:
        print(f"{folder} is a self-training folder: {command} takes its last round, {last}", flush=True)
    return last


def round_hint(folder: Path) -> str:
    """Words for a message about a folder that holds no run: where it is a self-training folder, its rounds are
    the runs (the last is its model)."""
    last = last_round(Path(folder))
    return "" if last is None else f" ({folder} is a self-training folder: its rounds are runs, the last {last})"


def _round(cfg, folder: Path, on_epoch, method_choice: dict | None) -> Path:
    """One round's run in `folder`. With train.resume=true (the self-training continued), a round that completed
    is kept as it is, and one that was interrupted continues from its checkpoint; the pseudo-labels a round
    trains on are drawn again from the round before, the same as before, as its model is the same.
    method_choice: method.name=auto's choice for every round, recorded in each round's provenance.json."""
    from strop.fit import fit
    from strop.runs import RunDir

    if cfg.train.resume and RunDir(folder).is_complete():
        return folder
    resume = cfg.train.resume and RunDir(folder).config.is_file()
    if resume:
        # the number of rounds is the self-training's (more may be asked on continuing; its own check allows
        # that), not the round's, which trains the same whatever it is: the round keeps the number it started
        # with, so that resuming it compares only what the round trains by
        saved = yaml.safe_load(RunDir(folder).config.read_text(encoding="utf-8"))
        rounds = saved.get("data", {}).get("self_training_rounds", cfg.data.self_training_rounds)
        cfg = replace(cfg, data=replace(cfg.data, self_training_rounds=rounds))
    # resume_hint: continuing the round alone would not continue the self-training (said above)
    return fit(replace(cfg, output_dir=str(folder), train=replace(cfg.train, resume=resume)), on_epoch=on_epoch,
               resume_hint=False, method_choice=method_choice)


@contextmanager
def continue_hint(out: Path):
    """On Ctrl-C, within a round or between two (the pool being pseudo-labelled), how to continue."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"self-training interrupted; continue it with the same command and output_dir={out} "
              "train.resume=true (the rounds that completed are kept)", file=sys.stderr)
        raise


def training_columns(d, task_cls, input_kind: str):
    """The data config `d` with data.feature_columns the training data's (vectors; others unchanged), so that
    the pool is read as `strop predict` reads a table: each feature by its column's name, whatever the pool's
    column order, and its other columns (an id) passed over."""
    if input_kind != "vector":
        return d
    return replace(d, feature_columns=task_cls.read(d.train, d, input_kind, "data.train").feature_columns)


def model_inputs(pool: list, feature_columns: tuple[str, ...]):
    """The pool as a round's model is given it: vectors as a table named by their columns, which the model
    reads by name (a model started from a run may hold them in that run's order); other inputs as they are."""
    if not feature_columns:
        return pool
    return pd.DataFrame(np.stack(pool), columns=list(feature_columns))


UNKNOWN_MARK = re.compile(r"[^\w]+")  # '?', '-', '*': a label without a letter or digit says "not known"


def with_pool_labels(frame: pd.DataFrame, column: str, path) -> pd.DataFrame:
    """The pool with its label column (where it has one) written as the training labels are ('1.0' is '1',
    decided once on the whole column) and None where a row has none or marks it unknown ('?'): they never
    train, they only measure the pseudo-labels; checked here, before round 0, so that a bad one costs no round.

    Raises:
        StropError: a label that is a list or mapping (one class a row is pseudo-labelled), or bytes that are
            not UTF-8.
    """
    if column not in frame.columns:
        return frame
    for row, value in enumerate(frame[column].tolist(), start=1):
        if isinstance(value, (list, dict, tuple, np.ndarray)):
            raise StropError(f"data.unlabeled: column '{column}' of {Path(path).name} holds a {type(value).__name__}"
                             f" in row {row} ({str(value)[:60]}; row 1 is the first example), not one label; the "
                             "pool's labels only score the pseudo-labels, one class a row: write one label there "
                             f"or leave it empty, or remove the column '{column}' from {path}")
    labels = clean_strings(frame[column], path, "data.unlabeled")
    labels = [None if label is None or UNKNOWN_MARK.fullmatch(label) else label for label in labels]
    labels = normalise_labels(frame[column], labels, path, "data.unlabeled")
    return frame.assign(**{column: pd.Series(labels, index=frame.index, dtype=object)})


def read_unlabeled(path: str | Path, d, task_cls, input_kind: str, what: str) -> tuple[pd.DataFrame, list]:
    """Unlabelled examples (self-training's data.unlabeled, distillation's --unlabeled) as rows of a table and
    as the model's inputs: a table read as the training data is (d: the run's data config), or for single
    texts a .txt file of one text per line. `what` names the option in messages. Vectors are read by the
    names in d.feature_columns (see `training_columns`), other columns passed over.

    Raises:
        StropError: an unreadable or empty file, a .txt file where the inputs are not single texts, or a table
            without an input column of the training data.
    """
    from strop.data.tables import READERS, got_format, read_table, table_suffix
    from strop.pretrain import read_lines

    if Path(path).suffix.lower() == ".txt":
        if input_kind != "text" or d.text_pair_column is not None:
            needed = (f"the columns {d.text_column} and {d.text_pair_column}" if input_kind == "text"
                      else "the training data's input columns")
            kind = "text pairs" if input_kind == "text" else f"{input_kind}s"
            raise StropError(f"{what} {path}: a .txt file holds one text per line, and this run's inputs are "
                             f"{kind}: give a table with {needed}")
        lines = read_lines(path, what, 1, "give at least one text")
        return pd.DataFrame({d.text_column: lines}), lines
    if table_suffix(Path(path)) not in READERS and Path(path).is_file():
        texts = ".txt (one text a line), " if input_kind == "text" and d.text_pair_column is None else ""
        raise StropError(f"{what}: cannot read '{Path(path).name}': use one of {texts}{', '.join(READERS)} "
                         f"({got_format(Path(path))})")
    frame = read_table(path, what)
    if input_kind == "text":
        for key in ("text_column", "text_pair_column"):
            column = getattr(d, key)
            if column is not None and column not in frame.columns:
                raise StropError(f"{what}: column '{column}' not found in {Path(path).name}; columns found: "
                                 f"{shown_columns(frame.columns)}. The pool's texts go in the column the "
                                 f"training data's are in (data.{key}={column}): rename that column in {path}")
    missing = [c for c in d.feature_columns if c not in frame.columns] if input_kind == "vector" else []
    if missing:  # read by name: the pool needs each column the model reads, in any order
        raise StropError(f"{what}: {Path(path).name} lacks the feature column(s) {shown_columns(missing)} of the "
                         f"training data; columns found: {shown_columns(frame.columns)}. The pool's features go in "
                         f"the columns the training data's are in: add or rename them in {path}")
    inputs = task_cls.read(path, d, input_kind, what, with_targets=False).inputs
    return frame, inputs


def _rebuild_report(run: Path) -> None:
    """The round's report.html again, now that self_training.json holds the round; one that fails only warns."""
    from strop.report import build_report

    try:
        build_report(run)
    except Exception as error:  # noqa: BLE001 - the round is complete and saved; the report is an extra
        print(f"strop fit: warning: {run / 'report.html'} could not be rebuilt ({type(error).__name__}: {error}); "
              f"try again with: strop report {run}", file=sys.stderr)


def worse_than_before(rounds: list[dict], minimised) -> str | None:
    """Where the last round validates worse than the one before on the runs' metric: what to say (the last round
    is the model, so a round whose pseudo-labels hurt is said, with where the better model is)."""
    last, before = rounds[-1], rounds[-2]
    metric = json.loads((Path(last["run"]) / "summary.json").read_text(encoding="utf-8"))["metric"]
    now, then = last["validation"].get(metric), before["validation"].get(metric)
    if now is None or then is None or (now <= then if metric in minimised else now >= then):
        return None
    return (f"round {last['round']} scores {metric} {score_text(now)} on validation against {score_text(then)} for "
            f"round {before['round']}: its pseudo-labels hurt; the model of round {before['round']} is in {before['run']} "
            "(a higher data.pseudo_label_threshold takes fewer, surer ones)")


def _validation(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))["validation"]

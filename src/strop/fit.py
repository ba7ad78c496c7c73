"""`strop fit`: config -> checked data -> model -> training -> a complete run directory."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import yaml

from strop.config import Config, TaskConfig, load_config
from strop.errors import StropError
from strop.index import record_run
from strop.methods import METHODS
from strop.methods.base import count_parameters, unread_settings
from strop.methods.peft import leave_room_for_prompt
from strop.model import Source, TaskModel, build_model, outputs_of, resolve_source, save_model
from strop.runs import (RunDir, atomic_write_json, atomic_write_text, check_folder_path, default_run_name,
                        hold_lock, library_versions, note_other_versions, output_folder, remove_failed_run,
                        reporting_write_errors)
from strop.tasks import TASKS, Examples, Task, infer_task_name
from strop.tasks.base import pad_collate, score_text
from strop.train.checkpoint import keeps_callers_random_state
from strop.train.optim import unread_optim_settings


@dataclass(frozen=True)
class Splits:
    train: Examples
    validation: Examples
    task: Task


def load_splits(cfg: Config, input_kind: str) -> Splits:
    """Reads and checks the training data, and the validation file or a split of train (stratified by
    class where the task has classes); the task made concrete by the training data (its label map by all of
    data.train, its statistics by the rows it trains on).

    Raises:
        StropError: the data cannot train the task (see each task's `read` and `from_data`).
    """
    d = cfg.data
    if d.train is None:
        raise StropError("data.train is not set: give the training file, e.g. strop fit data.train=reviews.csv")
    task_cls = TASKS.get(cfg.task.name)
    if input_kind not in task_cls.input_kinds:
        wanted = " or ".join(task_cls.input_kinds)
        raise StropError(f"task.name={cfg.task.name} needs a model that reads {wanted} inputs, and model.name="
                         f"{cfg.model.name} reads {input_kind} inputs: choose a {wanted} model (e.g. model.name="
                         f"{'efficientnet-lite0' if 'image' in task_cls.input_kinds else 'minilm-l6'})")
    if d.text_pair_column and (input_kind != "text" or task_cls.level != "sequence"):
        # read nowhere, but saved: predict and serve would then ask for pairs the model never saw
        reads = "words, a tag each" if task_cls.level == "token" else f"{input_kind} inputs"
        raise StropError(f"data.text_pair_column={d.text_pair_column}: task.name={cfg.task.name} reads {reads}, not "
                         "pairs of texts; leave data.text_pair_column out")
    train = task_cls.read(d.train, d, input_kind, "data.train")
    validation = None
    if d.validation is not None:
        columns = replace(d, feature_columns=train.feature_columns or d.feature_columns)  # the same features
        validation = task_cls.read(d.validation, columns, input_kind, "data.validation")
    task = task_cls.from_data(train, validation, cfg)
    if validation is None:
        train, validation = task.split(train, d.validation_fraction, cfg.train.seed)
        task = task.fitted_to(train, cfg)
    return Splits(train, validation, task)


def resolve_config(cfg: Config) -> Config:
    """The config with what `auto` and defaults leave open made concrete where the data decide it once
    (the task from the training file), so config.yaml says what ran."""
    return replace(cfg, task=replace(cfg.task, name=infer_task_name(cfg.task.name, cfg.data.train, cfg.data)))


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs before it trains: the resolved config, checked data, the model and its task,
    and the encoded examples."""

    cfg: Config
    source: Source
    splits: Splits
    model: TaskModel
    task: Task
    notes: list[str]
    collate: Callable[[list[dict]], dict]
    train_features: list[dict]
    val_features: list[dict]
    method_choice: dict | None = None  # method.name=auto: what was chosen and why (recorded in provenance.json)


def prepare(cfg: Config, adapt_task: Callable[[Task], Task] | None = None) -> Prepared:
    """Reads and checks the data, builds the model (seeded) and encodes the examples, writing nothing.

    Raises:
        StropError: bad data, model or settings.
    """
    from accelerate.utils import set_seed

    from strop.report import say_repeats
    from strop.train.loop import resolve_metric

    cfg = resolve_config(cfg)
    source = resolve_source(cfg.model.name, TASKS.get(cfg.task.name).input_kinds)
    splits = load_splits(cfg, source.input_kind)
    saved_columns = source.info.get("feature_columns") if source.kind == "run" else None
    read = list(splits.train.feature_columns or [])
    if saved_columns and read != saved_columns and sorted(read) == sorted(saved_columns):
        # the saved MLP's columns in another order: read by name, in the order its weights expect
        cfg = replace(cfg, data=replace(cfg.data, feature_columns=tuple(saved_columns)))
        splits = load_splits(cfg, source.input_kind)
    say_repeats(splits.task, splits.train, splits.validation)
    notes, method_choice = [], None
    single_labels = splits.task.labels if splits.task.name == "text_classification" else []
    joined = [label for label in single_labels if cfg.data.label_separator in str(label)]
    if joined:  # "a|b" as one class of its own: most often a multi-label file read as single labels
        notes.append(f"{len(joined)} class name(s) hold data.label_separator '{cfg.data.label_separator}' (e.g. "
                     f"'{joined[0]}'), each trained as one class; if an example may have several labels, set "
                     "task.name=multilabel_classification")
    if cfg.method.name == "auto":
        cfg, why = _choose_method(cfg, splits, source)
        method_choice = {"asked": "auto", "chosen": cfg.method.name, "why": why}
        notes.append(f"method auto -> {cfg.method.name}: {why}")
    notes += [note for note in [unread_settings(cfg.method), unread_optim_settings(cfg.optim)] if note]
    if cfg.task.loss != TaskConfig().loss and splits.task.name != "regression":
        notes.append(f"task.loss={cfg.task.loss} is not used: it is the loss of regression, and this run does "
                     f"{splits.task.name}")
    if cfg.train.label_smoothing and not splits.task.reads_label_smoothing:
        notes.append(f"train.label_smoothing={cfg.train.label_smoothing:g} is not used: it softens the targets of "
                     f"single-label classification, and this run does {splits.task.name}")
    if splits.train.feature_columns:
        cfg = replace(cfg, data=replace(cfg.data, feature_columns=splits.train.feature_columns))
    resolve_metric(cfg, splits.task)
    set_seed(cfg.train.seed)  # before the head is initialised, so the same seed gives the same run
    cache_asked = cfg.method.cache_bottom
    cfg = _choose_cache_bottom(cfg)
    auto_frozen = cfg.method.freeze_layers == "auto"
    if auto_frozen:  # decided below from the body's layers; only images read it while building, and get 0
        cfg = replace(cfg, method=replace(cfg.method, freeze_layers=0))
    model, task, model_notes = build_model(source, splits.task, cfg, splits.train.inputs)
    notes += model_notes
    notes += [note for note in [leave_room_for_prompt(model.body, cfg)] if note]
    if source.kind == "run" and model.body.kind == "vector":  # a saved MLP's shape, whatever the config said
        body = model.body
        cfg = replace(cfg, model=replace(cfg.model, hidden=tuple(body.hidden), activation=body.activation))
    if auto_frozen:
        cfg = _choose_freeze_layers(cfg, splits, model, notes)
    if cfg.method.freeze_layers and cfg.method.name == "gradual":
        notes.append(f"method.freeze_layers={cfg.method.freeze_layers}: the bottom layers never join the gradual "
                     "unfreezing; they run at every step, as what trains above them changes from epoch to epoch")
    elif cfg.method.freeze_layers and not METHODS.get(cfg.method.name)(cfg.method).caches_inputs:
        notes.append(f"method.freeze_layers={cfg.method.freeze_layers}: the frozen layers run at every step, without "
                     "gradients, so that the augmented, mixed or mirrored inputs reach them (method.cache_bottom="
                     + ("auto -> false" if cache_asked == "auto" else "false")
                     + "; true computes their outputs once, of the inputs as they are)")
    if adapt_task is not None:  # strop distill: the teacher's soft targets in the labels and the loss
        task = adapt_task(task)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    collate = partial(pad_collate, pad_values={**model.body.pad_values, **task.pad_values})
    train_features = task.encode(model.body, splits.train) + task.extra_training_features(model.body)
    val_features = task.encode(model.body, splits.validation)
    train_features, collate = _augmentation(cfg, model, task, splits.train.inputs, train_features, collate, notes)
    if cfg.train.ema_decay and cfg.train.batch_size != "auto":  # auto: said once the batch size is found (fit)
        notes.append(_average_note(cfg, len(train_features)))
    return Prepared(_resolve_precision(cfg, model.body), source, splits, model, task, notes,
                    collate, train_features, val_features, method_choice)


def _augmentation(cfg: Config, model: TaskModel, task: Task, inputs: list, features: list[dict], collate,
                  notes: list[str]) -> tuple[list[dict], Callable]:
    """data.augment for texts (strop.data.augment), data.mixup and data.cutmix (strop.train.mixing), checked
    here, before a run directory exists; images augment in their backbone (ImageBackbone.configure)."""
    from strop.train.mixing import mixing_for

    cached = METHODS.get(cfg.method.name)(cfg.method).caches_inputs
    mixing = mixing_for(cfg, model, task, cached)
    if mixing is not None:
        kinds = [f"mixup (alpha {cfg.data.mixup:g})"] * bool(mixing.mixup) + \
            [f"CutMix (alpha {cfg.data.cutmix:g})"] * bool(mixing.cutmix)
        notes.append(f"mixing: {' or '.join(kinds)} of each training batch with a shuffled copy of itself")
    kind = model.body.kind
    if kind == "text":
        from strop.data.augment import text_augmentation

        features, collate, note = text_augmentation(cfg, model.body, task, inputs, features, collate, cached)
        notes += [note] if note else []
    if kind != "image" and cfg.data.tta != "none":
        raise StropError(f"data.tta={cfg.data.tta} is for images (a mirrored image shows the same thing); for "
                         f"{kind}s leave data.tta=none")
    sizes = [f"data.{key}" for key in ("test_image_size", "crop_pct") if getattr(cfg.data, key) is not None]
    if kind != "image" and sizes:
        raise StropError(f"{' and '.join(sizes)}: for images only (how they are resized for validation and "
                         f"prediction); for {kind}s leave {'them' if len(sizes) > 1 else 'it'} unset")
    if kind == "vector" and cfg.data.augment not in ("auto", "none"):
        raise StropError(f"data.augment={cfg.data.augment} is for texts and images; for vectors use data.mixup "
                         "(e.g. data.mixup=0.2)")
    if kind != "text" and cfg.data.augment_rate != type(cfg.data).augment_rate:  # the field's default: not asked
        notes.append(f"data.augment_rate={cfg.data.augment_rate:g} is not used: it is the share of a text's words "
                     f"that text augmentation changes, and these inputs are {kind}s")
    return features, collate


def _choose_cache_bottom(cfg: Config) -> Config:
    """method.cache_bottom=auto made concrete: a frozen bottom's outputs are cached unless the training inputs
    change from epoch to epoch (data.augment, data.mixup, data.cutmix), which a cache would never see, or the
    validation images are seen mirrored too (data.tta), which a cache of the images as they are does not hold."""
    if cfg.method.cache_bottom != "auto":
        return cfg
    cache = not _inputs_vary(cfg) and cfg.data.tta == "none"
    return replace(cfg, method=replace(cfg.method, cache_bottom=cache))


def _inputs_vary(cfg: Config) -> bool:
    """Whether the run augments or mixes its training inputs (data.augment, data.mixup, data.cutmix)."""
    return cfg.data.augment not in ("auto", "none") or cfg.data.mixup > 0 or cfg.data.cutmix > 0


def _choose_method(cfg: Config, splits: Splits, source: Source) -> tuple[Config, str]:
    """method.name=auto made concrete (config.yaml then says what ran), and why (see strop.methods.auto)."""
    import torch

    from strop.methods.auto import choose_method

    gpu = cfg.train.device != "cpu" and torch.cuda.is_available()
    name, why = choose_method(splits.task, splits.train.targets, source.input_kind, gpu,
                              pretrained=source.kind != "mlp", augmenting=_inputs_vary(cfg),
                              batch_size=cfg.train.batch_size)
    return replace(cfg, method=replace(cfg.method, name=name)), why


def method_for_all_of(cfg: Config) -> tuple[Config, dict | None]:
    """`strop cv` and `strop curve` train on parts of the data, self-training on growing data: with
    method.name=auto each part would choose for its own size, and parts either side of a threshold would measure
    two methods. Every part trains with the method a fit on all the data chooses. Returns the config and the
    choice, as a fit records it (None where the method was given): pass it to each part's `fit`, and say it
    with `all_of_note`."""
    if cfg.method.name != "auto":
        return cfg, None
    source = resolve_source(cfg.model.name, TASKS.get(cfg.task.name).input_kinds)
    cfg, why = _choose_method(cfg, load_splits(cfg, source.input_kind), source)
    return cfg, {"asked": "auto", "chosen": cfg.method.name, "why": why}


def all_of_note(choice: dict | None) -> str | None:
    """What `method_for_all_of` chose, in words (None where the method was given)."""
    if choice is None:
        return None
    return f"method auto -> {choice['chosen']} in every run, as a fit on all the data chooses: {choice['why']}"


def _choose_freeze_layers(cfg: Config, splits: Splits, model: TaskModel, notes: list[str]) -> Config:
    """method.freeze_layers=auto made concrete (config.yaml then says what ran), with a note where layers
    stay frozen (see strop.methods.auto)."""
    from strop.methods.auto import choose_freeze_layers

    k, why = choose_freeze_layers(cfg.method.name, splits.task, len(splits.train.targets), model.body.kind,
                                  len(model.body.layers()), _inputs_vary(cfg))
    if why:
        notes.append(f"method.freeze_layers auto -> {k}: {why}")
    return replace(cfg, method=replace(cfg.method, freeze_layers=k))


@keeps_callers_random_state
def fit(config: str | Path | dict | Config | None = None, overrides: list[str] = (),
        on_epoch: Callable[[dict], None] | None = None, adapt_task: Callable[[Task], Task] | None = None,
        resume_hint: bool = True, method_choice: dict | None = None) -> Path:
    """Fine-tunes a model as the config says and returns the run directory.

    Args:
        config: a YAML path, a dict, a Config, or None for the defaults.
        overrides: `key=value` strings applied on top, e.g. ["optim.lr=3e-5"].
        on_epoch: called with each epoch's metrics record (see `strop.train.loop.train`), e.g. by a search.
        adapt_task: turns the data's task into the one trained (strop distill adds the teacher's soft targets).
        resume_hint: on Ctrl-C, say how to continue this run (False where the caller continues a larger job,
            as self-training's rounds, and says how itself).
        method_choice: where a larger job resolved method.name=auto for all its runs (`method_for_all_of`),
            its choice, recorded in the run's provenance.json as a fit's own choice is.

    Raises:
        StropError: bad config, data or model name. Nothing is written in that case.
    """
    from strop.progress import quiet_progress

    cfg = load_config(config, overrides)
    with quiet_progress(cfg.train.quiet):  # train.quiet: no part of the run shows progress
        return _fit(cfg, on_epoch, adapt_task, resume_hint, method_choice)


def _fit(cfg: Config, on_epoch, adapt_task, resume_hint: bool, method_choice: dict | None) -> Path:
    """`fit` of a loaded config."""
    from strop.train.batch_size import resolve_batch_sizes
    from strop.train.loop import make_accelerator, resolve_metric, train

    # Every check that can fail on the user's input runs before the run directory exists.
    if cfg.data.unlabeled is not None:  # self-training: a fit per round (strop.selftrain)
        from strop.selftrain import self_train

        return self_train(resolve_config(cfg), on_epoch)
    refuse_early(cfg)
    prepared = prepare(cfg, adapt_task)
    cfg, source, splits, model, task, notes = (prepared.cfg, prepared.source, prepared.splits, prepared.model,
                                               prepared.task, prepared.notes)
    collate, train_features, val_features = prepared.collate, prepared.train_features, prepared.val_features
    existed = cfg.output_dir is not None and Path(cfg.output_dir).exists()  # made by the user: kept on failure
    run, cfg, lock = _open_run_dir(cfg)
    created = not cfg.train.resume
    saved = False  # the summary written: the run is complete from then on
    try:
        accelerator = make_accelerator(cfg)
        _check_engine(accelerator)
        method = METHODS.get(cfg.method.name)(cfg.method)
        auto_batch = cfg.train.batch_size == "auto"
        cfg = resolve_batch_sizes(cfg, model, task, method, train_features, val_features, collate, accelerator.device,
                                  show=not cfg.train.quiet and accelerator.is_main_process)
        if cfg.train.ema_decay and auto_batch:  # its steps, and so a short run's warning, known only now
            notes = [*notes, _average_note(cfg, len(train_features))]
        _check_rate_finder(cfg, accelerator.num_processes)
        run, cfg = _agreed(run, cfg, accelerator)
        provenance = _provenance(cfg, splits, accelerator)
        choice = prepared.method_choice or method_choice  # this fit's own, or the larger job's
        if choice is not None:
            provenance["method_choice"] = choice
        if cfg.train.resume:
            saved = _check_same_data(run, provenance)
            # the config a resumed run reads holds the method auto chose; the choice and its reason stay recorded
            if "method_choice" in saved and "method_choice" not in provenance:
                provenance["method_choice"] = saved["method_choice"]
            note_other_versions(run.root, saved, provenance, accelerator.is_main_process)
        if accelerator.is_main_process:
            atomic_write_text(run.config, cfg.to_yaml(), "the config")
            atomic_write_json(run.provenance, provenance, "the provenance")
            _announce(cfg, splits, task, model, notes, run, accelerator)
            record_run(run.root, "running")  # the runs folder's index (strop runs)
        started = time.perf_counter()
        stage = method.before_training(model, task, train_features, val_features, collate, cfg, run,
                                       accelerator) or {}
        if stage:
            from accelerate.utils import set_seed

            # the epochs start from the seed, not from where the stage left the random numbers: a run resumed
            # within the stage then trains its epochs as one that was not stopped
            set_seed(cfg.train.seed)
        stage_seconds = stage.get("train_seconds", 0.0)
        state, final, scored = train(model, task, method, train_features, val_features,
                                     collate, model.body.input_keys, cfg, run, accelerator, on_epoch)
        calibrated = task.calibrated(*scored)  # e.g. per-label thresholds, tuned on validation
        if calibrated != task:
            task, final = calibrated, calibrated.metrics(*scored)
        if accelerator.is_main_process:
            save_model(run.model, accelerator.unwrap_model(model), task, _model_info(cfg, source))
            best = state.history[state.best_epoch - 1]
            metric = resolve_metric(cfg, task)
            atomic_write_json(run.summary, {
                "task": task.name, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
                "stopped_early": state.stopped_early, "metric": metric, "best": best,
                "validation": {name: final[name] for name in task.metric_names}, "steps": state.step,
                "peak_lr": state.peak_lr,
                # the method's own stage (few-shot's contrastive stage) is training too
                "train_seconds": round(state.train_seconds + stage_seconds, 3),
                **({"stage_train_seconds": round(stage_seconds, 3)} if stage else {}),
                # the method's own stage trained other parameters (few-shot's: the body), in steps of its own
                **({"stage": stage} if stage else {}),
                "wall_seconds_this_session": round(time.perf_counter() - started, 3),
                "train_examples": len(splits.train), "validation_examples": len(splits.validation),
                "parameters": dict(zip(("trainable", "total"), count_parameters(accelerator.unwrap_model(model)))),
                **{key: value for key, value in task.info().items() if key in ("labels", "targets")},
            }, "the summary")
            saved = True
            # complete (README): said in the index and the checkpoint gone before the report is drawn, so that a
            # stop while it is drawn leaves a complete run, whose report `strop report` draws again
            record_run(run.root, "complete")
            if not cfg.train.keep_checkpoint:  # a complete run cannot be resumed: the checkpoint only takes space
                shutil.rmtree(run.checkpoints, ignore_errors=True)
            from strop.report import report_after_fit  # report.html; a failure there only warns

            report_after_fit(run.root, task, splits.train, splits.validation, accelerator.unwrap_model(model),
                             cfg.train.quiet, scored, val_features)
            if not cfg.train.quiet:
                note = task.decision_note()
                if note:
                    print(note)
                scores = "  ".join(f"{name} {score_text(final[name])}" for name in task.metric_names)
                print(f"best epoch {state.best_epoch}: {scores}\nrun saved to {run.root}")
        # every process returns a run the main process has written (a script, or the next self-training round,
        # reads it as soon as fit returns)
        accelerator.wait_for_everyone()
    except BaseException as error:
        if saved:  # complete: nothing to resume, nothing to remove
            if isinstance(error, KeyboardInterrupt) and not cfg.train.quiet:
                print(f"interrupted after the run was saved: {run.root} is complete (its model and summary.json); "
                      f"its report, if it is missing, is drawn by: strop report {run.root}", file=sys.stderr)
            raise
        main = lock is not None  # the main process holds the run's lock (`_open_run_dir`), made before its engine
        # A run that never reached its first checkpoint is worth nothing: leave no half-written run.
        if created and main and not _has_checkpoint(run):
            remove_failed_run(run.root, existed)
            if isinstance(error, KeyboardInterrupt) and not cfg.train.quiet and resume_hint:
                print(f"interrupted before the run's first checkpoint: nothing was kept ({run.root} is "
                      f"{'emptied' if existed else 'removed'}); "
                      "run the same command again to start over", file=sys.stderr)
        elif isinstance(error, KeyboardInterrupt) and main and not cfg.train.quiet and resume_hint:
            print(f"interrupted; continue the run with: strop fit {run.config} train.resume=true", file=sys.stderr)
        if main:  # a run removed above leaves the index too
            record_run(run.root, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed", error)
        raise
    finally:
        if lock is not None:
            lock.close()
    return run.root


def _has_checkpoint(run: RunDir) -> bool:
    """Whether the run holds a checkpoint to resume from: the loop's, or one that a method's own stage wrote
    beside it under checkpoints/ (the few-shot contrastive stage's). Staging folders are hidden (".name")."""
    return run.checkpoints.is_dir() and any(not p.name.startswith(".") for p in run.checkpoints.iterdir())


MIN_RANGE_STEPS = 20  # strop lr-find --steps: fewer give a suggestion of noise (5 gave the top of the range)


@keeps_callers_random_state
def lr_find(config: str | Path | dict | Config | None = None, overrides: list[str] = (),
            output: str | Path | None = None, steps: int = 100) -> dict:
    """`strop lr-find`: the learning-rate range test on the run's model and data; writes lr_find.json and
    lr_find.png to `output` (default: lr-find/ in the working folder) and returns the curve and suggestion.
    No run directory is made and nothing is trained for keeps.

    Raises:
        StropError: bad config, data or model (as fit), or a test without a finite loss.
    """
    if steps < MIN_RANGE_STEPS:  # the first tenth is ignored, and a slope needs a few steps before the minimum
        raise StropError(f"--steps {steps}: the range test needs at least {MIN_RANGE_STEPS} steps to find where the "
                         "loss falls fastest (the default is 100)")
    from strop.progress import quiet_progress

    cfg = load_config(config, overrides)
    folder = Path(output) if output is not None else Path("lr-find")
    # checked before the test: a folder it cannot write fails now; train.quiet silences every part, as in a fit
    with output_folder(folder, "--output"), quiet_progress(cfg.train.quiet):
        return _range_test_into(folder, cfg, steps)


def _range_test_into(folder: Path, cfg: Config, steps: int) -> dict:
    import torch

    from strop.train.batch_size import resolve_batch_sizes
    from strop.train.lr_find import range_test, save_curve

    prepared = prepare(cfg)
    cfg, method = prepared.cfg, METHODS.get(prepared.cfg.method.name)(prepared.cfg.method)
    if cfg.method.name == "fewshot":  # (also where method.name=auto chose it)
        # optim.lr is the head stage's rate, whose start is the body after the contrastive stage and a logistic
        # regression on it: a test on the untuned model measured another loss (a rate 10,000 times lower)
        raise StropError("with method.name=fewshot (given, or chosen by auto), optim.lr is the rate of the head "
                         "stage, which starts after the contrastive stage; use strop fit ... optim.lr=find, which "
                         "runs the test there (its curve saved in the run as lr_find.json and .png)")
    if cfg.data.unlabeled is not None and not cfg.train.quiet:
        print(f"data.unlabeled: the test runs on the labelled data, as self-training's round 0 trains; the pool "
              f"({cfg.data.unlabeled}) is not read")
    device = torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    cfg = resolve_batch_sizes(cfg, prepared.model, prepared.task, method, prepared.train_features,
                              prepared.val_features, prepared.collate, device, show=not cfg.train.quiet)
    result = range_test(prepared.model, prepared.task, method, prepared.train_features, prepared.collate, cfg, device,
                        steps=steps, show=not cfg.train.quiet)
    data, plot = save_curve(result, folder)
    if cfg.train.quiet:
        print(f"{result['suggestion']:.2e}")  # the answer alone, for a script: LR=$(strop lr-find CONFIG -q)
    else:
        print(f"suggested learning rate {result['suggestion']:.2e} ({result['why']}); curve in {data}"
              + (f", plot in {plot}" if plot else " (install matplotlib for the plot)")
              + f"\nuse it: strop fit ... optim.lr={result['suggestion']:.2e}")
    return result


def enable_gradient_checkpointing(model: TaskModel) -> None:
    """train.gradient_checkpointing: the backbone recomputes its activations in the backward pass.

    Raises:
        StropError: the backbone cannot (an MLP: it has nothing worth recomputing).
    """
    inner = getattr(model.body, "model", None)
    if inner is None or not getattr(inner, "supports_gradient_checkpointing", False):
        raise StropError("train.gradient_checkpointing=true: this backbone does not support it (it is for "
                         "transformers models); set it to false")
    enable = getattr(inner, "activation_checkpointing_enable", None)  # transformers 5's name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _average_note(cfg: Config, examples: int) -> str:
    """train.ema_decay's note for a run of `examples` training examples (strop.train.average.describe)."""
    from strop.train.average import describe
    from strop.train.optim import optimizer_steps

    batch = cfg.train.batch_size
    return describe(cfg.train.ema_decay, None if batch == "auto" else optimizer_steps(math.ceil(examples / batch), cfg))


def _resolve_precision(cfg: Config, body=None) -> Config:
    """train.mixed_precision made concrete, so config.yaml says what ran and a re-run does the same: an
    interrupted run continues in the precision it started with; a new one asks `resolve_precision`, which
    times a transformer block. `body`: the run's backbone; on a CPU two kinds stay in fp32, where bf16 was
    measured slower: an MLP on vectors, whose matrices are too small for bf16 to pay (digits, 300 rows: 13.3 s of
    training in bf16 against 5.4 s in fp32, the same accuracy), and convolutional image networks, whose
    channels-last convolutions run faster in fp32 (EfficientNet-Lite0, 128 px, batch 32, 2 cores: 62.8
    training images/s in fp32 against 42.7 in bf16; docs/images.md)."""
    import torch

    from strop.train.loop import resolve_precision

    if cfg.train.mixed_precision != "auto":
        return cfg
    precision = None
    saved = RunDir(Path(cfg.output_dir)).config if cfg.output_dir else None
    if cfg.train.resume and saved is not None and saved.is_file():
        precision = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("train", {}).get("mixed_precision")
    if precision not in ("no", "bf16"):
        cuda = cfg.train.device != "cpu" and torch.cuda.is_available()
        fp32_on_cpu = body is not None and (body.kind == "vector" or getattr(body, "convolutional", False))
        precision = "no" if fp32_on_cpu and not cuda else resolve_precision(cfg, torch.device("cuda" if cuda else "cpu"))
    return replace(cfg, train=replace(cfg.train, mixed_precision=precision))


def _fingerprint(examples: Examples) -> str:
    """A hash of the examples as strop read them (inputs and targets, in order)."""
    import hashlib
    import json

    import numpy as np

    def plain(value):
        if isinstance(value, np.ndarray):  # a vector as float32, as strop read them before it kept float64, so
            return value.astype(np.float32).tolist()  # that a run started then resumes now
        return value.tolist() if hasattr(value, "tolist") else str(value)

    return hashlib.sha256(json.dumps([examples.inputs, examples.targets], default=plain).encode()).hexdigest()


def _image_contents(examples: Examples) -> str | None:
    """A hash of the image files' bytes, for examples that are image paths (the fingerprint above hashes their
    paths: a picture replaced under the same name would resume unnoticed); None for other inputs."""
    import hashlib

    from strop.tasks.image_classification import ImageExamples

    if not isinstance(examples, ImageExamples):
        return None
    from strop.data.images import image_key

    return hashlib.sha256("\n".join(image_key(path) for path in examples.inputs).encode()).hexdigest()


def _provenance(cfg: Config, splits: Splits, accelerator) -> dict:
    """What a run was made from besides its config: the data's fingerprints, the device and precision, and
    the versions of the libraries that computed it."""
    contents = {f"{part}_images": _image_contents(examples) for part, examples in
                (("train", splits.train), ("validation", splits.validation))}
    images = {key: value for key, value in contents.items() if value is not None}
    return {"data": {"train": _fingerprint(splits.train), "validation": _fingerprint(splits.validation),
                     "train_examples": len(splits.train), "validation_examples": len(splits.validation), **images},
            "device": str(accelerator.device), "processes": accelerator.num_processes,
            "precision": cfg.train.mixed_precision, "versions": library_versions()}


def _check_same_data(run: RunDir, provenance: dict) -> dict:
    """Refuses to resume a run on other data than it started with (changed texts or labels, a changed split).
    Returns the provenance the run recorded when it started ({} for a run from before it was recorded).

    Raises:
        StropError: the recorded fingerprints differ from the data read now.
    """
    import json

    try:
        saved = json.loads(run.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a run from before provenance was recorded: nothing to compare
    # image contents are compared where the run recorded them (runs from before it did resume as before)
    changed = [part for part in ("train", "validation") if saved["data"][part] != provenance["data"][part]
               or saved["data"].get(f"{part}_images", provenance["data"].get(f"{part}_images"))
               != provenance["data"].get(f"{part}_images")]
    if changed:
        raise StropError(f"cannot resume {run.root}: the {' and '.join(changed)} data differ from those the run "
                         f"started with (another file, or changed texts, images or labels); resume with the same "
                         "data, or "
                         "start a new run in another output_dir")
    return saved


def _check_engine(accelerator) -> None:
    """Refuses the engines that shard the model or optimizer across processes (FSDP, DeepSpeed ZeRO, Megatron):
    strop's checkpoints are written by the main process from its full copy, which those engines do not keep,
    so a run would hang at its first checkpoint or resume wrongly. Data parallel (DDP) keeps full copies."""
    kind = accelerator.distributed_type.value
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise StropError(f"accelerate launch chose {kind}, which strop does not support yet (its checkpoints need "
                         "the full model and optimizer state in the main process); launch with data parallelism "
                         "instead: accelerate launch --multi_gpu --num_processes N -m strop fit ... "
                         "(see docs/distributed.md)")


def _check_rate_finder(cfg: Config, processes: int) -> None:
    """Refuses optim.lr=find in a run of several processes: each would test rates on its own batches of
    train.batch_size, a fraction of the run's global batch, and find a rate for that."""
    if cfg.optim.lr == "find" and processes > 1:
        size = int(cfg.train.batch_size) * processes * cfg.train.grad_accum
        raise StropError(f"optim.lr=find tests rates on one process's batches of train.batch_size="
                         f"{cfg.train.batch_size}, not on this run's global batch of {size} ({processes} processes), "
                         f"so its rate would not suit the run: find it in one process (strop lr-find CONFIG "
                         f"train.batch_size={size}, where that fits in memory) and launch with optim.lr set to its "
                         f"suggestion, or use optim.lr=auto (decided on the run's global step count)")


def _agreed(run: RunDir, cfg: Config, accelerator) -> tuple[RunDir, Config]:
    """In a run of several processes, every process takes the main process's run directory (a default name
    comes from the clock), precision and batch sizes (`auto` decides them by timing, which could differ)."""
    if accelerator.num_processes == 1:
        return run, cfg
    from accelerate.utils import broadcast_object_list

    tc = cfg.train
    output_dir, precision, batch_size, eval_batch_size = broadcast_object_list(
        [cfg.output_dir, tc.mixed_precision, tc.batch_size, tc.eval_batch_size])
    cfg = replace(cfg, output_dir=output_dir, train=replace(tc, mixed_precision=precision, batch_size=batch_size,
                                                            eval_batch_size=eval_batch_size))
    return RunDir(Path(output_dir)), cfg


def _model_info(cfg: Config, source: Source) -> dict:
    """What strop.json records of the run besides the task and backbone: the columns it reads, its origin."""
    d = cfg.data
    return {"text_column": d.text_column, "text_pair_column": d.text_pair_column, "label_column": d.label_column,
            "feature_columns": list(d.feature_columns), "label_separator": d.label_separator,
            "tag_column": d.tag_column, "path_column": d.path_column, "base_model": cfg.model.name,
            "method": cfg.method.name}


def _open_run_dir(cfg: Config, command: str = "fit", option: str = "output_dir"
                  ) -> tuple[RunDir, Config, object | None]:
    """Creates the run directory (or checks the one to resume), takes its lock, and fixes output_dir in the
    config. Returns the run, the config and the lock (None in the processes besides the main one). command: the
    strop command that runs it, as a refusal names its fix; option: how it was given the folder (strop pretrain's
    --output), as the messages name it.

    Raises:
        StropError: output_dir is or lies inside a file, holds another run, is locked by a running fit, or
            holds no run to resume (or a complete one, or one of another config).
    """
    if cfg.output_dir is None:  # refuse_early has refused train.resume=true without a folder
        name, n = default_run_name(), 1
        while Path(name if n == 1 else f"{name}-{n}").exists():
            n += 1
        cfg = replace(cfg, output_dir=name if n == 1 else f"{name}-{n}")
    run = RunDir(Path(cfg.output_dir))
    check_folder_path(run.root, option)
    if os.environ.get("RANK", "0") != "0":
        return run, cfg, None  # the main process checks and locks the run directory
    existed = run.root.exists()
    with reporting_write_errors(run.root, "the run directory"):
        run.root.mkdir(parents=True, exist_ok=True)
    lock = None
    try:
        with reporting_write_errors(run.root, "the run directory"):  # a folder there that cannot be written
            lock = lock_run_dir(run, command, option)
        _refuse_run_dir(run, cfg.train.resume, option)
        if cfg.train.resume:
            saved = yaml.safe_load(run.config.read_text(encoding="utf-8"))
            cfg = _with_saved_choices(cfg, saved)
            _check_same_run(cfg, run, saved, command)
    except BaseException:
        if lock is not None:
            lock.close()
        if not existed:
            shutil.rmtree(run.root, ignore_errors=True)
        raise
    return run, cfg, lock


def given(option: str, value: str) -> str:
    """How a command line gives `option` a value: output_dir=VALUE (an override), --output VALUE (an option)."""
    return f"{option} {value}" if option.startswith("--") else f"{option}={value}"


def refuse_early(cfg: Config, option: str = "output_dir") -> None:
    """The checks of a run's output_dir and device, made before the data and model load (said in a second, not
    after the model loads) and before any run folder exists (fit, pretrain).

    Raises:
        StropError: train.resume=true without a folder; see `_refuse_run_dir` and
            `strop.train.loop.refuse_missing_gpu`.
    """
    from strop.train.loop import refuse_missing_gpu

    if cfg.output_dir is None and cfg.train.resume:
        raise StropError(f"train.resume=true needs {given(option, '<the run directory to continue>')}")
    if cfg.output_dir is not None and os.environ.get("RANK", "0") == "0":
        check_folder_path(Path(cfg.output_dir), option)
        _refuse_run_dir(RunDir(Path(cfg.output_dir)), cfg.train.resume, option)
    refuse_missing_gpu(cfg)


def _refuse_run_dir(run: RunDir, resume: bool, option: str = "output_dir") -> None:
    """Raises StropError where output_dir cannot take this fit: it holds another run's files, or (resume) no run,
    or a complete one. Only reads: `fit` asks it before reading the data and building the model too, so that a
    wrong output_dir is said in a second, not after the model loads."""
    if resume:
        if not run.config.is_file():
            raise StropError(f"{option} {run.root} holds no run to resume; run without train.resume=true")
        if run.is_complete():
            raise StropError(f"the run in {run.root} is already complete; nothing to resume")
    elif run.root.is_dir() and any(p.name != run.lock.name for p in run.root.iterdir()):
        raise StropError(f"{option} {run.root} already holds files: choose another {option}, "
                         "or continue an interrupted run there with train.resume=true")


def lock_run_dir(run: RunDir, command: str = "fit", option: str = "output_dir"):
    """`strop.runs.hold_lock` on the run directory: a second fit with the same output_dir is refused instead of
    writing into the same files.

    Raises:
        StropError: another process holds the lock.
    """
    return hold_lock(run.lock, f"{option} {run.root} is in use by another strop {command} that is still running: "
                               f"wait for it to finish, or choose another {option}")


# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE_KEYS = {("train", "resume"), ("train", "quiet"), ("train", "keep_checkpoint")}


def config_differences(saved: dict, cfg: Config, free: set[tuple[str, str]] = frozenset()) -> list[str]:
    """The keys ("section.key") whose value in `cfg` differs from the `saved` config's, but for those that may
    differ on resuming (and `free`)."""
    return [f"{section}.{key}" for section, values in cfg.to_dict().items() if isinstance(values, dict)
            for key, value in values.items()
            if (section, key) not in _RESUME_FREE_KEYS | free and saved.get(section, {}).get(key) != value]


def _with_saved_choices(cfg: Config, saved: dict) -> Config:
    """The config to resume a run with: where it says `auto` and the run's config.yaml (`saved`) holds what auto
    chose (train.batch_size measured by timing, which could choose otherwise now), the saved choice, so that the
    same command with train.resume=true (self-training's rounds, a script) continues the run as it started."""
    values = cfg.to_dict()
    chosen = {(section, key): saved[section][key] for section, keys in values.items() if isinstance(keys, dict)
              for key, value in keys.items()
              if value == "auto" and saved.get(section, {}).get(key) not in (None, "auto")}
    if not chosen:
        return cfg
    for (section, key), value in chosen.items():
        values[section][key] = value
    return load_config(values)


def _check_same_run(cfg: Config, run: RunDir, saved: dict, command: str = "fit") -> None:
    """Refuses to resume a run with another config than its config.yaml (`saved`); the fix names the command's
    own options (strop pretrain's --data is its data.train)."""
    differences = config_differences(saved, cfg)
    if not differences:
        return
    again = f"strop fit {run.config} train.resume=true"
    if command == "pretrain":
        differences = ["--data" if d == "data.train" else d for d in differences]
        again = f"strop pretrain {run.config} --data {saved['data']['train']} train.resume=true"
    raise StropError(f"cannot resume {run.root}: its config differs in {', '.join(differences)}; "
                     f"resume with the saved config: {again}")


def _announce(cfg: Config, splits: Splits, task: Task, model: TaskModel, notes: list[str], run: RunDir,
              accelerator) -> None:
    if cfg.train.quiet:
        return
    from strop.train.loop import resolve_precision

    trainable, total = count_parameters(model)
    size = f"{total / 1e6:.2f}M" if total >= 10_000 else f"{total:,}"  # a small MLP is not "0.00M"
    labels, outputs = getattr(task, "labels", None), outputs_of(task)
    # quoted where a name holds a comma: 'abbr, short' is one class, not two
    quoted = any("," in str(o) for o in outputs)
    names = [repr(str(o)) if quoted else str(o) for o in outputs[:8]]
    print(f"strop fit -> {run.root}\n"
          f"  task: {task.name}, {len(outputs)} {'classes' if labels is not None else 'outputs'} ({', '.join(names)}"
          f"{', ...' if len(outputs) > 8 else ''})\n"
          f"  data: {len(splits.train)} train / {len(splits.validation)} validation examples\n"
          f"  model: {cfg.model.name} ({size} parameters), method {cfg.method.name}, "
          f"device {accelerator.device}, training precision {resolve_precision(cfg, accelerator.device)}"
          + "".join(f"\n  {note}" for note in notes + task.notes()))

"""`strop fit`: config -> checked data -> model -> training -> a complete run directory."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from strop.backbones.text import load_sequence_classifier, load_tokenizer, quiet_transformers, resolve_model_source
from strop.config import Config, load_config
from strop.data.labelled import LabelledTexts, check_classes, load_labelled_texts, split_stratified
from strop.errors import StropError
from strop.methods import METHODS
from strop.methods.base import count_parameters
from strop.runs import RunDir, atomic_write_json, atomic_write_text, default_run_name, staged
from strop.tasks.text_classification import TextClassification


@dataclass(frozen=True)
class Splits:
    train: LabelledTexts
    validation: LabelledTexts
    labels: list[str]


def load_splits(cfg: Config) -> Splits:
    """Reads and checks the training data, and the validation file or a stratified split of train."""
    d = cfg.data
    if d.train is None:
        raise StropError("data.train is not set: give the training file, e.g. strop fit data.train=reviews.csv")
    train = load_labelled_texts(d.train, d.text_column, d.label_column, "data.train")
    validation = None
    if d.validation is not None:
        validation = load_labelled_texts(d.validation, d.text_column, d.label_column, "data.validation")
    labels = check_classes(train, validation)
    if validation is None:
        train, validation = split_stratified(train, d.validation_fraction, cfg.train.seed)
    if cfg.model.head == "sigmoid" and len(labels) != 2:
        raise StropError(f"model.head=sigmoid needs exactly two classes; the data has {len(labels)}: "
                         "use model.head=softmax")
    return Splits(train, validation, labels)


def fit(config: str | Path | dict | Config | None = None, overrides: list[str] = ()) -> Path:
    """Fine-tunes a model as the config says and returns the run directory.

    Args:
        config: a YAML path, a dict, a Config, or None for the defaults.
        overrides: `key=value` strings applied on top, e.g. ["optim.lr=3e-5"].

    Raises:
        StropError: bad config, data or model name. Nothing is written in that case.
    """
    cfg = load_config(config, overrides)
    # Every check that can fail on the user's input runs before the run directory exists.
    splits = load_splits(cfg)
    task = TextClassification(labels=tuple(splits.labels), head=cfg.model.head, max_length=cfg.model.max_length)
    source = resolve_model_source(cfg.model.name)
    tokenizer = load_tokenizer(source)
    run, cfg = _open_run_dir(cfg)

    from accelerate.utils import set_seed

    from strop.train.loop import make_accelerator, train

    accelerator = make_accelerator(cfg)
    created = not cfg.train.resume
    try:
        set_seed(cfg.train.seed)  # before the head is initialised, so the same seed gives the same run
        model = load_sequence_classifier(source, splits.labels, task.num_logits)
        train_features = task.encode(tokenizer, splits.train.texts, splits.train.labels)
        val_features = task.encode(tokenizer, splits.validation.texts, splits.validation.labels)
        if accelerator.is_main_process:
            atomic_write_text(run.config, cfg.to_yaml(), "the config")
            _announce(cfg, splits, model, run, accelerator)
        started = time.perf_counter()
        state, final = train(model, task, METHODS.get(cfg.method.name)(), train_features, val_features,
                             tokenizer.pad_token_id, cfg, run, accelerator)
        if accelerator.is_main_process:
            save_model(run.model, accelerator.unwrap_model(model), tokenizer, task, cfg)
            best = state.history[state.best_epoch - 1]
            atomic_write_json(run.summary, {
                "best_epoch": state.best_epoch, "epochs_run": state.epoch, "stopped_early": state.stopped_early,
                "metric": cfg.train.metric, "best": best, "validation": final, "steps": state.step,
                "peak_lr": state.peak_lr,
                "train_seconds": round(state.train_seconds, 3),
                "wall_seconds_this_session": round(time.perf_counter() - started, 3),
                "train_examples": len(splits.train), "validation_examples": len(splits.validation),
                "labels": splits.labels,
            }, "the summary")
            if not cfg.train.keep_checkpoint:  # a complete run cannot be resumed: the checkpoint only takes space
                shutil.rmtree(run.checkpoints, ignore_errors=True)
            if not cfg.train.quiet:
                print(f"best epoch {state.best_epoch}: accuracy {final['accuracy']:.4f}  macro_f1 "
                      f"{final['macro_f1']:.4f}  val_loss {final['loss']:.4f}\nrun saved to {run.root}")
    except BaseException:
        # A run that never reached its first checkpoint is worth nothing: leave no half-written run.
        if created and accelerator.is_main_process and not run.last_checkpoint.exists():
            shutil.rmtree(run.root, ignore_errors=True)
        raise
    return run.root


def _open_run_dir(cfg: Config) -> tuple[RunDir, Config]:
    """Creates the run directory (or checks the one to resume) and fixes output_dir in the config."""
    if cfg.output_dir is None:
        if cfg.train.resume:
            raise StropError("train.resume=true needs output_dir=<the run directory to continue>")
        name, n = default_run_name(), 1
        while Path(name if n == 1 else f"{name}-{n}").exists():
            n += 1
        cfg = replace(cfg, output_dir=name if n == 1 else f"{name}-{n}")
    run = RunDir(Path(cfg.output_dir))
    if cfg.train.resume:
        if not run.config.is_file():
            raise StropError(f"output_dir {run.root} holds no run to resume; run without train.resume=true")
        if run.is_complete():
            raise StropError(f"the run in {run.root} is already complete; nothing to resume")
        _check_same_run(cfg, run)
    elif run.root.exists() and any(run.root.iterdir()):
        raise StropError(f"output_dir {run.root} already holds files: choose another output_dir, "
                         "or continue an interrupted run there with train.resume=true")
    run.root.mkdir(parents=True, exist_ok=True)
    return run, cfg


# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE_KEYS = {("train", "resume"), ("train", "quiet"), ("train", "keep_checkpoint")}


def _check_same_run(cfg: Config, run: RunDir) -> None:
    saved = yaml.safe_load(run.config.read_text(encoding="utf-8"))
    current = cfg.to_dict()
    differences = [f"{section}.{key}" for section, values in current.items() if isinstance(values, dict)
                   for key, value in values.items()
                   if (section, key) not in _RESUME_FREE_KEYS and saved.get(section, {}).get(key) != value]
    if differences:
        raise StropError(f"cannot resume {run.root}: its config differs in {', '.join(differences)}; "
                         f"resume with the saved config: strop fit {run.config} train.resume=true")


def save_model(path: Path, model, tokenizer, task: TextClassification, cfg: Config) -> None:
    """Writes a standard Hugging Face model folder plus strop.json (task, labels, head), atomically."""
    with staged(path, "the model") as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        (tmp / "strop.json").write_text(json.dumps({
            "task": "text_classification", "labels": list(task.labels), "head": task.head,
            "max_length": task.max_length, "text_column": cfg.data.text_column,
            "label_column": cfg.data.label_column, "base_model": cfg.model.name, "method": cfg.method.name,
        }, indent=2) + "\n", encoding="utf-8")


def _announce(cfg: Config, splits: Splits, model, run: RunDir, accelerator) -> None:
    if cfg.train.quiet:
        return
    from strop.train.loop import resolve_precision

    trainable, total = count_parameters(model)
    print(f"strop fit -> {run.root}\n"
          f"  data: {len(splits.train)} train / {len(splits.validation)} validation examples, "
          f"{len(splits.labels)} classes\n"
          f"  model: {cfg.model.name} ({total / 1e6:.1f}M parameters), method {cfg.method.name}, "
          f"device {accelerator.device}, training precision {resolve_precision(cfg, accelerator.device)}")

"""The run configuration: nested frozen dataclasses, loaded from YAML and `key=value` overrides.

YAML is the source of truth. Every value is checked when the dataclass is built, and errors name the
key the user typed (e.g. "optim.warmup must be in [0, 1); got 1.5"). The resolved config is written
beside every run, so re-running it reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from strop.errors import StropError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise StropError(message)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value in allowed:
        return
    near = difflib.get_close_matches(str(value).lower(), allowed, n=1)
    raise StropError(f"{key} must be one of {', '.join(allowed)}; got '{value}'"
                     + (f" (did you mean '{near[0]}'?)" if near else ""))


@dataclass(frozen=True)
class TaskConfig:
    """What is learned: the task (its examples, head, loss and metrics)."""

    name: str = "auto"  # auto: token_classification for a CoNLL file, else text_classification
    loss: str = "mse"  # regression: mse, or huber (less pulled by outlying targets)

    def __post_init__(self):
        from strop.tasks import TASKS

        _require(self.name == "auto" or self.name in TASKS, "task.name: " + TASKS.unknown_message(self.name)
                 + ", or auto")
        _choice("task.loss", self.loss, ("mse", "huber"))


@dataclass(frozen=True)
class DataConfig:
    """Where the examples are and which columns hold them."""

    train: str | None = None  # CSV, TSV, JSONL or Parquet file of labelled examples (CoNLL for token tasks)
    validation: str | None = None  # a separate validation file; without it a split of train is used
    text_column: str = "text"
    text_pair_column: str | None = None  # a second text column: the two are encoded as a pair
    label_column: str = "label"  # regression: one or more target columns, separated by commas
    feature_columns: tuple[str, ...] = ()  # vector inputs (model.name=mlp): default every non-label column
    label_separator: str = "|"  # multilabel_classification: separates the labels of one example
    tag_column: int = -1  # CoNLL files: the column of the tag (0 is the token; -1 the last)
    tag_scheme: str = "auto"  # token tags: auto (detected from the training file), iob1, iob2 or bioes
    validation_fraction: float = 0.1  # share of train held out (stratified, seeded) when no validation file
    path_column: str = "path"  # image tables: the image file of each row (relative to the table's folder)
    bad_images: str = "error"  # an unreadable, truncated or non-image file: error (named), or skip (counted, named)
    image_size: int | None = None  # images: input resolution (pixels a side); None: the model's pretrained size
    # images: the resolution of validation and prediction; None: image_size. Larger makes up for the enlargement
    # that random resized crops give the training images (Touvron et al. 2019; timm's test_input_size)
    test_image_size: int | None = None
    crop_pct: float | None = None  # images: validation's and prediction's centre crop, a share of the side; None: the model's
    # images: auto (light where the body trains, none where frozen), none, light, randaugment, trivialaugment;
    # texts: auto (none), none, deletion, swap, deletion_swap, synonym (WordNet: pip install "strop[augment]")
    augment: str = "auto"
    augment_rate: float = 0.1  # texts: the share of words deleted, of swaps per word, of words given a synonym
    mixup: float = 0.0  # vectors and images: mixup's Beta(alpha, alpha) for mixing pairs of training examples; 0 off
    cutmix: float = 0.0  # images: CutMix's alpha (a patch of one image pasted into another); 0 off
    tta: str = "none"  # images: flip averages each image with its mirror wherever the model predicts (validation too)
    # images: processes that decode and augment the images beside training; auto: none on a CPU, some on a GPU
    workers: int | str = "auto"
    unlabeled: str | None = None  # a table (or .txt, one text a line) without labels: self-training pseudo-labels it (classification)
    self_training_rounds: int = 1  # data.unlabeled: rounds of pseudo-labelling, each trained from the pretrained model
    pseudo_label_threshold: float = 0.9  # data.unlabeled: the probability a prediction needs to become a label

    def __post_init__(self):
        _require(0 < self.validation_fraction < 1,
                 f"data.validation_fraction must be in (0, 1); got {self.validation_fraction}")
        _require(bool(self.text_column), "data.text_column must not be empty")
        _require(bool(self.label_column), "data.label_column must not be empty")
        _require(bool(self.label_separator), "data.label_separator must not be empty")
        _choice("data.tag_scheme", self.tag_scheme, ("auto", "iob1", "iob2", "bioes"))
        _require(bool(self.path_column), "data.path_column must not be empty")
        _choice("data.bad_images", self.bad_images, ("error", "skip"))
        _require(self.image_size is None or 16 <= self.image_size <= 4096,
                 f"data.image_size must be in [16, 4096] pixels, or null; got {self.image_size}")
        _require(self.test_image_size is None or 16 <= self.test_image_size <= 4096,
                 f"data.test_image_size must be in [16, 4096] pixels, or null; got {self.test_image_size}")
        _require(self.crop_pct is None or 0.1 <= self.crop_pct <= 1,
                 f"data.crop_pct must be in [0.1, 1] (1: the whole image), or null; got {self.crop_pct}")
        _choice("data.augment", self.augment, ("auto", "none", "light", "randaugment", "trivialaugment", "deletion",
                                               "swap", "deletion_swap", "synonym"))
        _require(0 < self.augment_rate < 1, f"data.augment_rate must be in (0, 1); got {self.augment_rate}")
        _require(0 <= self.mixup <= 10,
                 f"data.mixup must be an alpha in [0, 10] (0 off; 0.2 is usual); got {self.mixup}")
        _require(0 <= self.cutmix <= 10,
                 f"data.cutmix must be an alpha in [0, 10] (0 off; 1.0 is usual); got {self.cutmix}")
        _choice("data.tta", self.tta, ("none", "flip"))
        _require(self.workers == "auto" or (isinstance(self.workers, int) and self.workers >= 0),
                 f"data.workers must be a whole number >= 0 or auto; got {self.workers!r}")
        _require(self.self_training_rounds >= 1,
                 f"data.self_training_rounds must be >= 1; got {self.self_training_rounds}")
        _require(0 < self.pseudo_label_threshold <= 1,
                 f"data.pseudo_label_threshold must be in (0, 1]; got {self.pseudo_label_threshold}")


@dataclass(frozen=True)
class ModelConfig:
    """The pretrained backbone and the task head put on it."""

    name: str = "minilm-l6"  # a bundled alias, a Hugging Face hub id, a local model folder, a run, or mlp
    max_length: int = 128  # longer texts are truncated to this many tokens
    head: str = "softmax"  # softmax: one logit per class; sigmoid: one logit + binary cross-entropy (2 classes)
    pooling: str = "auto"  # text vector for sentence-level heads: auto (as the model was trained), cls, mean, pooler
    hidden: tuple[int, ...] = (64, 64)  # mlp: hidden layer sizes
    activation: str = "relu"  # mlp
    body_dropout: float | None = None  # dropout inside the backbone: None keeps the pretrained model's (mlp: 0.1)
    head_dropout: float = 0.1  # dropout before the head's output layer
    trust_remote_code: bool = False  # run a hub model's own Python code (only for a model you trust)

    def __post_init__(self):
        _require(bool(self.name), "model.name must not be empty")
        _require(8 <= self.max_length <= 8192, f"model.max_length must be in [8, 8192]; got {self.max_length}")
        _choice("model.head", self.head, ("softmax", "sigmoid"))
        _choice("model.pooling", self.pooling, ("auto", "cls", "mean", "pooler"))
        _require(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
                 f"model.hidden must be one or more layer sizes >= 1, e.g. [64, 64]; got {list(self.hidden)}")
        _choice("model.activation", self.activation, ("relu", "gelu", "tanh", "silu"))
        _require(self.body_dropout is None or 0 <= self.body_dropout < 1,
                 f"model.body_dropout must be in [0, 1) or null; got {self.body_dropout}")
        _require(0 <= self.head_dropout < 1, f"model.head_dropout must be in [0, 1); got {self.head_dropout}")


@dataclass(frozen=True)
class MethodConfig:
    """How the backbone is adapted: which parameters train."""

    name: str = "full"  # or auto: few-shot, freeze or full, chosen from the data and hardware (methods/auto.py)
    # full/bitfit: the bottom k layers stay frozen, their output cached (the embeddings are layer 0); auto: the
    # bottom half where a text classifier has few examples, else none (strop.methods.auto.choose_freeze_layers)
    freeze_layers: int | str = "auto"
    # The frozen bottom's outputs computed once (true) or its layers run at every step without gradients (false),
    # so that augmented or mixed inputs reach them; auto: cached unless data.augment, mixup or cutmix is asked for
    cache_bottom: bool | str = "auto"
    unfreeze_every: int = 1  # gradual: one more layer group trains every N epochs, from the top down
    rank: int = 8  # lora: rank of the low-rank update of each target module; houlsby, pfeiffer: bottleneck width
    alpha: float = 16.0  # lora: the update is scaled by alpha / rank
    dropout: float = 0.1  # lora: dropout on the adapter's input
    target_modules: tuple[str, ...] = ()  # lora, ia3: module names (e.g. [query, value]) or [all-linear]; [] the architecture's defaults
    virtual_tokens: int = 20  # prompt_tuning, prefix_tuning: learned tokens (prompt) or key/value positions (prefix)
    pairs_per_example: int = 160  # fewshot: contrastive pairs per labelled example (in groups of batch_size examples)
    pair_epochs: int = 1  # fewshot: epochs of the contrastive stage over its pairs
    pair_lr: float = 5e-5  # fewshot: peak learning rate of the contrastive stage
    pair_loss: str = "cosine"  # fewshot: cosine (similarities regressed on 1 and 0, SetFit's) or cosent (ranking)

    def __post_init__(self):
        from strop.methods import METHODS

        _require(self.name == "auto" or self.name in METHODS,
                 "method.name: " + METHODS.unknown_message(self.name) + ", or auto (chosen from the data)")
        _require(self.freeze_layers == "auto" or (isinstance(self.freeze_layers, int) and self.freeze_layers >= 0),
                 f"method.freeze_layers must be a whole number >= 0 or auto; got {self.freeze_layers!r}")
        _require(self.cache_bottom in (True, False, "auto"),
                 f"method.cache_bottom must be true, false or auto; got {self.cache_bottom!r}")
        _require(self.unfreeze_every >= 1, f"method.unfreeze_every must be >= 1; got {self.unfreeze_every}")
        _require(self.rank >= 1, f"method.rank must be >= 1; got {self.rank}")
        _require(self.alpha > 0, f"method.alpha must be > 0; got {self.alpha}")
        _require(0 <= self.dropout < 1, f"method.dropout must be in [0, 1); got {self.dropout}")
        _require(all(self.target_modules), "method.target_modules must not hold an empty name")
        _require(self.virtual_tokens >= 1, f"method.virtual_tokens must be >= 1; got {self.virtual_tokens}")
        _require(self.pairs_per_example >= 1, f"method.pairs_per_example must be >= 1; got {self.pairs_per_example}")
        _require(self.pair_epochs >= 1, f"method.pair_epochs must be >= 1; got {self.pair_epochs}")
        _require(self.pair_lr > 0, f"method.pair_lr must be > 0; got {self.pair_lr}")
        _require(self.pair_loss in ("cosine", "cosent"),
                 f"method.pair_loss must be cosine or cosent; got {self.pair_loss!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = "adamw"
    lr: float | str = "auto"  # peak rate; auto: 5e-5, higher for runs of few steps (see train.optim); find: range test
    head_lr_scale: float = 20.0  # the new task head's peak rate, as a multiple of lr, where the body trains too
    layer_decay: float = 1.0  # layer-wise rates: each layer below the top trains at this multiple of the one above
    weight_decay: float = 0.01  # not applied to biases and normalisation weights
    l1: float = 0.0  # an L1 penalty on the trained weights (not biases and norms), added to the loss
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd
    warmup: float = 0.1  # below 1: a fraction of all optimizer steps; from 1: a number of steps
    schedule: str = "linear"  # decay after warmup
    final_lr_ratio: float = 0.01  # exponential: the rate at the end as a share of the peak
    step_epochs: int = 3  # step: the rate is multiplied by step_gamma every this many epochs
    step_gamma: float = 0.1
    power: float = 2.0  # polynomial: (1 - progress) ** power
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off

    def __post_init__(self):
        _choice("optim.name", self.name, ("adamw", "adam", "sgd", "rmsprop"))
        _require(self.lr in ("auto", "find") or (isinstance(self.lr, float) and self.lr > 0),
                 f"optim.lr must be a number > 0, auto or find; got {self.lr!r}")
        _require(self.head_lr_scale > 0, f"optim.head_lr_scale must be > 0; got {self.head_lr_scale}")
        _require(0 < self.layer_decay <= 1, f"optim.layer_decay must be in (0, 1]; got {self.layer_decay}")
        _require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0; got {self.weight_decay}")
        _require(self.l1 >= 0, f"optim.l1 must be >= 0; got {self.l1}")
        _require(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1); got {self.momentum}")
        _require(self.warmup >= 0 and (self.warmup < 1 or float(self.warmup).is_integer()),
                 f"optim.warmup must be a fraction in [0, 1) or a whole number of steps; got {self.warmup}")
        _choice("optim.schedule", self.schedule, ("linear", "cosine", "constant", "exponential", "step", "polynomial"))
        _require(0 < self.final_lr_ratio <= 1, f"optim.final_lr_ratio must be in (0, 1]; got {self.final_lr_ratio}")
        _require(self.step_epochs >= 1, f"optim.step_epochs must be >= 1; got {self.step_epochs}")
        _require(0 < self.step_gamma <= 1, f"optim.step_gamma must be in (0, 1]; got {self.step_gamma}")
        _require(self.power > 0, f"optim.power must be > 0; got {self.power}")
        _require(self.max_grad_norm >= 0, f"optim.max_grad_norm must be >= 0; got {self.max_grad_norm}")


MAX_SEED = 2**32 - 2  # numpy's and scikit-learn's seeds stop at 2**32 - 1; a few-shot run also uses its seed + 1


def check_seeds(key: str, first: int, count: int = 1) -> None:
    """Raises StropError unless the seeds first, first + 1, ... (count of them) are whole numbers numpy takes."""
    several = f" (with {count} seeds from it)" if count > 1 else ""
    _require(isinstance(first, int) and not isinstance(first, bool) and 0 <= first and first + count - 1 <= MAX_SEED,
             f"{key} must be a whole number from 0 to {MAX_SEED - count + 1}{several}; got {first!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: length, batches, evaluation, early stopping, precision, seed."""

    epochs: int = 10  # at most: early stopping (train.patience) usually ends small-data runs sooner
    batch_size: int | str = 16  # per process; auto: measured at the start (the fastest on a CPU, the largest on a GPU)
    eval_batch_size: int | str = 64  # auto: as batch_size, for validation and prediction
    grad_accum: int = 1  # optimizer step every N batches (effective batch = batch_size * N * processes)
    seed: int = 42
    metric: str = "auto"  # validation metric that picks the best epoch and drives early stopping; auto: the task's
    patience: int = 2  # epochs without improvement before stopping; 0 turns early stopping off
    group_by_length: bool = True  # batches of similar length: far less padding, same randomness of order
    mixed_precision: str = "auto"  # training steps in bf16 or fp32 ("no"); auto: bf16 where it is faster
    device: str = "auto"  # auto, cpu or cuda
    resume: bool = False  # continue the run in output_dir from its last checkpoint
    keep_checkpoint: bool = True  # false: delete checkpoints/ once the run is complete (it only serves resume)
    quiet: bool = False  # no progress bar or epoch lines
    label_smoothing: float = 0.0  # classification: share of each target spread over the other classes
    ema_decay: float = 0.0  # 0: off; e.g. 0.998: validate, keep and save a moving average of the weights (~1/(1-d) steps)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower
    imbalance: str = "none"  # classification: auto, weights (class-weighted loss), sample (balanced batches), focal
    focal_gamma: float = 2.0  # focal loss: how much the well-classified examples are down-weighted
    nonfinite: str = "stop"  # a NaN or infinite loss: stop the run (its last checkpoint kept), or skip the batch
    trackers: tuple[str, ...] = ()  # also log each epoch's metrics to tensorboard and/or mlflow (Accelerate's trackers)

    def __post_init__(self):
        _require(self.epochs >= 1, f"train.epochs must be >= 1; got {self.epochs}")
        check_seeds("train.seed", self.seed)
        for key in ("batch_size", "eval_batch_size"):
            value = getattr(self, key)
            _require(value == "auto" or (isinstance(value, int) and value >= 1),
                     f"train.{key} must be a whole number >= 1 or auto; got {value!r}")
        _require(self.grad_accum >= 1, f"train.grad_accum must be >= 1; got {self.grad_accum}")
        from strop.tasks import TASKS

        known = sorted({m for name in TASKS.names() for m in TASKS.get(name).metric_names})
        _choice("train.metric", self.metric, ("auto", *known))
        _require(self.patience >= 0, f"train.patience must be >= 0; got {self.patience}")
        _choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "bf16"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _choice("train.nonfinite", self.nonfinite, ("stop", "skip"))
        _require(0 <= self.label_smoothing < 1, f"train.label_smoothing must be in [0, 1); got {self.label_smoothing}")
        _require(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1) (0: no average; 0.99 to 0.9999 "
                                          f"average over about 100 to 10,000 steps); got {self.ema_decay}")
        _choice("train.imbalance", self.imbalance, ("auto", "weights", "sample", "focal", "none"))
        _require(self.focal_gamma >= 0, f"train.focal_gamma must be >= 0; got {self.focal_gamma}")
        for tracker in self.trackers:
            _choice("train.trackers", tracker, ("tensorboard", "mlflow"))
            from strop.trackers import check_installed

            check_installed(tracker)


@dataclass(frozen=True)
class Config:
    """A whole run. `output_dir` is the run directory; by default runs/<UTC date and time>."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _lists(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The config as a run's config.yaml records it: train.resume and train.quiet are false there, as they say
        how one command ran (continuing the run; --quiet), not what the run is; `strop fit runs/X/config.yaml
        output_dir=...` then trains it again, showing its progress, and `... train.resume=true` continues it."""
        recorded = dataclasses.replace(self, train=dataclasses.replace(self.train, resume=False, quiet=False))
        return yaml.safe_dump(recorded.to_dict(), sort_keys=False)


def _lists(value: Any) -> Any:
    """Tuples (list-valued keys) as lists, which YAML writes plainly."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def load_config(source: str | Path | dict | Config | None = None, overrides: list[str] = ()) -> Config:
    """Builds a Config from a YAML file, a dict or a Config, then applies `key=value` overrides.

    Args:
        source: path to a YAML file, a nested dict, a Config, or None for the defaults.
        overrides: dotted keys with values, e.g. ["optim.lr=3e-5", "train.epochs=3"].

    Raises:
        StropError: unreadable YAML, unknown keys, values of the wrong type or outside their range.
    """
    if isinstance(source, Config):
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = source
    elif source is None:
        raw = {}
    else:
        raw = _read_yaml(Path(source))
    raw = _apply_overrides(raw, overrides)
    if isinstance(raw, dict) and "search" in raw:  # `strop search`'s space (strop.search): checked, not run
        from strop.search import parse_space

        parse_space(raw["search"])
        raw = {key: value for key, value in raw.items() if key != "search"}
    return _build(Config, raw, prefix="")


class RefusedYaml(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently) and
    aliases (`*name`): a config has no use for them, and aliases of aliases make a file of a few lines expand
    to billions of values (configs travel with shared runs)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYaml(f"line {event.start_mark.line + 1}: the alias *{event.anchor} is not read in a config; "
                              "write the value out where it is used")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise RefusedYaml(f"line {key_node.start_mark.line + 1}: a key must be a name, not {key!r}") from None
            if key in seen:
                raise RefusedYaml(f"'{key}' is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}): "
                                  "merge the two into one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's booleans, true and false alone: YAML 1.1 also reads yes, no, on, off, y and n unquoted as booleans,
# so `mixed_precision: no` became False and `text_column: yes` the column 'True'. The words stay words here, and
# a true-or-false setting reads them as such (`_convert`).
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))


def quiet_in(overrides: list[str]) -> bool:
    """train.quiet as `overrides` set it (false where they do not), read as the config reads it (true, yes, 1):
    for a command that speaks before it loads the config the overrides go to."""
    return load_config(None, [o for o in overrides if o.split("=", 1)[0].strip() == "train.quiet"]).train.quiet


def _key_hint(path: Path) -> str:
    """`; 'data.train' is a config key ...` where the missing config file is named like section.key: an override
    written with a space instead of = (strop fit data.train reviews.csv)."""
    section, dot, key = str(path).partition(".")
    if not dot or section not in _sections() or not key.isidentifier():
        return ""
    return f" ('{path}' is a config key: give it as {path}=VALUE, with no spaces around =)"


def _data_file_hint(path: Path) -> str:
    """`; a data file is given as data.train=...` where the file given as the config is named like data."""
    data = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ".conll", ".gz", ".bz2", ".xz")
    return f" (a data file is given as data.train={path})" if path.suffix.lower() in data else ""


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise StropError(f"config file {path} is a folder: give a YAML config file (a run's own is "
                         f"{path / 'config.yaml'})")
    if not path.is_file():
        raise StropError(f"config file not found: {path}{_key_hint(path)}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except RefusedYaml as error:
        raise StropError(f"config file {path}: {error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        said = str(error).replace('"<unicode string>"', f'"{path.name}"')  # the file, not the string it was read to
        raise StropError(f"config file {path} is not valid YAML{_data_file_hint(path)}: {said}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise StropError(f"config file {path} must hold a mapping of sections (data, model, ...); got "
                         f"{type(raw).__name__}{_data_file_hint(path)}")
    return raw


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = _deep_copy(raw)
    for before, item in zip([None, *overrides], overrides):
        key, sep, value = item.partition("=")
        if not sep or not key:
            first = (" (a config file comes first: strop fit CONFIG.yaml key=value ...)"
                     if item.lower().endswith((".yaml", ".yml")) else "")
            if before is not None and before.endswith("=") and not first:  # data.train= reviews.csv
                first = f" (with no space after =: {before}{item})"
            raise StropError(f"override '{item}' must look like key=value, e.g. optim.lr=3e-5{first}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # a section left empty in the file (`train:` with its keys commented out)
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                if node is raw and part in _sections():  # the file's fault
                    raise StropError(f"{part} in the config must be a mapping of keys, e.g. {part}: {{key: value}}; "
                                     f"got {child!r}")
                raise StropError(f"override '{item}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value  # a string; converted to the field's type in _build
    return raw


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def _build(cls: type, raw: Any, prefix: str):
    section = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise StropError(f"{section} must be a mapping of keys; got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            head, _, rest = str(key).partition(".")
            if rest and head in known and dataclasses.is_dataclass(hints[head]):
                # a dotted key, as overrides write them, in a mapping (a YAML file, a dict given to strop.fit)
                raise StropError(f"key '{prefix}{key}': a dotted key is an override (strop fit ... "
                                 f"{prefix}{key}=VALUE); in a mapping, nest it: {head}: {{{rest}: VALUE}}")
            hint = difflib.get_close_matches(str(key), known, n=1)
            elsewhere = _sections_holding(str(key))  # epochs=3 for train.epochs=3; train.lr for optim.lr
            suggestion = (f" (did you mean '{prefix}{hint[0]}'?)" if hint else
                          f" (did you mean {' or '.join(repr(k) for k in elsewhere)}?)" if elsewhere else "")
            raise StropError(f"unknown key '{prefix}{key}'{suggestion}; known keys in {section}: {', '.join(known)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value if value is not None else {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _convert(f"{prefix}{key}", value, kind)
    return cls(**kwargs)


def _sections() -> dict[str, type]:
    """The config's sections (task, data, ...: its keys that hold keys) and their classes."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])}


def _sections_holding(key: str) -> list[str]:
    """section.key for each section of the config that has a key of this name."""
    return [f"{name}.{key}" for name, kind in _sections().items() if key in {f.name for f in dataclasses.fields(kind)}]


def _convert(key: str, value: Any, kind: Any) -> Any:
    """Converts a YAML or command-line value to the field's declared type, or says why it can't."""
    if typing.get_origin(kind) is tuple:  # a list: YAML [a, b], or on the command line [a, b] or a,b
        item = typing.get_args(kind)[0]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise StropError(f"{key} must be a list like [a, b]; got {value!r}") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if value is None:
            value = []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(key, v, item) for v in value)
    if typing.get_origin(kind) in (Union, types.UnionType):
        choices = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(choices) < len(typing.get_args(kind)) and (
                value is None or (isinstance(value, str) and value.lower() in ("null", "none", ""))):
            return None
        if len(choices) > 1 and isinstance(value, (list, dict)):  # not "must be a string": a word is half of it
            words = {bool: "true or false", int: "a whole number", float: "a number", str: "a word"}
            raise StropError(f"{key} takes one value ({', or '.join(words[c] for c in choices)}), not a "
                             f"{'list' if isinstance(value, list) else 'mapping'}; got {value!r}")
        if len(choices) > 1 and choices[0] is bool:  # `bool | str`: true or false where the value says so, else a word
            is_bool = isinstance(value, bool) or str(value).lower() in TRUE_WORDS + FALSE_WORDS
            return _convert(key, value, bool if is_bool else choices[-1])
        if len(choices) > 1:  # `float | str`: a number where the value is one, else a word (the field checks it)
            return _convert(key, value, choices[0]) if _is_number(value) else _convert(key, value, choices[-1])
        kind = choices[0]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in TRUE_WORDS + FALSE_WORDS:  # a word, or YAML's 1 and 0
                return str(value).lower() in TRUE_WORDS
            raise ValueError
        if kind is int:
            if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(\.0*)?([eE]\+?\d+)?\s*", value):
                value = float(value) if not re.fullmatch(r"\s*[+-]?\d+\s*", value) else value  # 16.0, 1e3
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError  # inf and nan are no settings: a NaN loss follows
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)) or value is None:
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unsupported config type {kind} for {key}")
    raise StropError(f"{key} must be {_type_name(kind)}; got {value!r}")


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _type_name(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[kind]

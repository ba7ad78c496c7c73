"""A task model (a backbone and a task head), where it comes from, and its model folder.

The model folder (a run's `model/`) holds `model.safetensors`, `strop.json` (the task, its labels or
statistics, the backbone and its pooling, the columns) and, for text backbones, the transformers config
and tokenizer files. Text weights are named as transformers names them inside its task models (`bert.*`
for the body), so `AutoModel.from_pretrained(model/)` loads the body in plain transformers; where strop's
head computes what a transformers head computes (BERT's pooler + linear classifier, or a linear layer on
token states) the head is named like it (`classifier.*`) and config.json names that class, so the whole
model loads in plain transformers with the same predictions. Other heads are stored as `strop_head.*`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from strop.backbones.base import BACKBONES, Backbone
from strop.errors import StropError
from strop.runs import to_json
from strop.tasks import TASKS, Task

WEIGHTS = "model.safetensors"
INFO = "strop.json"


class TaskModel(nn.Module):
    """body: a Backbone; head: the task's head on what the body gives at the task's level.

    new_parameters: the ids of parameters that start from random values (a new head; the whole body of a
    fresh MLP). Where the body trains too, they train at a higher rate (optim.head_lr_scale).
    """

    def __init__(self, body: Backbone, head: nn.Module, level: str, new_parameters: set[int] | None = None):
        super().__init__()
        self.body, self.head, self.level = body, head, level
        self.new_parameters = new_parameters if new_parameters is not None else set()

    def head_inputs(self, **inputs: torch.Tensor) -> torch.Tensor:
        """What the head reads: (batch, hidden) per example, or (batch, seq, hidden) per token."""
        return self.body(self.level, **inputs)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_inputs(**inputs))  # logits


@dataclass(frozen=True)
class Source:
    """Where a run's model starts. kind: "mlp" (new network), "run" (a previous run's model folder),
    or "text" (a transformers model: folder, hub id or bundled alias)."""

    kind: str
    location: str | None = None  # the folder or hub id
    info: dict | None = None  # the previous run's strop.json

    @property
    def input_kind(self) -> str:
        """The inputs the backbone reads: "text" or "vector"."""
        if self.kind == "run":
            return BACKBONES.get(self.info.get("backbone", "text")).kind
        return {"mlp": "vector", "image": "image"}.get(self.kind, "text")


def model_folder(path: Path) -> Path | None:
    """The strop model folder at `path`: the folder itself, a run directory's model/, or a self-training
    folder's last round's model (the self-training's model); None if none."""
    for folder in (path, path / "model"):
        if (folder / INFO).is_file():
            return folder
    from strop.selftrain import last_round

    last = last_round(path)
    return None if last is None else model_folder(last)


def resolve_source(name: str, input_kinds: tuple[str, ...] = ("text", "vector")) -> Source:
    """model.name -> where the model starts, for a task that reads `input_kinds`.

    Raises:
        StropError: the name is no bundled alias, folder, run, reachable hub id or `mlp`.
    """
    if name == "mlp":
        return Source("mlp")
    folder = model_folder(Path(name).expanduser())
    if folder is not None:
        return Source("run", str(folder), read_info(folder))
    if "image" in input_kinds:  # an image task: a timm model name or folder, or a bundled image model
        from strop.backbones.image import resolve_image_source

        return Source("image", resolve_image_source(name))
    from strop.backbones.text import resolve_model_source

    return Source("text", resolve_model_source(name))


def read_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StropError(f"{folder / INFO} cannot be read ({error}): the model folder is damaged") from None
    if not isinstance(info, dict):
        raise StropError(f"{folder / INFO} holds a {type(info).__name__}, not a model's description: the model "
                         "folder is damaged")
    return info


def build_model(source: Source, task: Task, cfg, train_inputs: list) -> tuple[TaskModel, Task, list[str]]:
    """A model for `task` from `source`, and the task it predicts for (a previous run's, with its label map
    or statistics, where its head is reused), and lines that say what was built.

    Raises:
        StropError: the backbone cannot be loaded, or cannot read the task's inputs.
    """
    notes = []
    if source.kind == "mlp":
        from strop.backbones.vector import MLPBackbone

        m = cfg.model
        body = MLPBackbone.for_data(train_inputs, m.hidden, m.activation,
                                    0.1 if m.body_dropout is None else m.body_dropout)
        head = task.build_head(body.hidden_size, dropout=m.head_dropout)
        model = TaskModel(body, head, task.level, {id(p) for p in body.parameters()} | {id(p) for p in head.parameters()})
        return model, task, [f"a new MLP {list(m.hidden)}, {m.activation}"]
    if source.kind == "text":
        from strop.backbones.text import TextBackbone

        body, why = TextBackbone.from_pretrained(source.location, cfg.model.pooling, cfg.model.max_length,
                                                 cfg.model.trust_remote_code)
        if task.level == "sequence":
            notes.append(f"pooling {body.pooling}: {why}")
        notes += _length_note(body, cfg)
        set_dropout(body, cfg.model.body_dropout)
        return with_new_head(body, task, cfg.model.head_dropout), task, notes
    if source.kind == "image":
        from strop.backbones.image import ImageBackbone

        body, notes = ImageBackbone.from_pretrained(source.location)
        notes += body.configure(cfg)  # data.image_size, data.augment
        set_dropout(body, cfg.model.body_dropout)
        return with_new_head(body, task, cfg.model.head_dropout), task, notes
    return _from_run(source, task, cfg, notes)


def _length_note(body, cfg) -> list[str]:
    """Said where model.max_length asks for more tokens than the encoder has positions for (it reads fewer)."""
    if body.max_length >= cfg.model.max_length:
        return []
    return [f"model.max_length={cfg.model.max_length} is more than {cfg.model.name} reads: texts are cut to "
            f"{body.max_length} tokens"]


def outputs_of(task) -> list:
    """A task's outputs as a person reads them: a classifier's labels (not the head kind its output_space()
    also holds, for comparing), or the targets."""
    labels = getattr(task, "labels", None)
    return list(labels if labels is not None else task.output_space())


def set_dropout(body: Backbone, p: float | None) -> None:
    """model.body_dropout: every dropout layer of the backbone at rate p (None: as pretrained)."""
    if p is None:
        return
    for module in body.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def with_new_head(body: Backbone, task: Task, dropout: float = 0.1) -> TaskModel:
    pre = body.take_pooler() if task.level == "sequence" and getattr(body, "pooling", None) == "pooler" else None
    head = task.build_head(body.hidden_size, pre, dropout)
    new = {id(p) for p in head.parameters()} - ({id(p) for p in pre.parameters()} if pre is not None else set())
    return TaskModel(body, head, task.level, new)


def _from_run(source: Source, task: Task, cfg, notes: list[str]) -> tuple[TaskModel, Task, list[str]]:
    """A new run from a previous run's weights: its body always, its head (and what its outputs mean: the label
    map, a regression's target scale) where the task and the outputs are the same; the training settings are
    this run's."""
    folder, info = Path(source.location), source.info
    if "adapter" in info:
        raise StropError(f"model.name={folder}: that run saved an adapter (method {info.get('method')}), not a whole "
                         f"model; merge it first (strop export {folder} --format merged --output DIR) and start "
                         "from DIR")
    if info.get("method") in ("houlsby", "pfeiffer"):
        raise StropError(f"model.name={folder}: that run's body carries bottleneck adapters ({info['method']}), "
                         "which a new run cannot start from; start from its base model "
                         f"(model.name={info.get('base_model')})")
    previous = TASKS.get(info["task"]).from_info(info)
    reuse = previous.name == task.name and previous.output_space() == task.output_space()
    if reuse:
        task = task.reusing(previous)
        notes.append(f"starting from {folder}: its body and its head (same task and outputs)")
    else:
        why = "the task differs" if previous.name != task.name else "the labels or targets differ"
        notes.append(f"starting from {folder}: its body, with a new head ({why}: {previous.name} "
                     f"{outputs_of(previous)[:6]} -> {task.name} {outputs_of(task)[:6]})")
    kind = info.get("backbone", "text")
    if kind == "text":
        from strop.backbones.text import TextBackbone

        pooling = info.get("pooling", "pooler") if cfg.model.pooling == "auto" else cfg.model.pooling
        body, _ = TextBackbone.from_pretrained(str(folder), pooling, cfg.model.max_length, every_weight=True)
        notes += _length_note(body, cfg)
        set_dropout(body, cfg.model.body_dropout)
        model = with_new_head(body, task, cfg.model.head_dropout)
        if reuse:
            load_weights(model, folder, part="head")
    else:
        saved_columns, columns = info.get("feature_columns") or [], list(cfg.data.feature_columns)
        if kind == "mlp" and saved_columns and columns != saved_columns:
            raise StropError(f"model.name={folder}: its MLP reads the columns {saved_columns}, and data.train has "
                             f"{columns}; give the same feature columns (data.feature_columns=[...])")
        body = BACKBONES.get(kind).from_saved(folder, info)
        set_dropout(body, cfg.model.body_dropout)
        model = with_new_head(body, task, cfg.model.head_dropout)
        load_weights(model, folder, part="body" if not reuse else None)
        if kind == "image":
            notes += body.configure(cfg)  # data.image_size, data.augment
        else:
            notes.append(f"the MLP {list(body.hidden)}, {body.activation}, of {folder} (model.hidden, "
                         "model.activation and the input standardisation come from it)")
    if reuse:
        model.new_parameters = set()
    return model, task, notes


# --- the model folder ---------------------------------------------------------------------------------

def _saved_names(model: TaskModel, plain: bool) -> dict[str, str]:
    """Internal state-dict key -> the key in model.safetensors (see the module docstring)."""
    own = getattr(model.body, "saved_name", None)  # a backbone that names its weights as its library does (timm)
    if own is not None:
        return {key: own(key) for key in model.state_dict()}
    names = {}
    prefix = getattr(model.body, "prefix", None)
    for key in model.state_dict():
        if prefix is not None and key.startswith("body.model."):
            names[key] = f"{prefix}.{key[len('body.model.'):]}"
        elif prefix is not None and key.startswith("head.pre."):
            names[key] = f"{prefix}.pooler.{key[len('head.pre.'):]}"
        elif prefix is not None and plain and key.startswith("head.output."):
            names[key] = f"classifier.{key[len('head.output.'):]}"
        elif prefix is not None and key.startswith("head."):
            names[key] = f"strop_head.{key[len('head.'):]}"
        else:
            names[key] = key
    return names


def plain_class(model: TaskModel, task: Task) -> str | None:
    """The transformers class (e.g. BertForSequenceClassification) that computes exactly what `model` does,
    or None. It must be the task's kind of head, read the pooler (sequence level) or the token states, and
    hold exactly the same weights (checked on a weightless copy built from the config)."""
    auto_name = task.plain_head()
    if auto_name is None or not hasattr(model.body, "prefix"):
        return None
    if task.level == "sequence" and model.body.pooling != "pooler":
        return None
    import transformers

    config = copy.deepcopy(model.body.model.config)
    config.num_labels = task.num_outputs
    try:
        with torch.device("meta"):  # shapes only, no memory
            plain = getattr(transformers, auto_name).from_config(config)
    except (ValueError, KeyError, TypeError):
        return None
    ours = {name: tuple(t.shape) for name, t in named_state(model, plain=True).items()}
    theirs = {name: tuple(t.shape) for name, t in plain.state_dict().items()}
    return type(plain).__name__ if ours == theirs else None


def named_state(model: TaskModel, plain: bool) -> dict[str, torch.Tensor]:
    names = _saved_names(model, plain)
    return {names[k]: v for k, v in model.state_dict().items()}


def save_model(path: Path, model: TaskModel, task: Task, info: dict[str, Any]) -> None:
    """Writes the model folder atomically: weights, strop.json (task, backbone, `info`) and, for text
    backbones, config.json and the tokenizer files."""
    from safetensors.torch import save_file

    from strop.adapters import is_adapted, save_adapter_model
    from strop.runs import staged

    if is_adapted(model):  # lora, ia3, prompt/prefix tuning: the adapter alone, in peft's layout, and the head
        return save_adapter_model(path, model, task, info)
    architecture = plain_class(model, task)
    with staged(path, "the model") as tmp:
        described = model.body.save(tmp)
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in named_state(model, architecture is not None).items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        describe = getattr(model.body, "describe_task", None)  # a library's own config of the whole model (timm)
        if describe is not None:
            describe(tmp, task)
        elif (tmp / "config.json").is_file():
            _describe_for_transformers(tmp / "config.json", model, task, architecture)
        # The body describes itself last: a caller's info copied from another folder (prune, distil, export)
        # must not restore a shape the body no longer has (heads or channels removed)
        full = {"task": task.name, **task.info(), **info, **described, "transformers_class": architecture}
        (tmp / INFO).write_text(to_json(full, indent=2) + "\n", encoding="utf-8")


def _describe_for_transformers(config_file: Path, model: TaskModel, task: Task, architecture: str | None) -> None:
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if architecture is None:
        config["architectures"] = [type(model.body.model).__name__]
        for key in ("id2label", "label2id", "problem_type"):
            config.pop(key, None)
    else:
        names = list(task.info().get("labels", []))
        if task.num_outputs != len(names):  # a single sigmoid logit: it scores the second class
            names = names[1:2]
        config["architectures"] = [architecture]
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
        if task.name == "multilabel_classification":
            config["problem_type"] = "multi_label_classification"
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_model(folder: Path) -> tuple[TaskModel, Task, dict[str, Any]]:
    """The task model, its task and its strop.json, from a model folder.

    Raises:
        StropError: the folder's files are missing, damaged or do not fit together.
    """
    info = read_info(folder)
    if "adapter" in info:  # an adapter on a base model (strop.adapters)
        from strop.adapters import load_adapter_model

        return load_adapter_model(folder, info)
    from strop.methods.bottleneck import restore

    try:
        task = TASKS.get(info["task"]).from_info(info)
        body = BACKBONES.get(info.get("backbone", "text")).from_saved(folder, {"pooling": "pooler", **info})
        model = with_new_head(body, task)
        restore(model, folder, info)  # method houlsby/pfeiffer: the adapters' modules, before their weights
    except (KeyError, OSError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as error:
        # a strop.json edited by hand or written by another program: its fields' values do not fit
        raise StropError(f"{folder} holds a model strop cannot rebuild ({type(error).__name__}: {error}); "
                         "is it a complete model folder of strop fit?") from None
    load_weights(model, folder)
    model.new_parameters = set()
    return model, task, info


def load_weights(model: TaskModel, folder: Path, part: str | None = None) -> None:
    """Loads model.safetensors into `model` (only its "body" or "head" where `part` says).

    Raises:
        StropError: the file is missing, damaged, or holds other tensors than the model has.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = load_file(folder / WEIGHTS)
    except (OSError, SafetensorError) as error:
        raise StropError(f"{folder / WEIGHTS} cannot be read ({error}): the model folder is damaged or "
                         "incomplete; train it again") from None
    for plain in (True, False):  # the head is named as transformers does, or strop's own way
        names = _saved_names(model, plain)
        wanted = {k: n for k, n in names.items() if part is None or k.startswith(f"{part}.")}
        if all(n in saved for n in wanted.values()):
            break
    else:
        missing = next(n for n in wanted.values() if n not in saved)
        raise StropError(f"{folder / WEIGHTS} does not fit the model described by its strop.json (no tensor "
                         f"'{missing}'): the folder is damaged or was written by another program")
    state = {k: saved[n] for k, n in wanted.items()}
    try:
        model.load_state_dict(state, strict=part is None)
    except RuntimeError as error:
        raise StropError(f"{folder / WEIGHTS} does not fit the model described by its strop.json: "
                         f"{str(error).splitlines()[0]}") from None

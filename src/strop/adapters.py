"""The model folder of a run whose body was adapted with peft (method.name=lora, ia3, prompt_tuning,
prefix_tuning; lora on timm image models too), and its merged form.

The folder holds the adapter alone, not the base model's weights:

    model/
      adapter_config.json, adapter_model.safetensors   peft's own layout: PeftModel.from_pretrained(base, model/)
      head.safetensors                                 strop's task head (the pooler too, where it pools with it)
      strop.json                                       task, labels, pooling, and "adapter": the base it needs
      tokenizer files                                  (text; an image model's preprocessing is in strop.json)

Loading it needs the base model it was trained on: a bundled alias is found again by its name, any other
base by the folder or hub id recorded in strop.json (and in adapter_config.json, as peft records it).
`merge` folds LoRA and IA3 into the base weights, giving an ordinary model (`strop export --format merged`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from strop.errors import StropError
from strop.methods.peft import adapter_of, quiet_peft
from strop.model import INFO, TaskModel, with_new_head
from strop.runs import to_json
from strop.tasks import TASKS, Task

HEAD = "head.safetensors"


def is_adapted(model: TaskModel) -> bool:
    return adapter_of(model.body) is not None


def save_adapter_model(path: Path, model: TaskModel, task: Task, info: dict[str, Any]) -> None:
    """Writes the model folder of an adapted model atomically (see the module docstring)."""
    from safetensors.torch import save_file

    from strop.backbones.text import quiet_transformers
    from strop.runs import staged

    peft_model = adapter_of(model.body)
    config = peft_model.peft_config["default"]
    with staged(path, "the model") as tmp:
        with quiet_transformers():
            peft_model.save_pretrained(tmp)
        described = model.body.save(tmp)  # tokenizer and pooling; the base's own config.json stays with the base
        for extra in ("config.json", "README.md"):  # peft's empty model card
            (tmp / extra).unlink(missing_ok=True)
        head = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, tmp / HEAD, metadata={"format": "pt"})
        adapter = {"peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
                   "base": _absolute(config.base_model_name_or_path)}
        full = {"task": task.name, **task.info(), **described, **info, "transformers_class": None, "adapter": adapter}
        (tmp / INFO).write_text(to_json(full, indent=2) + "\n", encoding="utf-8")


def _absolute(location: str | None) -> str | None:
    """A local folder as an absolute path (the run may be loaded from another working folder); a hub id as is."""
    if location is not None and Path(location).expanduser().is_dir():
        return str(Path(location).expanduser().resolve())
    return location


def base_location(folder: Path, info: dict) -> str:
    """Where the base model of an adapter folder is now.

    Raises:
        StropError: the recorded base is neither a bundled alias nor a folder or hub id found now.
    """
    if info.get("backbone") == "image":  # a timm model: a bundled alias, a timm folder or a timm name
        from strop.backbones.image import IMAGE_BUNDLED as bundled
        from strop.backbones.image import resolve_image_source as resolve
    else:
        from strop.backbones.bundled import BUNDLED as bundled
        from strop.backbones.text import resolve_model_source as resolve

    name, recorded = info.get("base_model"), info["adapter"].get("base")
    if name in bundled:
        return resolve(name)
    for candidate in (recorded, name):
        if candidate is None:
            continue
        try:
            return resolve(candidate)
        except StropError:
            continue
    raise StropError(f"{folder} holds an adapter (method {info.get('method')}) trained on the base model "
                     f"'{recorded or name}', which is not found: put that model back there, or use a merged export "
                     "of the run (strop export RUN --format merged --output DIR) made where the base exists")


def load_adapter_model(folder: Path, info: dict) -> tuple[TaskModel, Task, dict[str, Any]]:
    """The task model of an adapter folder: its base, the adapter on it (unmerged) and the trained head.

    Raises:
        StropError: the base model is not found, or the folder's files are missing or damaged.
    """
    from peft import PeftModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from strop.backbones.text import TextBackbone, quiet_transformers

    try:
        task = TASKS.get(info["task"]).from_info(info)
    except (KeyError, ValueError) as error:
        raise StropError(f"{folder / INFO} does not describe a task strop can rebuild ({error}): the folder is "
                         "damaged") from None
    quiet_peft()
    if info.get("backbone") == "image":
        from strop.backbones.image import ImageBackbone

        body, _ = ImageBackbone.from_pretrained(base_location(folder, info))
        body.use_saved_preprocessing(info)  # the run's image size and preprocessing, not the base's
    else:
        body, _ = TextBackbone.from_pretrained(base_location(folder, info), info["pooling"], info["max_length"])
    try:
        with quiet_transformers():
            body.model = PeftModel.from_pretrained(body.model, str(folder))
        head = load_file(folder / HEAD)
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise StropError(f"{folder} holds an adapter strop cannot load ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]}): the folder is damaged or incomplete") from None
    model = with_new_head(body, task)
    try:
        model.head.load_state_dict(head)
    except RuntimeError as error:
        raise StropError(f"{folder / HEAD} does not fit the head of {task.name} ({str(error).splitlines()[0]}): "
                         "the folder is damaged") from None
    model.new_parameters = set()
    return model.eval(), task, info


def merge(model: TaskModel, method: str | None = None) -> TaskModel:
    """Folds the adapter into the base weights, in place: an ordinary model that computes the same.

    Raises:
        StropError: the adapter adds tokens or key/value positions (prompt or prefix tuning), which no
            weight of the base can hold.
    """
    peft_model = adapter_of(model.body)
    if peft_model is None:
        return model
    if peft_model.active_peft_config.is_prompt_learning:
        raise StropError(f"a {method or 'prompt or prefix tuning'} adapter adds learned tokens to the input, which "
                         "cannot be merged into the model's weights; use the run as it is (strop predict and strop "
                         "serve load it with its base), or export it with --format onnx")
    with torch.no_grad():
        model.body.model = peft_model.merge_and_unload()
    return model

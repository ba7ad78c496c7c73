"""Image classification: one label per image, a softmax over the classes on a timm backbone's pooled vector.

Examples come from class folders (`train/<class>/<image>`, at any depth below the class folder) or from a
table with a path column (`data.path_column`, relative to the table's folder) and a label column. Every file
is decoded once when it is read (see strop.data.images): unusable files stop the run, named, or with
`data.bad_images=skip` are left out, counted, named, and recorded in the model's strop.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from strop.tasks.base import TASKS, Examples
from strop.tasks.classification import Classification


@dataclass(frozen=True)
class ImageExamples(Examples):
    """Examples whose inputs are image paths; `skipped`: (path, reason) of the files left out as unusable."""

    skipped: tuple[tuple[str, str], ...] = ()

    def subset(self, index: list[int]) -> ImageExamples:
        part = super().subset(index)
        return ImageExamples(part.inputs, part.targets, part.source, part.feature_columns, self.skipped)


@TASKS.register("image_classification")
@dataclass(frozen=True)
class ImageClassification(Classification):
    """Classification with images as inputs. skipped_images: what data.bad_images=skip left out, by file."""

    skipped_images: dict[str, list[list[str]]] = field(default_factory=dict)

    name = "image_classification"
    input_kinds = ("image",)

    @classmethod
    def read(cls, path: str | Path, data_cfg, input_kind: str, what: str, with_targets: bool = True) -> ImageExamples:
        """Class folders, a table of image paths and labels, or (without targets) a folder of images or one
        image file.

        Raises:
            StropError: no images, a missing column, a missing label, or unusable files with bad_images=error.
        """
        from strop.data.images import read_image_files

        files = read_image_files(path, data_cfg, what, with_targets, cls.read_targets)
        return ImageExamples(files.paths, files.labels, str(path), None, tuple(files.bad))

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> ImageClassification:
        task = super().from_data(train, validation, cfg)
        skipped = {"data.train": [list(x) for x in getattr(train, "skipped", ())]}
        if validation is not None:
            skipped["data.validation"] = [list(x) for x in getattr(validation, "skipped", ())]
        return replace(task, skipped_images={k: v for k, v in skipped.items() if v})

    def notes(self) -> list[str]:
        left_out = [f"{len(files)} unusable files of {key} left out (data.bad_images=skip; listed in the model's "
                    "strop.json, skipped_images)" for key, files in self.skipped_images.items()]
        return super().notes() + left_out

    def info(self) -> dict[str, Any]:
        return {**super().info(), **({"skipped_images": self.skipped_images} if self.skipped_images else {})}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ImageClassification:
        base = Classification.from_info(info)
        return cls(labels=base.labels, head=base.head, positive=base.positive, threshold=base.threshold)

    def split(self, examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
        """As for any classification, with images compared by their bytes: a picture copied under two names
        stays on one side, where comparing paths held out copies of training images and inflated the scores."""
        from strop.data.images import image_key
        from strop.data.splits import stratified_split

        return stratified_split(examples, fraction, seed, inputs=[image_key(path) for path in examples.inputs])

    def plain_head(self) -> str | None:
        return None  # no transformers class: the model folder is timm's (see strop.backbones.image)

    def records(self, inputs: list, outputs: list) -> list[dict[str, Any]]:
        # an image sent as bytes (strop serve) is named by its place in the request, not repeated
        return [{**({} if isinstance(path, bytes) else {"image": str(path)}),
                 **{k: v for k, v in record.items() if k != "text"}}
                for path, record in zip(inputs, super().records(inputs, outputs))]

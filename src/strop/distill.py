"""`strop distill TEACHER_RUN [key=value ...]`: a smaller student trained on a fine-tuned teacher's soft targets
(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"; the student initialised from the
teacher's own layers as in Sanh et al. 2019, DistilBERT).

The student is, by default, the teacher with --layers of its transformer blocks kept (evenly spaced, the top
one included), its embeddings and task head: a warm start of the same family. `model.name=...` instead
names any model (a new head). It trains with strop's one loop on the teacher's data (its config.yaml, with
the overrides given), on

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss (labels)

where the teacher's logits are computed once over the training and validation examples. With `--unlabeled
FILE` (a text file, one text per line, or a table with the run's text columns), the student also trains on
those texts, on the soft targets alone (they have no labels): transfer on unlabelled in-domain text, where a
teacher's knowledge goes furthest. The result is a normal run directory of the task (its summary, model
folder, checkpoints, resume). Sentence-level classification only (text and pair classification).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from strop.errors import StropError

DISTILLABLE = ("text_classification", "pair_classification")
START_FOLDER = "student_start"  # in the student's run: the shrunk teacher it started from


def distill(teacher_run: str | Path, overrides: list[str] = (), layers: int = 3, temperature: float = 2.0,
            alpha: float = 0.5, unlabeled: str | Path | None = None) -> Path:
    """Trains a student on `teacher_run`'s soft targets and labels (and on the soft targets of the texts of
    `unlabeled`); returns the student's run directory.

    Raises:
        StropError: the teacher's task cannot be distilled, a setting is out of range, or what `fit` refuses.
    """
    from strop.compress import merged_copy, whole_model_copy
    from strop.config import MethodConfig, load_config, quiet_in
    from strop.fit import fit
    from strop.model import save_model
    from strop.predict import load, one_model
    from strop.selftrain import read_unlabeled, run_of
    from strop.tasks import TASKS

    if not 0 < temperature < float("inf"):
        raise StropError(f"--temperature must be a number > 0 (1 to 4 is usual); got {temperature}")
    if not 0 <= alpha <= 1:
        raise StropError(f"--alpha must be in [0, 1]; got {alpha}")
    teacher_run = run_of(teacher_run, "strop distill", quiet_in(overrides))
    teacher = load(teacher_run, device="cpu")
    if teacher.task.name not in DISTILLABLE:
        raise StropError(f"strop distill is for {' and '.join(DISTILLABLE)}; {teacher_run} does {teacher.task.name}")
    one_model(teacher, teacher_run, "distill")
    config_file = teacher_run / "config.yaml"
    if not config_file.is_file():
        from strop.selftrain import round_hint

        raise StropError(f"{teacher_run} has no config.yaml: give the teacher's run directory (its data come from "
                         f"it){round_hint(teacher_run)}")
    teacher_model = merged_copy(teacher.model)
    # The student trains by its own method settings, not the teacher's (a LoRA rank, a frozen bottom resolved
    # from auto, which would freeze most of a shrunk student): full fine-tuning of every layer, unless told
    teacher_cfg = load_config(config_file, ["train.resume=false", "output_dir=null"])
    cfg = load_config(replace(teacher_cfg, method=MethodConfig(name="full", freeze_layers=0)), list(overrides))
    if cfg.method.name in ("fewshot", "auto"):  # the pair stage reads hard labels, not the teacher's soft targets
        raise StropError(f"method.name={cfg.method.name}: a student learns the teacher's soft targets, which few-shot "
                         "training's pairs cannot use" + (" (and auto may choose it)" if cfg.method.name == "auto"
                                                          else "") + "; leave method.name out (full) or name a method "
                         "that trains on targets: full, freeze, gradual, lora")
    with tempfile.TemporaryDirectory(prefix="strop-student-") as tmp:
        shrunk = not any(o.startswith("model.name=") for o in overrides)
        if shrunk:  # the student starts from the teacher's blocks: a whole model's
            student = shrink(whole_model_copy(teacher, teacher_run, "distill"), layers)
            info = {k: v for k, v in teacher.info.items() if k != "adapter"}  # the student is a whole model
            save_model(Path(tmp) / "student", student, teacher.task, {**info, "method": "full"})
            cfg = load_config(cfg, [f"model.name={Path(tmp) / 'student'}"])
        pool = (read_unlabeled(unlabeled, cfg.data, TASKS.get(teacher.task.name), "text", "--unlabeled")[1]
                if unlabeled is not None else [])
        soft = SoftTargets(teacher_model, temperature, alpha, pool, show=not quiet_in(overrides))
        run = fit(cfg, adapt_task=soft.wrap)
        if shrunk:
            keep_start(run, Path(tmp) / "student", START_FOLDER)
        return run


def keep_start(run: Path, start: Path, name: str) -> None:
    """Moves the model a run started from (distill's shrunk teacher, prune's pruned model) into the run (its
    folder `name`), and points the run's config.yaml and model at it, where they named the temporary folder that
    is about to go: the run then says, as every run does, which model it started from, and its config.yaml
    runs again."""
    from strop.config import load_config
    from strop.index import record_run
    from strop.runs import atomic_write_json, atomic_write_text

    kept = run / name
    shutil.move(str(start), kept)
    config = load_config(run / "config.yaml", [f"model.name={kept}"])
    atomic_write_text(run / "config.yaml", config.to_yaml(), "the run's config")
    info_file = run / "model" / "strop.json"
    info = json.loads(info_file.read_text(encoding="utf-8"))
    info["base_model"] = str(kept)
    atomic_write_json(info_file, info, "the model's description")
    record_run(run, "complete")  # the runs index shows the model from config.yaml


def shrink(model: nn.Module, keep: int) -> nn.Module:
    """A copy of the task model with `keep` of its transformer blocks, evenly spaced and the top one kept.

    Raises:
        StropError: the backbone has no block list, or `keep` is not fewer blocks than it has.
    """
    student = copy.deepcopy(model)
    blocks = student.body.layers()[1:]  # layer 0 is the embeddings
    if not 1 <= keep < len(blocks):
        raise StropError(f"--layers must be from 1 to {len(blocks) - 1} (the teacher has {len(blocks)} blocks); "
                         f"got {keep}")
    chosen = [round((i + 1) * len(blocks) / keep) - 1 for i in range(keep)]  # e.g. 6 -> 3: blocks 1, 3, 5
    encoder = student.body.model
    name = next(n for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) == len(blocks))
    parent_name, _, child = name.rpartition(".")
    parent = encoder.get_submodule(parent_name) if parent_name else encoder
    kept = [getattr(parent, child)[i] for i in chosen]
    for index, block in enumerate(kept):  # transformers' attention layers know their index (for caches)
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    setattr(parent, child, nn.ModuleList(kept))
    student.body.model.config.num_hidden_layers = keep
    return student


class SoftTargets:
    """The teacher's logits, put beside each example's label, and the loss that reads them."""

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, unlabeled: list = (), show: bool = False):
        self.teacher, self.temperature, self.alpha = teacher.eval(), temperature, alpha
        self.unlabeled = list(unlabeled)  # inputs trained on the soft targets alone
        self.show = show  # the teacher's passes show their progress

    @torch.no_grad()
    def logits(self, inputs: list, batch_size: int = 64) -> list[list[float]]:
        """The teacher's logits for raw inputs, encoded the teacher's own way (a student of another family may
        tokenise differently)."""
        from strop.progress import progress
        from strop.tasks.base import pad_collate

        body, out = self.teacher.body, []
        for start in progress(range(0, len(inputs), batch_size), f"the teacher's soft targets for {len(inputs)} texts",
                              self.show):
            batch = pad_collate(body.encode(inputs[start:start + batch_size]), body.pad_values)
            out += self.teacher(**batch).float().tolist()
        return out

    def wrap(self, task):
        """The task with the distillation loss (its own class, so the run saves as that task)."""
        if task.name not in DISTILLABLE:
            raise StropError(f"strop distill is for {' and '.join(DISTILLABLE)}; this run does {task.name}")
        distilled = _distilled_class(type(task))(**{f.name: getattr(task, f.name) for f in fields(task)})
        object.__setattr__(distilled, "soft", self)
        return distilled


def _distilled_class(base: type) -> type:
    class Distilled(base):
        """`base` whose training labels carry the teacher's logits: (batch, 1 + outputs), the class id first
        (-1 for an unlabelled text: its loss is the soft part alone)."""

        def extra_training_features(self, backbone) -> list[dict]:
            inputs = self.soft.unlabeled
            features = backbone.encode(inputs) if inputs else []
            for feature, teacher in zip(features, self.soft.logits(inputs)):
                feature["labels"] = [-1.0, *teacher]
            return features

        def encode(self, backbone, examples):
            features = super().encode(backbone, examples)
            if examples.targets is not None:
                for feature, teacher in zip(features, self.soft.logits(list(examples.inputs))):
                    feature["labels"] = [float(feature["labels"]), *teacher]
            return features

        def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            if labels.dim() == 1:
                return super().loss(logits, labels)
            hard, teacher = labels[:, 0].long(), labels[:, 1:].float()  # (batch,), (batch, outputs)
            t, student = self.soft.temperature, logits.float()
            if student.shape[-1] == 1:  # one sigmoid logit: the teacher's probability as a soft binary target
                soft = F.binary_cross_entropy_with_logits(student[:, 0] / t, torch.sigmoid(teacher[:, 0] / t))
            else:
                soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                                log_target=True, reduction="batchmean")
            labelled = hard >= 0
            if not labelled.any():  # a batch of unlabelled texts: the teacher's targets are all there is
                return t * t * soft
            hard_loss = super().loss(logits[labelled], hard[labelled])
            return self.soft.alpha * t * t * soft + (1 - self.soft.alpha) * hard_loss

        def targets(self, batch: dict) -> list:
            labels = batch["labels"]
            return super().targets({**batch, "labels": labels[:, 0].long() if labels.dim() == 2 else labels})

        def example_weights(self, features: list[dict]):
            # an unlabelled text counts as the class its teacher predicts
            plain = [{**f, "labels": int(f["labels"][0]) if f["labels"][0] >= 0 else int(np.argmax(f["labels"][1:]))}
                     if isinstance(f.get("labels"), list) else f for f in features]
            return super().example_weights(plain)

    Distilled.__name__ = Distilled.__qualname__ = f"Distilled{base.__name__}"
    return Distilled

"""Few-shot fine-tuning (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", the SetFit
recipe): a contrastive stage tunes the body on pairs of labelled examples, so that texts of one class embed
close together (cosine similarity 1) and texts of different classes apart (0); then the task head trains on
the tuned, frozen body's outputs.

Both stages run in strop's one training loop, each with its own validation, metrics, checkpoints and resume:
the contrastive stage in the run's `contrastive/` folder (its metrics.jsonl and summary.json), the head stage
as the run itself. The embedding is what the task head reads, pooled as the model pools (`model.pooling`),
through BERT's pooler where the pooling uses it.

Pairs come in groups, not one by one: a step takes a group of train.batch_size examples, as balanced across
classes as the group allows, runs each through the body once and trains on every pair of two of them (120 pairs
for 16 examples, where a batch of 16 separate pairs runs up to 32 texts). The budget is method.pairs_per_example
pairs per labelled example, so memory and time grow linearly with the data (all pairs of n examples are
n^2 / 2); the classes take turns in the groups, so a large class does not fill the budget with its own pairs;
positive and negative pairs weigh half each in the loss, however many of each a group holds.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from strop.errors import StropError
from strop.methods.base import METHODS, FrozenSplit, Method, count_parameters
from strop.runs import RunDir
from strop.tasks.base import Task

VALIDATION_PAIRS_PER_EXAMPLE = 2  # the contrastive stage's validation: pairs of the validation examples ...
VALIDATION_PAIRS_MAX = 512  # ... at most this many, so it stays a small share of the stage's time
MIN_GROUP = 4  # train.batch_size: a contrastive group holds two classes of two examples at the least
BODY_FILE = "model.safetensors"  # the tuned body, in checkpoints/contrastive_body/, for resuming the head stage
LARGE_CLASS = 1024  # a class of more examples gives a group its share without being permuted whole (`_share_of`)
COUNTED_PAIRS_MAX = 2_000_000  # the stage's message counts the different pairs up to this many (`distinct_pairs`)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole numbers that differ by at most one (the larger ones first)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def pair_groups(labels: Sequence[int], group_size: int, groups: int, seed: int) -> np.ndarray:
    """`groups` groups of `group_size` examples drawn among examples with these class labels; every pair of two
    different examples in a group is a training pair (`GroupCollate`), so a step encodes each of its examples once
    for group_size * (group_size - 1) / 2 pairs.

    A group holds min(classes, group_size // 2) classes, the sizes of their shares differing by at most one, so
    that every class in it has two examples or more and gives positive pairs; the classes take turns (a shuffled
    cycle through all of them), so each is in about as many groups as any other, however many examples it has;
    a class's examples are drawn uniformly within it, without replacement (a class with fewer examples than its
    share gives each of them in turn).

    Returns:
        (groups, group_size) int64 example numbers, reproducible for a seed.

    Raises:
        StropError: fewer than two classes.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise StropError("method.name=fewshot needs examples of at least two classes to build pairs from")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in classes]
    per_group = max(2, min(len(classes), group_size // 2))
    shares = split_evenly(group_size, per_group)
    turns: list[int] = []
    drawn = np.empty((groups, group_size), dtype=np.int64)
    for g in range(groups):
        chosen: list[int] = []
        while len(chosen) < per_group:
            if not turns:
                turns = rng.permutation(len(classes)).tolist()
            c = turns.pop()
            if c in chosen:  # the cycle restarted within this group: c keeps its turn for the next group
                turns.insert(0, c)
            else:
                chosen.append(c)
        # the larger shares (where group_size does not split evenly) go to the classes with more examples: a class
        # with fewer examples than its share repeats them all, in turn, and an example is not its own pair (3
        # examples, two of one class: that class's two, not the other's one twice, make the positive pair)
        chosen.sort(key=lambda c: -len(members[c]))  # stable: classes of equal size keep their turns' order
        drawn[g] = np.concatenate([_share_of(members[c], share, rng) for c, share in zip(chosen, shares)])
    return drawn


def _share_of(members: np.ndarray, share: int, rng: np.random.Generator) -> np.ndarray:
    """`share` of a class's examples drawn without replacement (all of them in turn, where it has fewer). A class
    of up to LARGE_CLASS examples is permuted whole (the draws every few-shot result in docs/benchmarks.md was
    measured with); a larger one gives its share alone, in the time of the share, not of the class, so that a
    stage's groups take time linear in the data, not in its square."""
    if len(members) <= LARGE_CLASS:
        return np.resize(rng.permutation(members), share)
    return rng.choice(members, share, replace=False)


def counted(number: int, noun: str) -> str:
    """'1 pair', '3 pairs'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def pairs_of_group(size: int) -> int:
    """The pairs of two different places in a group of `size` examples."""
    return size * (size - 1) // 2


def pairs_in(groups: np.ndarray, same_class_of: np.ndarray | None = None) -> int:
    """The pairs that `groups` train on: two places in a group holding two different examples; with the
    examples' labels (`same_class_of`), only those of one class."""
    i, j = np.triu_indices(groups.shape[1], k=1)
    pairs = groups[:, i] != groups[:, j]
    if same_class_of is not None:
        pairs &= same_class_of[groups[:, i]] == same_class_of[groups[:, j]]
    return int(pairs.sum())


def distinct_pairs(groups: np.ndarray) -> int | None:
    """The different pairs of two examples that `groups` hold (a pair in several groups, or twice in one where
    an example repeats in it, counted once); None above COUNTED_PAIRS_MAX pairs, whose count would take seconds
    and a gigabyte for a line of output."""
    if groups.shape[0] * pairs_of_group(groups.shape[1]) > COUNTED_PAIRS_MAX:
        return None
    i, j = np.triu_indices(groups.shape[1], k=1)
    first, second = np.minimum(groups[:, i], groups[:, j]), np.maximum(groups[:, i], groups[:, j])
    keep = first != second
    return len(np.unique(first[keep] * (int(groups.max()) + 1) + second[keep]))


def different(groups: np.ndarray, pairs: int) -> str:
    """' (N of them different)' where `groups` repeat pairs (a class's examples drawn again to fill a group),
    else nothing."""
    distinct = distinct_pairs(groups)
    return f" ({distinct} of them different)" if distinct is not None and distinct < pairs else ""


def groups_for(pairs: int, size: int) -> int:
    """The groups of `size` examples that hold at least `pairs` pairs (at least one group)."""
    return max(1, -(-pairs // pairs_of_group(size)))


def groups_of(features: list[dict], batch_size: int, pairs: int, seed: int) -> np.ndarray:
    """`pair_groups` of these examples holding at least `pairs` pairs, batch_size examples a group (fewer where
    there are fewer examples, at least two)."""
    size = max(2, min(batch_size, len(features)))
    return pair_groups([f["labels"] for f in features], size, groups_for(pairs, size), seed)


class GroupFeatures(Sequence):
    """The loop's training items of the contrastive stage: one group of example numbers each (the loop takes one
    group a step), so the stage holds groups * group_size integers, not the examples' token ids again."""

    def __init__(self, groups: np.ndarray, offset: int = 0):
        """offset: added to the example numbers (validation examples follow the training ones)."""
        self.groups, self.offset = groups, offset

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"group": self.groups[i] + self.offset}


class GroupCollate:
    """Groups -> the padded features of each distinct example in them, and every pair of two different examples
    within a group: their places in the batch ("first", "second") and 1.0 for a pair of one class, else 0.0
    ("labels")."""

    def __init__(self, examples: list[dict], collate: Callable[[list[dict]], dict]):
        self.examples, self.collate = examples, collate

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        distinct = sorted({int(e) for item in items for e in item["group"]})
        position = {example: i for i, example in enumerate(distinct)}
        label = np.array([self.examples[e]["labels"] for e in distinct])
        first, second = [], []
        for item in items:
            places = np.array([position[int(e)] for e in item["group"]])
            i, j = np.triu_indices(len(places), k=1)
            keep = places[i] != places[j]  # an example drawn twice is not a pair with itself
            first.append(places[i][keep])
            second.append(places[j][keep])
        first, second = np.concatenate(first), np.concatenate(second)
        batch = self.collate([{k: v for k, v in self.examples[e].items() if k != "labels"} for e in distinct])
        batch["first"], batch["second"] = torch.from_numpy(first), torch.from_numpy(second)
        batch["labels"] = torch.from_numpy((label[first] == label[second]).astype(np.float32))
        return batch


@dataclass(frozen=True)
class StageDir(RunDir):
    """A stage of a run as the loop writes it: metrics.jsonl and summary.json in <run>/<stage>/, and the
    checkpoint in <run>/checkpoints/<stage>/last, beside the run's own (so a run with it is resumable)."""

    checkpoint_root: Path | None = None

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_root


class PairEncoder(nn.Module):
    """The task model's body (and its pooler, where the head pools with it) as a siamese encoder: the
    cosine similarity of the two examples of each pair. Its modules are the task model's own, so training
    it tunes the task model's body."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.body = model.body
        self.level = model.level
        self.pre = getattr(model.head, "pre", None)  # BERT's pooler, for pooling=pooler
        self.new_parameters: set[int] = set()  # all pretrained: none trains at the new head's rate

    def embed(self, **inputs: torch.Tensor) -> torch.Tensor:
        vectors = self.body(self.level, **inputs)  # (examples, hidden)
        return vectors if self.pre is None else self.pre(vectors.unsqueeze(1))

    def forward(self, first: torch.Tensor, second: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        vectors = self.embed(**inputs).float()  # (distinct examples, hidden)
        # Rows gathered by index (vectors[first]) add up their gradients in an order that varies from run to run
        # on a CPU's threads, so the same seed gave other numbers; gathered by a one-hot matrix product, whose
        # backward is a matrix product too, a run repeats exactly.
        pick = F.one_hot(torch.stack([first, second]), len(vectors)).to(vectors.dtype)  # (2, pairs, examples)
        one, other = pick @ vectors  # (pairs, hidden) each
        return F.cosine_similarity(one, other, dim=-1)  # (pairs,)


def balanced_mean(values, same):
    """The mean over the positive pairs and the mean over the negative ones, averaged (where both kinds are
    present): half the weight on each kind, however many of each a batch holds (as SetFit balances by drawing)."""
    parts = [values[kind].mean() for kind in (same, ~same) if kind.any()]
    return sum(parts) / len(parts)


COSENT_SCALE = 20.0  # CoSENT's scale: similarity differences are multiplied by it (Su 2022; sentence-transformers)


def cosent(similarity, same):
    """CoSENT (Su 2022): log(1 + sum over every positive pair p and negative pair q of exp(20 (s_q - s_p))), so a
    pair of one class is ranked above each pair of two classes, with no target value for either similarity.
    Works on torch tensors (training) and numpy arrays (validation); 0 where one kind of pair is missing."""
    if isinstance(similarity, torch.Tensor):
        scaled = COSENT_SCALE * similarity.float()
        gaps = (scaled[~same][None, :] - scaled[same][:, None]).flatten()  # (positives * negatives,)
        return torch.logsumexp(torch.cat([gaps.new_zeros(1), gaps]), dim=0)
    scaled = COSENT_SCALE * np.asarray(similarity, dtype=np.float64)
    gaps = (scaled[~same][None, :] - scaled[same][:, None]).ravel()
    return float(np.logaddexp.reduce(np.concatenate([[0.0], gaps])))


LOSS_WORDS = {"cosine": "cosine loss, positive and negative pairs weighing half each",
              "cosent": "CoSENT loss, every positive pair ranked above every negative one"}


class PairTask(Task):
    """The contrastive stage as the loop sees a task. loss="cosine": cosine similarities regressed on 1 (same
    class) and 0 (different classes) with a squared error (sentence-transformers' CosineSimilarityLoss, as
    SetFit), the positive and the negative pairs weighing half each (`balanced_mean`); loss="cosent": every
    positive pair ranked above every negative pair of the step (`cosent`)."""

    name = "contrastive_pairs"
    lr_setting = "method.pair_lr"  # the stage's learning rate (contrastive_config), named where its loss diverges
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "pair_accuracy", "pair_auc")
    lead_metric = "loss"
    label_unit = "pairs"  # a step's labels are its pairs' same-class flags: the epoch line counts pairs a second
    stage = "contrastive stage"

    def __init__(self, loss: str = "cosine"):
        self.kind = loss

    def pair_loss(self, similarity, same):
        if self.kind == "cosent":
            return cosent(similarity, same)
        target = same.float() if isinstance(same, torch.Tensor) else same.astype(np.float64)
        return balanced_mean((similarity - target) ** 2, same)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.pair_loss(logits.float(), labels > 0.5)

    # The loop's validation items are groups (one a batch: contrastive_config's eval_batch_size), so a batch's
    # outputs and targets are one item each, the group's pair similarities and same-class flags: gathered across
    # processes, the last uneven batch is then trimmed by whole groups, as the loop counts its items.
    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return [logits.float().cpu().numpy()]

    def targets(self, batch: dict) -> list[np.ndarray]:
        return [batch["labels"].cpu().numpy()]

    def metrics(self, outputs: list, targets: list) -> dict[str, Any]:
        from sklearn.metrics import roc_auc_score

        similarity = np.concatenate(outputs).astype(np.float64)
        positive = np.concatenate(targets).astype(np.float64) > 0.5
        return {"loss": float(self.pair_loss(similarity, positive)),
                # a pair counts as recognised where its similarity is on its side of 0.5 (cosine's targets)
                # with pairs of one kind only (no two validation examples of a class) it would say nothing
                "pair_accuracy": float(balanced_mean((similarity > 0.5) == positive, positive))
                if 0 < positive.sum() < len(positive) else float("nan"),
                # the share of (positive, negative) pairs of pairs ranked right: no threshold, so CoSENT's
                # similarities, which have no target value, are measured too
                "pair_auc": float(roc_auc_score(positive, similarity)) if 0 < positive.sum() < len(positive)
                else float("nan")}


def contrastive_config(cfg):
    """The run's config as the contrastive stage trains with it: method.pair_epochs epochs at
    method.pair_lr, one group of examples a step (`pair_groups`), validated on pair loss, with no early stopping
    within the stage."""
    m = cfg.method
    # no trackers: the stage's metrics are in contrastive/metrics.jsonl, and a second tracker run in the same
    # accelerator would collide with the head stage's (MLflow refuses it; TensorBoard mixes both under one tag)
    return replace(cfg, train=replace(cfg.train, epochs=m.pair_epochs, patience=0, metric="auto",
                                      batch_size=1, eval_batch_size=1, trackers=(),
                                      group_by_length=False, imbalance="none", label_smoothing=0.0),
                   optim=replace(cfg.optim, lr=m.pair_lr, layer_decay=1.0))


def check_supported(model: nn.Module, task: Task) -> None:
    """Raises StropError where the run is not a classification of texts (what pairs of classes need)."""
    labels = getattr(task, "labels", None)
    kind = getattr(model.body, "kind", None)
    # the task first: an image task needs another method, not another model
    if task.level != "sequence" or labels is None or task.name == "multilabel_classification" or kind == "image":
        raise StropError(f"method.name=fewshot is for classifying texts (text_classification, "
                         f"pair_classification), not {task.name}: use method.name=full or freeze")
    if kind != "text":
        raise StropError("method.name=fewshot tunes a text model: choose one (e.g. model.name=minilm-l6), or "
                         "method.name=full for an MLP")


def check_groups(batch_size: int, val_features: list[dict], validation_file: str | None) -> None:
    """Raises StropError where the contrastive stage could not learn or measure anything: groups too small to
    hold two examples of one class (no positive pair), or validation examples of one class (no negative pair)."""
    if batch_size < MIN_GROUP:
        raise StropError(f"method.name=fewshot trains on groups of train.batch_size examples, each of two or more "
                         f"classes with two or more examples in it (a pair of each class, and pairs across them); "
                         f"train.batch_size={batch_size} cannot hold two classes of two: use {MIN_GROUP} or more "
                         "(the default is 16)")
    classes = {f["labels"] for f in val_features}
    if len(classes) < 2:
        where = f"data.validation ({validation_file})" if validation_file else "the validation split"
        raise StropError(f"method.name=fewshot validates its contrastive stage on pairs of validation examples of "
                         f"different classes, and {where} holds {len(val_features)} example(s) of one class: give "
                         "validation examples of at least two classes, or use method.name=full")


@METHODS.register("fewshot")
class FewShot(Method):
    """The contrastive stage (`before_training`), then the head on the tuned body, frozen and cached."""

    settings = ("freeze_layers", "pairs_per_example", "pair_epochs", "pair_lr", "pair_loss")

    trains_body = False  # in the head stage; the contrastive stage trains the body at method.pair_lr
    caches_body = True  # the head stage trains on the tuned body's cached outputs

    def before_training(self, model, task: Task, train_features: list[dict], val_features: list[dict],
                        collate, cfg, run, accelerator) -> dict:
        """The contrastive stage, in the loop, in the run's contrastive/ folder; on resume, skipped where it
        completed (its tuned body is loaded from checkpoints/contrastive_body/) and continued where not.
        Returns what the run's summary says of the stage (`Method.before_training`), from the stage's own summary,
        so also where a resumed run skipped it.

        Raises:
            StropError: the run is not a classification of texts.
        """
        check_supported(model, task)
        encoder = PairEncoder(model)
        saved = run.checkpoints / "contrastive_body"
        show = not cfg.train.quiet and accelerator.is_main_process
        if cfg.train.resume and (saved / BODY_FILE).is_file():
            from safetensors.torch import load_file

            encoder.load_state_dict(load_file(saved / BODY_FILE))
            if show:
                print(f"contrastive stage: complete; its tuned body is loaded from {saved}")
        else:
            self.contrastive_stage(encoder, train_features, val_features, collate, cfg, run, accelerator, show)
        fitted = fit_logistic_head(model, encoder, train_features, collate, cfg.train.eval_batch_size)
        if show:
            print(f"head: starts from a logistic regression on the tuned embeddings (training accuracy "
                  f"{fitted:.3f}); the head stage fine-tunes it")
        summary = run.root / "contrastive" / "summary.json"
        stage = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {"train_seconds": 0.0}
        return {"name": "contrastive", "summary": str(summary.relative_to(run.root)),
                **{key: stage.get(key) for key in ("train_seconds", "steps", "pairs", "parameters")}}

    def contrastive_stage(self, encoder: PairEncoder, train_features: list[dict], val_features: list[dict],
                          collate, cfg, run, accelerator, show: bool) -> None:
        """Trains the body on pairs in the loop; saves the tuned body and the stage's summary."""
        from safetensors.torch import save_file

        from strop.runs import atomic_write_json, staged
        from strop.train.checkpoint import cpu_state
        from strop.train.loop import train

        batch = int(cfg.train.batch_size)
        check_groups(batch, val_features, cfg.data.validation)
        train_groups = groups_of(train_features, batch, self.cfg.pairs_per_example * len(train_features),
                                 cfg.train.seed)
        # no more pairs than the validation examples make: with a handful, the same pairs would repeat
        val_budget = min(VALIDATION_PAIRS_MAX, VALIDATION_PAIRS_PER_EXAMPLE * len(val_features),
                         pairs_of_group(len(val_features)))
        val_groups = groups_of(val_features, batch, val_budget, cfg.train.seed + 1)
        size = train_groups.shape[1]
        pairs, val_pairs = pairs_in(train_groups), pairs_in(val_groups)
        labels = np.array([f["labels"] for f in train_features])
        stage = StageDir(run.root / "contrastive", run.checkpoints / "contrastive")
        if accelerator.is_main_process:
            stage.root.mkdir(exist_ok=True)
        if show:
            distinct = distinct_pairs(train_groups)
            print(f"contrastive stage: {counted(len(train_groups), 'group')} of {size} examples from "
                  f"{len(train_features)}, balanced across classes; every pair of two examples in a group trains "
                  f"({pairs} pairs, {'' if distinct is None else f'{distinct} of them different, '}for a budget of "
                  f"{self.cfg.pairs_per_example} per example; {LOSS_WORDS[self.cfg.pair_loss]}), "
                  f"{self.cfg.pair_epochs} epoch(s) at lr {self.cfg.pair_lr:g}; validated on "
                  f"{counted(val_pairs, 'pair')} of the validation examples{different(val_groups, val_pairs)}; metrics in "
                  f"{stage.metrics}")
            if not pairs_in(train_groups, labels):
                print("  warning: no two training examples share a class (one example of each), so the stage has no "
                      "pair of one class to pull together and only pushes the classes apart; two or more examples "
                      "of a class give it pairs of that class", file=sys.stderr)
            if not pairs_in(val_groups, np.array([f["labels"] for f in val_features])):
                print("  (no two validation examples share a class, so no validation pair is of one class: the "
                      "stage's pair_accuracy and pair_auc cannot be measured; the head stage's scores can)")
        started = time.perf_counter()
        # method.freeze_layers holds the bottom layers still here too; they run at every step (cache_bottom=false),
        # as the pair encoder reads the model inputs, not a cached bottom's output.
        stage_method = Method(replace(self.cfg, cache_bottom=False))
        state, final, scored = train(encoder, PairTask(self.cfg.pair_loss), stage_method, GroupFeatures(train_groups),
                                GroupFeatures(val_groups, offset=len(train_features)),
                                GroupCollate(list(train_features) + list(val_features), collate),
                                encoder.body.input_keys, contrastive_config(cfg), stage, accelerator,
                                checkpoint_last_epoch=False)  # the tuned body, saved below, replaces it
        if accelerator.is_main_process:
            atomic_write_json(stage.summary, {
                "pairs": pairs, "groups": len(train_groups), "group_size": size,
                "pairs_per_example": self.cfg.pairs_per_example, "pair_loss": self.cfg.pair_loss,
                "examples": len(train_features),
                "parameters": dict(zip(("trainable", "total"), count_parameters(accelerator.unwrap_model(encoder)))),
                "epochs_run": state.epoch, "best_epoch": state.best_epoch, "steps": state.step,
                # train_seconds sums every session of a resumed stage; the wall time is this session's (as summary.json)
                "peak_lr": state.peak_lr, "train_seconds": round(state.train_seconds, 3),
                "wall_seconds_this_session": round(time.perf_counter() - started, 3),
                "validation": {name: final[name] for name in PairTask.metric_names},
                "validation_pairs": sum(len(group) for group in scored[0])},  # as validated, not as planned
                "the contrastive stage's summary")
            # the body last: it marks the stage complete (a resumed run skips the stage where it is saved), so a
            # stop before it is saved trains the stage again and writes its summary again
            with staged(run.checkpoints / "contrastive_body", "the tuned body") as tmp:
                save_file(cpu_state(accelerator.unwrap_model(encoder)), tmp / BODY_FILE)
            shutil.rmtree(stage.checkpoints, ignore_errors=True)  # the saved body supersedes them
        accelerator.wait_for_everyone()

    # The head stage: the body is frozen (and its outputs cached), as in method.name=freeze.
    def prepare(self, model: nn.Module) -> None:
        for p in model.body.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        model.body.eval()

    def frozen_split(self, model: nn.Module) -> FrozenSplit:
        return FrozenSplit(model.head_inputs, model.head)



@torch.no_grad()
def embed_examples(encoder: PairEncoder, features: list[dict], collate, batch_size: int) -> np.ndarray:
    """(examples, hidden) fp32 embeddings, as the head's output layer reads them (without dropout)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    vectors = []
    for start in range(0, len(features), batch_size):
        batch = collate([{k: v for k, v in f.items() if k != "labels"} for f in features[start:start + batch_size]])
        vectors.append(encoder.embed(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
    return torch.cat(vectors).numpy()


@torch.no_grad()
def fit_logistic_head(model: nn.Module, encoder: PairEncoder, features: list[dict], collate, batch_size: int) -> float:
    """Sets the head's output layer to an L2-regularised logistic regression of the classes on the tuned
    embeddings (scikit-learn's defaults, SetFit's head): fitted to convergence in a fraction of a second,
    where a new head trained by the loop from random values needs far more steps than a few dozen examples
    give. Returns the regression's training accuracy."""
    from sklearn.linear_model import LogisticRegression

    vectors, labels = embed_examples(encoder, features, collate, batch_size), np.array([f["labels"] for f in features])
    with warnings.catch_warnings():
        # few examples of many classes is what few-shot is for, not a sign of a regression target
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        regression = LogisticRegression(max_iter=1000).fit(vectors, labels)
    weight, bias = torch.tensor(regression.coef_), torch.tensor(regression.intercept_)  # (1 or classes, hidden)
    output = model.head.output
    if output.out_features == 2 and len(weight) == 1:  # two softmax logits: the same odds, split evenly
        weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
    output.weight.copy_(weight.to(output.weight))
    output.bias.copy_(bias.to(output.bias))
    return float(regression.score(vectors, labels))

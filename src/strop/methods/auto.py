"""`method.name=auto`: few-shot, a frozen backbone with a trained head, or full fine-tuning, chosen from the
number of labelled examples per class, the kind of model and the hardware, with the reason said.

The rule follows the measurements in docs/benchmarks.md ("Few-shot", "Scarce labels", "Images"):
- Texts to classify, with few examples per class: the contrastive few-shot stage wins by far (TREC, 8 a class:
  0.807 against 0.354 for full fine-tuning; SST-2, 32 a class: 0.737 against 0.672). Its cost grows with the
  number of examples (method.pairs_per_example pairs each), so on a CPU a large training set goes to full
  fine-tuning instead, which from a few hundred examples a class matches it at a fraction of the time. With
  many classes (Banking77's 77 intents, or 20 of them) full fine-tuning is as accurate or more, and faster.
- Images: on a CPU, fine-tuning a CNN's body costs hours where its frozen features cost minutes (CIFAR-10,
  EfficientNet-Lite0: frozen 0.741 in 108 s on 2 cores); on a GPU the body trains once there are enough
  examples a class to move it without overfitting.
- Everything else (regression, multi-label, token labelling, a new MLP on vectors): full fine-tuning.

`method.freeze_layers=auto` (the default) follows "What trains" in docs/benchmarks.md: on 1,000 SST-2
sentences, full fine-tuning with the embeddings and the bottom half of the blocks frozen (their output cached)
is more accurate than training every layer and takes about two thirds of the time; on TREC's 4,452 questions
training every layer is a point more accurate. So a text classifier trained whole keeps its bottom half frozen
up to FREEZE_BOTTOM_MAX_EXAMPLES training examples, and trains every layer above that.
"""

from __future__ import annotations

from collections import Counter
from statistics import median

FEWSHOT_MAX_PER_CLASS = 64  # at most this many examples in the median class: few-shot
# ... and at most this many classes: a contrastive group of 16 examples (train.batch_size) holds two of each of
# up to 8 classes, so every step contrasts every class; with more, each step sees a few of them (Banking77, 8 a
# class: full fine-tuning 3.7 points ahead with 77 classes, 2.5 with 20, 2.3 with 12, level with 8, at a fraction
# of few-shot's time)
FEWSHOT_MAX_CLASSES = 8
FEWSHOT_MAX_EXAMPLES_CPU = 1_000  # ... and on a CPU, at most this many in all (method.pairs_per_example pairs each)
IMAGE_FREEZE_MAX_PER_CLASS_GPU = 64  # on a GPU, an image body trains from this many examples a class on
FREEZE_BOTTOM_MAX_EXAMPLES = 2_000  # freeze_layers=auto: a text classifier's bottom half stays frozen up to here


def fewshot_fits(task_name: str, input_kind: str, method: str | None, classes: int | None = None) -> bool:
    """Whether method.name=fewshot could train a run that did not use it (the reports' advice): texts classified
    one class an example, with no more classes than its contrastive groups hold (classes None: not known)."""
    return (input_kind == "text" and task_name in ("text_classification", "pair_classification")
            and method != "fewshot" and (classes is None or classes <= FEWSHOT_MAX_CLASSES))


def choose_method(task, targets: list, input_kind: str, gpu: bool, pretrained: bool = True,
                  augmenting: bool = False, batch_size: int | str = "auto") -> tuple[str, str]:
    """The method for this run and why, in words.

    task: the run's task (its name, level and labels); targets: the training targets; input_kind: "text",
    "image" or "vector"; gpu: whether the run trains on a GPU; pretrained: the body starts from trained weights
    (false for a new MLP); augmenting: the run augments or mixes its inputs, which only a body that trains at
    every step sees (fewshot and freeze cache the body's outputs); batch_size: train.batch_size, which few-shot's
    contrastive groups need at MIN_GROUP or more.
    """
    from strop.methods.fewshot import MIN_GROUP

    name, why = _by_data(task, targets, input_kind, gpu, pretrained)
    if name == "fewshot" and isinstance(batch_size, int) and batch_size < MIN_GROUP:
        return "full", (f"{why}; but train.batch_size={batch_size} cannot hold few-shot's contrastive groups (two "
                        f"classes of two: {MIN_GROUP} or more), so the whole model trains")
    if augmenting and name in ("fewshot", "freeze"):
        return "full", (f"{why}; but the run augments its inputs (data.augment, data.mixup or data.cutmix), which "
                        f"{name} would compute once and cache, so the whole model trains")
    return name, why


def _by_data(task, targets: list, input_kind: str, gpu: bool, pretrained: bool) -> tuple[str, str]:
    hardware = "a GPU" if gpu else "a CPU"
    classified = getattr(task, "labels", None) is not None and task.name != "multilabel_classification"
    if input_kind == "vector":
        if not pretrained:
            return "full", "a new MLP has no pretrained body to freeze: all of it trains"
        return "full", ("an MLP, pretrained or not, is small enough to train whole (method.name=freeze keeps a "
                        "pretrained body as it is)")
    if not classified or task.level != "sequence":
        return "full", f"{task.name} has no few-shot or frozen-feature recipe here: the whole model trains"
    counts = Counter(targets)
    per_class = median(counts.values())
    described = f"{len(targets)} examples, {len(counts)} classes, median {per_class:g} a class, on {hardware}"
    if input_kind == "image":
        if not gpu:
            return "freeze", (f"{described}: the body's features are computed once and the head trains on them "
                              "(fine-tuning a CNN's body on a CPU costs hours)")
        if per_class <= IMAGE_FREEZE_MAX_PER_CLASS_GPU:
            return "freeze", (f"{described}: too few a class to move the pretrained body without overfitting; the "
                              "head trains on its frozen features")
        return "full", f"{described}: enough a class for the whole model to train"
    if len(counts) > FEWSHOT_MAX_CLASSES:
        return "full", (f"{described}: more classes than few-shot's contrastive groups hold (two examples each of "
                        f"up to {FEWSHOT_MAX_CLASSES}); the whole model trains")
    if per_class <= FEWSHOT_MAX_PER_CLASS and (gpu or len(targets) <= FEWSHOT_MAX_EXAMPLES_CPU):
        return "fewshot", (f"{described}: contrastive pairs tune the body, then the head (at most "
                           f"{FEWSHOT_MAX_PER_CLASS} a class)")
    if per_class <= FEWSHOT_MAX_PER_CLASS:
        return "full", (f"{described}: few enough a class for few-shot, but {len(targets)} examples make too many "
                        f"pairs for a CPU (few-shot up to {FEWSHOT_MAX_EXAMPLES_CPU:,}); the whole model trains")
    return "full", f"{described}: enough a class for the whole model to train (few-shot up to {FEWSHOT_MAX_PER_CLASS})"


def choose_freeze_layers(method: str, task, examples: int, input_kind: str, layer_count: int,
                         augmenting: bool) -> tuple[int, str | None]:
    """method.freeze_layers=auto made concrete: how many bottom layers stay frozen, and why (None where the
    answer is the plain one, every layer training).

    method: the run's method; task: its task (name, level, labels); examples: training examples; input_kind:
    "text", "image" or "vector"; layer_count: the backbone's layers, embeddings included; augmenting: whether
    the run augments or mixes its inputs (which a cached bottom would never see).
    """
    classified = getattr(task, "labels", None) is not None and task.name != "multilabel_classification"
    if (method != "full" or input_kind != "text" or not classified or task.level != "sequence" or augmenting
            or examples > FREEZE_BOTTOM_MAX_EXAMPLES or layer_count < 3):
        return 0, None
    k = 1 + (layer_count - 1) // 2  # the embeddings and the bottom half of the blocks
    return k, (f"{examples} training examples (at most {FREEZE_BOTTOM_MAX_EXAMPLES:,}): the embeddings and the "
               f"bottom {k - 1} of {layer_count - 1} blocks stay frozen, their output computed once; on little data "
               "fewer trainable layers overfit less (method.freeze_layers=0 trains every layer)")


def freeze_layers_for_all_of(cfg, examples: int):
    """`strop cv` and `strop curve` train on parts of the data: with method.freeze_layers=auto each part would
    choose for its own size, so parts on either side of FREEZE_BOTTOM_MAX_EXAMPLES would measure two methods (a
    curve with a step in it). Here every part trains as a fit on all `examples` would: above the threshold every
    layer (freeze_layers=0); at or below it every part is below it too, and auto chooses the same for each.

    Returns the config to run and a note saying what was pinned (None where nothing was)."""
    from dataclasses import replace

    if cfg.method.freeze_layers != "auto" or examples <= FREEZE_BOTTOM_MAX_EXAMPLES:
        return cfg, None
    return replace(cfg, method=replace(cfg.method, freeze_layers=0)), (
        f"method.freeze_layers auto -> 0 in every run: all {examples:,} examples are more than "
        f"{FREEZE_BOTTOM_MAX_EXAMPLES:,}, where a fit trains every layer, so every smaller part trains every layer too")


"""The report's diagnosis: what went wrong with a run, said in plain words, with the fix each finding suggests.

Each rule reads facts the report has already gathered (the epochs' history from metrics.jsonl, the data
summary, the validation decisions, the scores of the same config's other seeds) and either finds nothing or
returns one Finding. The thresholds are rules of thumb for small data sets, named here so they can be read
and argued with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Overfitting: the validation loss ended this much above its lowest value (relative; a lowest loss under
# OVERFIT_LOSS_FLOOR counts as that floor, so that a loss near 0, reached on easy data, needs a rise of 0.01
# at least: from 0.00001 to 0.002 is no evidence of anything) ...
OVERFIT_RISE = 0.10
OVERFIT_LOSS_FLOOR = 0.1
# ... at least this many epochs after it, while the training loss kept falling.
OVERFIT_EPOCHS = 2
# Underfitting: the final training loss is still this share of what predicting the label frequencies gives.
UNDERFIT_SHARE = 0.8
# Too few examples: fewer training examples than this for a class (or label, or entity type).
MIN_PER_CLASS = 20
# Label noise: a wrong decision made with at least this confidence is a confident error ...
CONFIDENT = 0.9
# ... and this many of them (and this share of the validation decisions) suggest wrong labels.
CONFIDENT_ERRORS_MIN, CONFIDENT_ERRORS_SHARE = 3, 0.02
# Calibration: an expected calibration error above this is worth a word.
ECE_HIGH = 0.10
CALIBRATION_MIN_DECISIONS = 30  # fewer decisions measure no calibration: a bin of one is 0 or 1
# Imbalance: the most frequent class has this many times the examples of the least.
IMBALANCE_RATIO = 3.0
# Instability: the standard deviation over seeds of a score in [0, 1] (or relative, for errors) above this.
SEED_SPREAD, SEED_RELATIVE_SPREAD = 0.02, 0.10
BOUNDED_METRICS = {"accuracy", "macro_f1", "micro_f1", "f1", "precision", "recall", "exact_match", "r2", "spearman"}


@dataclass(frozen=True)
class Finding:
    """One problem: a short name, what the numbers show, and what to do about it."""

    name: str  # overfitting, underfitting, few_examples, label_noise, instability, leakage, imbalance, calibration
    title: str
    evidence: str
    fixes: list[str] = field(default_factory=list)


def overfitting(history: list[dict], best_epoch: int | None = None, trains_body: bool = True,
                inputs: str = "text", smoothing: bool = True) -> Finding | None:
    """Validation loss rising while the training loss falls, after the validation loss's lowest epoch.
    trains_body: whether the run's method trains the pretrained body; inputs: text, image or vector (the
    fixes differ: a vector model's body is a small network whose size is the setting); smoothing: whether the
    task reads train.label_smoothing (single-label classification)."""
    smooth = ", train.label_smoothing=0.1" if smoothing else ""
    points = [(r["epoch"], r.get("train_loss"), r.get("val_loss")) for r in history]
    points = [(e, t, v) for e, t, v in points if is_number(t) and is_number(v)]
    if len(points) < OVERFIT_EPOCHS + 1:
        return None
    low = min(range(len(points)), key=lambda i: points[i][2])
    (low_epoch, low_train, low_val), (last_epoch, last_train, last_val) = points[low], points[-1]
    rise = last_val - low_val
    if last_epoch - low_epoch < OVERFIT_EPOCHS or rise < OVERFIT_RISE * max(low_val, OVERFIT_LOSS_FLOOR) \
            or last_train >= low_train:
        return None
    relative = f", +{rise / low_val * 100:.0f}%" if low_val >= OVERFIT_LOSS_FLOOR else ""  # of a loss near 0: huge
    kept = (f" The saved model is epoch {best_epoch}'s, the best on the validation metric, so the run itself is sound."
            if best_epoch else "")
    return Finding(
        "overfitting", "Overfitting",
        f"The validation loss rose from {low_val:.3f} (epoch {low_epoch}) to {last_val:.3f} (epoch {last_epoch}"
        f"{relative}) while the training loss fell from {low_train:.3f} to {last_train:.3f}: "
        f"the model memorises the training examples instead of learning what generalises.{kept}",
        [f"Stop sooner: train.epochs={max(low_epoch, 1)}, or keep early stopping on (train.patience=2).",
         *([f"Regularise: optim.weight_decay=0.1, model.body_dropout=0.2{smooth}.",
            "A smaller network: fewer or narrower layers (model.hidden=[32]); or a lower optim.lr."
            if inputs == "vector" else
            "Train fewer parameters: method.name=bitfit, or method.freeze_layers=4; or a lower optim.lr."]
           if trains_body else
           [f"Regularise the head: optim.weight_decay=0.1, model.head_dropout=0.3{smooth}; or a lower optim.lr.",
            "The body is frozen already: what overfits is the head, so fewer epochs or a smaller rate help most."]),
         "More training examples help most of all."])


def underfitting(history: list[dict], chance_loss: float | None, inputs: str = "text", targets: bool = False,
                 trains_all: bool = False) -> Finding | None:
    """The training loss ends close to what a model that only knows the label frequencies reaches (inputs:
    text, image or vector, as for `overfitting`; targets: a regression's, whose baseline is their mean;
    trains_all: the run trained every layer of the model already)."""
    losses = [r.get("train_loss") for r in history if is_number(r.get("train_loss"))]
    if not losses or not chance_loss or chance_loss <= 0:
        return None
    if losses[-1] < UNDERFIT_SHARE * chance_loss:
        return None
    return Finding(
        "underfitting", "Underfitting",
        f"After {len(losses)} epochs the training loss is {losses[-1]:.3f}, {losses[-1] / chance_loss:.0%} of "
        f"{chance_loss:.3f}, the loss of predicting {'the mean target' if targets else 'the label frequencies'} alone: "
        "the model has learned little even on the examples it trains on.",
        ["Train longer (train.epochs) or at a higher rate (optim.lr, or optim.lr=find for a range test).",
         *([] if trains_all else ["Train more of the model: method.name=full, method.freeze_layers=0."]),
         "Check that the labels follow from the inputs (a shifted label column"
         + (", texts cut short by model.max_length)." if inputs == "text" else ")."),
         "A larger network may be needed: more or wider layers (model.hidden=[256, 256])." if inputs == "vector"
         else "A larger pretrained model (model.name) may be needed."])


# methods whose head stage trains few parameters already (fewshot: its head, on the body it tuned on pairs)
FEW_PARAMETER_METHODS = ("fewshot", "freeze", "bitfit")


def few_examples(class_counts: dict[str, int], what: str = "class", inputs: str = "text",
                 fewshot_fits: bool = False, method: str | None = None) -> Finding | None:
    """Classes (labels, entity types) with fewer training examples than MIN_PER_CLASS (inputs: as for
    `overfitting`; fewshot_fits: a text classification that did not train with method.name=fewshot, which is
    made for it; method: the run's, whose advice a method that already trains few parameters does not get)."""
    scarce = {name: n for name, n in class_counts.items() if n < MIN_PER_CLASS}
    if not scarce:
        return None
    listed = ", ".join(f"{name} ({n})" for name, n in sorted(scarce.items(), key=lambda item: item[1])[:8])
    more = f" and {len(scarce) - 8} more" if len(scarce) > 8 else ""
    return Finding(
        "few_examples", f"Too few examples per {what}",
        f"{len(scarce)} of {len(class_counts)} {what} names have fewer than {MIN_PER_CLASS} training examples: "
        f"{listed}{more}. Their scores rest on a handful of cases and vary from run to run.",
        [f"Label more examples of those {what} names first: a few dozen each change the most.",
         "Merge rare classes that mean nearly the same, or fold them into an 'other' class.",
         *([] if method in FEW_PARAMETER_METHODS else [
             "With very few examples, train fewer parameters so the model cannot memorise them: "
             + ("a smaller network (model.hidden=[16])." if inputs == "vector" else "method.name=bitfit or freeze.")]),
         *(["method.name=fewshot (contrastive pairs of the labelled texts, then a head) is made for a few "
            "examples a class."] if fewshot_fits else [])])


def label_noise(confident_errors: int, decisions: int, conflicting_duplicates: int = 0,
                confident_decisions: int | None = None, smoothing: bool = True) -> Finding | None:
    """Confident errors on validation, or training examples repeated with different labels.
    confident_decisions: how many decisions were made with CONFIDENT or more (right or wrong); smoothing: as for
    `overfitting`."""
    many = confident_errors >= max(CONFIDENT_ERRORS_MIN, CONFIDENT_ERRORS_SHARE * decisions)
    if not many and not conflicting_duplicates:
        return None
    evidence = []
    if many:
        right = (f" (of the {confident_decisions} decisions made that confidently, "
                 f"{1 - confident_errors / confident_decisions:.0%} are right)" if confident_decisions else "")
        evidence.append(f"{confident_errors} of {decisions} validation decisions are wrong with a confidence of "
                        f"{CONFIDENT:.0%} or more{right}. Either those labels are wrong, or the model is overconfident "
                        "(see the calibration): reading the worst examples below tells which")
    if conflicting_duplicates:
        evidence.append(f"{conflicting_duplicates} inputs occur in the training data more than once with different "
                        "labels")
    return Finding(
        "label_noise", "Label noise suspected",
        "; ".join(evidence) + ".",
        ["Read the worst misclassified examples below: fix the labels that are wrong, in training and validation.",
         *(["Remove or relabel the training inputs that carry contradicting labels."] if conflicting_duplicates else []),
         *(["train.label_smoothing=0.1 softens the pull of the labels that remain wrong."] if smoothing else [])])


def instability(scores: dict[str, float], metric: str) -> Finding | None:
    """The same config with other seeds scores differently by more than the rule of thumb allows."""
    values = [v for v in scores.values() if is_number(v)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    bounded = metric in BOUNDED_METRICS
    if (spread <= SEED_SPREAD) if bounded else (spread <= SEED_RELATIVE_SPREAD * abs(mean)):
        return None
    from strop.tasks.base import score_text  # here: strop.tasks imports strop.evaluate

    listed = ", ".join(f"{seed}: {score_text(v)}" for seed, v in scores.items())
    return Finding(
        "instability", "Unstable across seeds",
        f"The same config with {len(values)} seeds gives validation {metric} from {score_text(min(values))} to "
        f"{score_text(max(values))} (standard deviation {score_text(spread)}; {listed}): one run's score says little "
        "on its own.",
        ["Lower the learning rate (optim.lr) or lengthen the warmup (optim.warmup=0.2): small data sets are "
         "sensitive to the first steps.",
         "Train longer with early stopping, so each seed reaches its best epoch.",
         "Compare settings by the mean over several seeds, and keep the best seed's model (or average them)."])


def leakage(overlap: int, validation_examples: int) -> Finding | None:
    """Validation inputs that also occur in the training data."""
    if overlap <= 0:
        return None
    return Finding(
        "leakage", "Validation examples also in training",
        f"{overlap} of {validation_examples} validation inputs also occur in the training data: the validation "
        "scores overstate how the model does on new inputs.",
        ["Remove those inputs from one of the two files (or de-duplicate before splitting)."])


def imbalance(class_counts: dict[str, int], setting: str | None,
              per_class: dict[str, dict] | None = None) -> Finding | None:
    """A most frequent class with IMBALANCE_RATIO times the examples of some (the rare classes), and nothing done
    about it. `per_class`: the validation's recall and support of each class, where known: rare classes recalled
    at least as well as the others on average are not missed, and nothing is said; otherwise the finding quotes
    both recalls."""
    counts = {name: n for name, n in class_counts.items() if n > 0}
    most = max(counts.values(), default=0)
    rare = [name for name, n in counts.items() if most >= IMBALANCE_RATIO * n]
    if len(counts) < 2 or not rare or setting not in (None, "none"):
        return None
    recall = {name: c["recall"] for name, c in (per_class or {}).items() if c.get("support") and is_number(c.get("recall"))}
    rare_recall = [recall[name] for name in rare if name in recall]
    other_recall = [recall[name] for name in counts if name not in rare and name in recall]
    measured = ""
    if other_recall and len(rare_recall) == len(rare):  # every rare class scored on validation
        others = sum(other_recall) / len(other_recall)
        if min(rare_recall) >= others - 1e-9:  # (the mean can round just above an equal recall)
            return None
        shown = ", ".join(rare[:3]) + (f" and {len(rare) - 3} more" if len(rare) > 3 else "")
        measured = (f" On validation the rare classes ({shown}) are recalled {sum(rare_recall) / len(rare_recall):.2f} "
                    f"of the time on average (the lowest {min(rare_recall):.2f}), the others {others:.2f}.")
    return Finding(
        "imbalance", "Imbalanced classes",
        f"The most frequent class has {most / min(counts.values()):.1f} times the training examples of the least, "
        "and the run did nothing about it (train.imbalance=none): the rare classes tend to be missed." + measured,
        ["train.imbalance=auto (class weights in the loss; with two classes a decision threshold tuned on "
         "validation), or weights, sample or focal.",
         "Judge the run by macro F1 and the rare classes' recall, not accuracy."])


def calibration(ece: float | None, decisions: int = CALIBRATION_MIN_DECISIONS, confidence: float | None = None,
                accuracy: float | None = None, smoothing: bool = True) -> Finding | None:
    """Confidence that does not match accuracy, measured on at least CALIBRATION_MIN_DECISIONS decisions.
    confidence, accuracy: their means over the decisions, which say whether the model is over- or underconfident
    (the fixes are opposite); smoothing: as for `overfitting`."""
    if ece is None or ece <= ECE_HIGH or decisions < CALIBRATION_MIN_DECISIONS:
        return None
    under = is_number(confidence) and is_number(accuracy) and confidence < accuracy
    shown = (f" (mean confidence {confidence:.2f}, accuracy {accuracy:.2f}: "
             f"{'underconfident' if under else 'overconfident'})" if is_number(confidence) and is_number(accuracy)
             else "")
    return Finding(
        "calibration", "Poorly calibrated confidence",
        f"The expected calibration error is {ece:.3f}{shown}: the model's confidence differs from its accuracy by "
        "that much on average (see the reliability diagram).",
        ["Treat the scores as a ranking rather than as probabilities, or recalibrate them on held-out data "
         "(temperature scaling).",
         "Underconfidence often means too little training: more epochs, or a higher rate (optim.lr)." if under else
         ("train.label_smoothing=0.1 and stopping" if smoothing else "Stopping")
         + " before the validation loss rises temper overconfidence."])


def is_number(value) -> bool:
    """A finite int or float (not a bool, not None)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""The interface every task implements, the task registry, and what tasks share (examples, heads, batches).

A task owns what its examples are and how they are scored: reading and checking them, encoding them for a
backbone, the head it puts on the backbone, the loss, decoding outputs for `predict`, and its metrics
(and which one leads: early stopping and `strop evaluate` start from it). A task knows nothing of methods,
optimizers or the training loop. A new task is one file that registers a subclass here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from strop.registry import Registry

# a float32 holds about 7, and its 7th differs between equivalent computations (another batch, another thread
# count: the same image predicted from its file and from its bytes), which 6 keep out of the written numbers
SIGNIFICANT_DIGITS = 6


def compact(values, scale=None):
    """Output numbers as predictions, reports and responses write them: rounded to 6 significant digits, so that a
    value of any scale keeps its precision (a regression output of 1.5157e-06 stays so, where a fixed 6 decimal
    places made it 2e-06; a probability of 0.1 or more is written as before). With `scale` (a regression target's
    spread), 6 significant digits of the scale: an output of 1,000,000.37 with a spread of 1 keeps its decimals,
    which 6 digits of its own would round to 1,000,000. A number gives a float, an array nested lists."""
    a = np.asarray(values, dtype=np.float64)
    magnitude = np.abs(a) if scale is None else np.broadcast_to(np.abs(np.asarray(scale, dtype=np.float64)), a.shape)
    rounded = a.copy()
    # outside 1e-290 .. 1e290 (no model output) a power of ten below would overflow: such values stay as they are
    real = np.isfinite(a) & (magnitude > 1e-290) & (magnitude < 1e290)
    shift = np.zeros_like(a)
    shift[real] = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(magnitude[real]))  # decimal places to keep
    real &= np.abs(shift) < 290  # a value far beyond its scale's digits: 10 ** shift would overflow; kept as it is
    power = 10.0 ** np.abs(shift)  # a power of ten, exact: the quotient or product below rounds correctly
    small, large = real & (shift >= 0), real & (shift < 0)
    rounded[small] = np.round(a[small] * power[small]) / power[small]
    rounded[large] = np.round(a[large] / power[large]) * power[large]
    return rounded.tolist()


def score_text(value: float) -> str:
    """A score as the terminal shows it: 4 decimals, or 3 significant digits where those would show fewer (an
    rmse of 3.2e-06 on targets in millionths read 0.0000)."""
    value = float(value)
    return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.4f}"


@dataclass(frozen=True)
class Examples:
    """Checked examples of one file: model inputs and the targets in the file's own terms.

    inputs: texts, (text, text) pairs, numeric vectors (np.ndarray) or word lists, as the task reads them.
    targets: labels, label lists, numbers or tag lists; None where the file has no targets (predict).
    """

    inputs: list
    targets: list | None
    source: str  # the file they came from, for messages
    feature_columns: tuple[str, ...] | None = None  # the columns of vector inputs, in order

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, index: list[int]) -> Examples:
        targets = None if self.targets is None else [self.targets[i] for i in index]
        return Examples([self.inputs[i] for i in index], targets, self.source, self.feature_columns)


class Task:
    """A task, made concrete by its training data (label map, target statistics, tag set).

    Class attributes describe the task; instances hold what was learned from the data and are saved in the
    model folder's strop.json (`info`, `from_info`).
    """

    name: ClassVar[str]
    level: ClassVar[str] = "sequence"  # the head reads one vector per example ("sequence") or per token
    input_kinds: ClassVar[tuple[str, ...]] = ("text", "vector")  # the backbones it can use
    metric_names: ClassVar[tuple[str, ...]]  # scalar metrics, recorded as val_<name> every epoch
    lead_metric: ClassVar[str]  # picks the best epoch and drives early stopping by default
    minimised: ClassVar[frozenset[str]] = frozenset({"loss"})  # metrics where lower is better
    # The values a metric can take, where it is bounded (strop cv and strop curve cut their intervals to them)
    metric_ranges: ClassVar[dict[str, tuple[float, float]]] = {"loss": (0.0, np.inf)}
    pad_values: ClassVar[dict[str, int]] = {}  # padding of variable-length target features
    # what one of the labels a step trains on is, as the epoch line counts them ("... samples/s")
    label_unit: ClassVar[str] = "samples"
    stage: ClassVar[str] = ""  # where a run trains in stages, the one this task is (its bars and lines say it)
    reads_label_smoothing: ClassVar[bool] = False  # whether train.label_smoothing softens this task's targets

    # --- data -------------------------------------------------------------------------------------
    @classmethod
    def metric_range(cls, name: str) -> tuple[float, float]:
        """The values metric `name` can take: its `metric_ranges` entry, or the whole line where it has none."""
        return cls.metric_ranges.get(name, (-np.inf, np.inf))

    @classmethod
    def pair_column(cls, data_cfg) -> str | None:
        """The second text column of text pairs, or None for single texts."""
        return data_cfg.text_pair_column

    @classmethod
    def read(cls, path: str | Path, data_cfg, input_kind: str, what: str, with_targets: bool = True) -> Examples:
        """Reads and checks one file of examples (data_cfg: the run's DataConfig, for column names).

        Raises:
            StropError: the file, a column or a value is wrong; the message names it and the fix.
        """
        raise NotImplementedError

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> Task:
        """The task for this training data (label map, statistics), after checking that it can be learned.

        Raises:
            StropError: e.g. a single class, or validation labels that training lacks.
        """
        raise NotImplementedError

    def fitted_to(self, train: Examples, cfg) -> Task:
        """This task with its statistics (class weights, target scaling) taken from `train` alone, the share of
        data.train left to train on once validation is split off it: as a scaler is fitted on the training
        split, the held-out rows take no part. The label map stays the whole file's. Tasks with no statistics
        return themselves."""
        return self

    def reusing(self, previous: Task) -> Task:
        """The task of a run that starts from a run of `previous` (the same task and outputs) and keeps its head:
        this one, the data's and the config's (class weights, label smoothing, the loss), with what the head's
        outputs mean taken from `previous` where the data would change it (a regression's target scale).
        Label maps are equal already (`output_space`)."""
        return self

    def split(self, examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
        """Holds out `fraction` of the examples for validation, reproducibly for a seed."""
        from strop.data.splits import random_split

        return random_split(examples, fraction, seed)

    def info(self) -> dict[str, Any]:
        """What `from_info` needs to rebuild this task (written to strop.json)."""
        raise NotImplementedError

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Task:
        raise NotImplementedError

    def output_space(self) -> tuple:
        """What the head's outputs mean (labels, tags, target columns): a run whose task and output space
        equal this one's can hand its head on to a new run."""
        raise NotImplementedError

    # --- model ------------------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def build_head(self, hidden_size: int, pre: nn.Module | None = None, dropout: float = 0.1) -> nn.Module:
        """The head on the backbone's output; `pre`: the backbone's pooler, for pooling=pooler."""
        return LinearHead(hidden_size, self.num_outputs, pre, dropout)

    def plain_head(self) -> str | None:
        """The transformers Auto class whose head computes what this task's head does on the pooler (or on the
        token states), e.g. "AutoModelForSequenceClassification"; None where none does."""
        return None

    def encode(self, backbone, examples: Examples) -> list[dict]:
        """Model features of each example (unpadded), with 'labels' where the examples have targets."""
        features = backbone.encode(examples.inputs, examples.source)
        if examples.targets is not None:
            for feature, target in zip(features, self.encode_targets(examples.targets)):
                feature["labels"] = target
        return features

    def extra_training_features(self, backbone) -> list[dict]:
        """Encoded examples the task trains on besides the data file's (strop distill: unlabelled texts with
        the teacher's soft targets); none by default."""
        return []

    def encode_targets(self, targets: list) -> list:
        """Targets in the model's terms (class ids, multi-hot vectors, standardised numbers)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- outputs ----------------------------------------------------------------------------------
    def outputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """One array per example of the batch: probabilities, or values on the targets' own scale."""
        raise NotImplementedError

    def targets(self, batch: dict[str, torch.Tensor]) -> list:
        """The batch's true targets, in the form `metrics` compares with `outputs`."""
        raise NotImplementedError

    def scored_targets(self, targets: list) -> list:
        """A file's targets (as `read` gives them) in the form `targets` gives."""
        raise NotImplementedError

    def metrics(self, outputs: list[np.ndarray], targets: list) -> dict[str, Any]:
        """The scalar metrics of `metric_names` and any tables (per class, confusion matrix)."""
        raise NotImplementedError

    def calibrated(self, outputs: list[np.ndarray], targets: list) -> Task:
        """The task with decision rules tuned on validation outputs (e.g. thresholds); itself by default."""
        return self

    def decision_note(self) -> str | None:
        """What a tuned decision rule is, said when a run ends (its scores use it); None where there is none."""
        return None

    def example_weights(self, features: list[dict]) -> list[float] | None:
        """Each training example's chance to be drawn into a batch, where the task asks for a weighted draw
        (a class-balanced sampler); None for the usual shuffle."""
        return None

    def notes(self) -> list[str]:
        """What the task chose from the data and why (said when a run starts)."""
        return []

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        """One JSON-ready prediction per input, as `strop predict` prints them."""
        raise NotImplementedError

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list:
        """What `Predictor.predict` returns for each example (a label, a label list, numbers, entities)."""
        raise NotImplementedError

    def is_better(self, metric: str, score: float, best: float | None) -> bool:
        if best is None:
            return True
        return score < best if metric in self.minimised else score > best


TASKS: Registry[type[Task]] = Registry("task")


class LinearHead(nn.Module):
    """pre (the backbone's pooler, if the pooling uses it) -> dropout -> one linear output layer.

    On BERT with the pooler this is exactly BertForSequenceClassification's head (and, without pre, on the
    token states BertForTokenClassification's), so the saved model loads in plain transformers.
    """

    def __init__(self, hidden_size: int, num_outputs: int, pre: nn.Module | None = None, dropout: float = 0.1):
        super().__init__()
        self.pre = pre
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, num_outputs)

    def forward(self, features: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        # Other batch entries (word positions of token tasks, token counts) are not the head's.
        # features: (batch, hidden) pooled or first-token vectors, or (batch, seq, hidden) token states
        if self.pre is not None:
            features = self.pre(features.unsqueeze(1))  # a pooler reads the first token of (batch, seq, hidden)
        return self.output(self.dropout(features))


def pad_collate(features: list[dict], pad_values: dict[str, int]) -> dict[str, torch.Tensor]:
    """Stacks a batch of feature dicts; lists of unequal length (token ids, token labels) are padded to the
    longest with pad_values[key] (0 where not given). Lists of floats become float tensors."""
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], torch.Tensor):
            batch[key] = _pad_tensors(values, pad_values.get(key, 0))
        elif isinstance(values[0], list):
            longest = max(len(v) for v in values)
            pad = pad_values.get(key, 0)
            batch[key] = torch.tensor([v + [pad] * (longest - len(v)) for v in values])  # (batch, longest)
        else:
            batch[key] = torch.tensor(values)
    return batch


def _pad_tensors(values: list[torch.Tensor], pad: float) -> torch.Tensor:
    if all(v.shape == values[0].shape for v in values):
        return torch.stack(values)
    return torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=pad)


class StandardisedOutputs:
    """A task whose head outputs standardised values (fields `mean` and `std`, of the matrix `values` gives):
    their scale is fitted to the training share (`Task.fitted_to`) and handed on with a kept head
    (`Task.reusing`). Listed before the task's base class, so that these replace Task's defaults."""

    def values(self, examples: Examples) -> np.ndarray:
        """The (examples, columns) matrix the outputs standardise."""
        raise NotImplementedError

    def fitted_to(self, train: Examples, cfg):
        matrix = self.values(train)
        std = matrix.std(axis=0)
        std = np.where(std > 0, std, self.std)  # a column constant over the training share: the whole file's scale
        return replace(self, mean=tuple(matrix.mean(axis=0).tolist()), std=tuple(std.tolist()))

    def reusing(self, previous):
        # the kept head's outputs are on the previous run's scale: standardised by its mean and std
        return replace(self, mean=previous.mean, std=previous.std)

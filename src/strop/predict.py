"""Using a trained run: load its model folder and predict, for every task."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from strop.errors import StropError
from strop.model import TaskModel, load_model, model_folder
from strop.tasks import Examples, Task
from strop.tasks.base import pad_collate
from strop.train.cache import example_length
from strop.train.checkpoint import keeps_callers_random_state


class Predictor:
    """A trained model and its task. Build it with `strop.load(run_dir)`.

    Inputs are what the task reads: texts, (text, text) pairs, numeric vectors, or (token tasks) raw texts
    or lists of words.
    """

    def __init__(self, model: TaskModel, task: Task, info: dict, batch_size: int = 64):
        self.model = model.eval()
        self.task = task
        self.info = info
        self.batch_size = batch_size

    @property
    def labels(self) -> list[str]:
        """Class names (classification), labels (multi-label) or tags (token classification), in output order."""
        return list(self.task.info().get("labels", []))

    @property
    def reads_pairs(self) -> bool:
        """Whether each input is a pair of texts (a model trained with data.text_pair_column)."""
        return self.task.name == "pair_classification" or bool(self.info.get("text_pair_column"))

    def inputs_of(self, inputs) -> list:
        """The inputs as a list, one per prediction: one text (or, for a pair model, one (text, text_pair)
        tuple) becomes a list of one; an MLP's as `vector_inputs` gives them.

        Raises:
            StropError: an input the model cannot read (a text model's: not a non-empty text, or pair).
        """
        kind = getattr(self.model.body, "kind", None)
        if kind == "vector":
            return self.vector_inputs(inputs)
        one_pair = self.reads_pairs and isinstance(inputs, tuple) and len(inputs) == 2 and all(
            isinstance(text, str) for text in inputs)
        inputs = [inputs] if isinstance(inputs, str) or one_pair else list(inputs)
        if kind == "text" and self.task.level == "sequence":
            check_texts(inputs, self.reads_pairs)
        return inputs

    def outputs(self, inputs: list, show: str | None = None) -> list[np.ndarray]:
        """One array per input: class probabilities, label probabilities, target values, or per-word tag
        probabilities. show: where given, progress is shown under that name (batches done, ETA)."""
        return self._outputs(self.inputs_of(inputs), show)

    @torch.no_grad()
    def _outputs(self, inputs: list, show: str | None = None) -> list[np.ndarray]:
        """`outputs` of inputs already as the model reads them (`vector_inputs` done). Inputs are encoded a
        chunk at a time, so that a large pool's token ids never all sit in memory at once."""
        from strop.progress import progress

        collate = partial(pad_collate, pad_values={**self.model.body.pad_values, **self.task.pad_values})
        device = next(self.model.parameters()).device
        chunk = max(1, ENCODE_CHUNK // self.batch_size) * self.batch_size  # whole batches
        out: list[np.ndarray | None] = [None] * len(inputs)
        for start in progress(range(0, len(inputs), self.batch_size), show or "", show is not None,
                              total=-(-len(inputs) // self.batch_size)):
            if start % chunk == 0:  # the next chunk's features, in length order: least padding
                first = start
                part = Examples(list(inputs[first:first + chunk]), None, "input")
                features = self.task.encode(self.model.body, part)
                order = sorted(range(len(features)), key=lambda i: example_length(features[i]))
            index = order[start - first:start - first + self.batch_size]
            batch = {k: v.to(device) for k, v in collate([features[i] for i in index]).items()}
            for i, output in zip(index, self.task.outputs(self.model(**batch), batch)):
                out[first + i] = output
        return out

    def predict_proba(self, inputs: list) -> np.ndarray:
        """(len(inputs), classes) probabilities, columns in the order of `.labels` (classification and
        multi-label tasks)."""
        if self.task.name not in ("text_classification", "pair_classification", "multilabel_classification",
                                  "image_classification"):
            raise StropError(f"predict_proba is for classification; this model does {self.task.name}: use predict")
        outputs = self.outputs(inputs)
        return np.stack(outputs) if outputs else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, inputs: list) -> list:
        """Per input: the label (classification), the labels (multi-label), the value or values (regression),
        or the entities with character offsets (token classification)."""
        inputs = self.inputs_of(inputs)
        return self.task.predictions(inputs, self.outputs(inputs))  # outputs: an ensemble's, of all its members

    def vector_inputs(self, inputs) -> list:
        """For an MLP, the inputs as one float vector each: from a table (a pandas DataFrame or a list of dicts,
        its columns matched by name to the training data's), a 2-D array or list of rows in the training
        columns' order, or one vector; other models' inputs unchanged.

        Raises:
            StropError: a missing column, a row of the wrong length, or a value that is not a finite number.
        """
        if getattr(self.model.body, "kind", None) != "vector":
            return inputs
        import pandas as pd

        columns = list(self.info.get("feature_columns") or [])
        count = len(columns) or int(getattr(self.model.body, "num_features", 0))
        named = ", ".join(columns[:5]) + (f", ... ({count} in all)" if count > 5 else "")
        if isinstance(inputs, list) and inputs and all(isinstance(row, dict) for row in inputs):
            inputs = pd.DataFrame(inputs)
        if isinstance(inputs, pd.DataFrame):
            missing = [c for c in columns if c not in inputs.columns]
            if missing:
                raise StropError(f"the inputs lack the column(s) {', '.join(missing[:5])} of those the model was "
                                 f"trained on ({named}): give a table with them")
            inputs = (inputs[columns] if columns else inputs).to_numpy()
        try:
            matrix = np.asarray(inputs, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise StropError(f"the inputs are not numbers ({e}): give vectors of {count} numbers") from None
        if matrix.ndim == 1 and len(matrix) == count and count:
            matrix = matrix[None]  # one vector
        if matrix.ndim != 2 or matrix.shape[1] != count:
            raise StropError(f"the model reads vectors of {count} numbers ({named or 'features'}); "
                             f"the inputs have shape {matrix.shape}: give one row of {count} numbers per input")
        bad = np.flatnonzero(~(np.abs(matrix) <= np.finfo(np.float32).max).all(axis=1))  # NaN compares False
        if len(bad):
            raise StropError(f"input row(s) {', '.join(str(i + 1) for i in bad[:5])} (row 1 is the first) hold a "
                             "value that is missing, infinite or beyond float32: give finite numbers")
        return list(matrix)  # float64: the MLP standardises before its float32 layers

    def predict_tags(self, words: list[list[str]]) -> list[list[str]]:
        """Token classification: one tag per word of each list of words."""
        if self.task.name != "token_classification":
            raise StropError(f"predict_tags is for token classification; this model does {self.task.name}")
        return self.task.predict_tags(self.outputs(words))

    def records(self, inputs: list, show: str | None = None) -> list[dict]:
        """One JSON-ready prediction per input, as `strop predict` prints them; progress under `show` where given."""
        return self.task.records(list(inputs), self.outputs(inputs, show))


def check_texts(inputs: list, pairs: bool) -> None:
    """Raises StropError at the first input that is not a non-empty text, or (pairs) a tuple of two."""
    for i, value in enumerate(inputs):
        texts = value if pairs and isinstance(value, (tuple, list)) and len(value) == 2 else (value,)
        if len(texts) == (2 if pairs else 1) and all(isinstance(t, str) and t.strip() for t in texts):
            continue
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        if pairs:
            raise StropError(f"input {i} is {shown}: this model reads text pairs; give each input as a tuple of two "
                             "non-empty texts (text, text_pair)")
        also = "; a tuple is not a pair for this model: give a list of texts" if isinstance(value, tuple) else ""
        raise StropError(f"input {i} is {shown}: this model reads single texts; give each input as a non-empty "
                         f"string{also}")


ENCODE_CHUNK = 8192  # inputs encoded at once by `Predictor.outputs` (a multiple of the batch size)


class EnsemblePredictor(Predictor):
    """Several models of one task as one (`strop soup --ensemble`): each input's outputs are the mean of the
    members' (probabilities, or values), decoded by the first member's task."""

    def __init__(self, members: list[Predictor], info: dict):
        first = members[0]
        super().__init__(first.model, first.task, {**first.info, **info}, first.batch_size)
        self.members = members

    def outputs(self, inputs: list, show: str | None = None) -> list[np.ndarray]:
        per_member = [member.outputs(inputs, show and f"{show} (model {i + 1} of {len(self.members)})")
                      for i, member in enumerate(self.members)]
        return [np.mean(np.stack(row), axis=0) for row in zip(*per_member)]


def one_model(predictor: Predictor, source: str | Path, command: str) -> None:
    """Raises StropError where `predictor` is an ensemble (strop soup --ensemble): `command` works on one model's
    weights, and would take the first member's for the whole."""
    if isinstance(predictor, EnsemblePredictor):
        members = ", ".join(str(Path(source) / m["folder"]) for m in predictor.info["ensemble"]["members"])
        raise StropError(f"{source} is an ensemble of {len(predictor.members)} models (strop soup --ensemble), and "
                         f"strop {command} works on one model: give one of its members ({members}), or average "
                         "their weights into one model with strop soup (without --ensemble)")


def load_ensemble(folder: Path, device: str | None) -> EnsemblePredictor:
    import json

    from strop.soup import ENSEMBLE_FILE

    try:
        report = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        for member in report["members"]:  # strop soup puts them in members/: one that is not would loop or stray
            if folder.resolve() not in (folder / member["folder"]).resolve().parents:
                raise ValueError(f"member folder {member['folder']!r} is not inside the ensemble folder")
        members = [load(folder / member["folder"], device) for member in report["members"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StropError(f"{folder / ENSEMBLE_FILE} cannot be read ({error}): the ensemble folder is damaged; make "
                         "it again with strop soup --ensemble") from None
    ensemble = EnsemblePredictor(members, {"ensemble": report})
    if "threshold" in report:  # tuned on the ensemble's own outputs (strop.soup.retuned), or none kept
        from dataclasses import replace

        positive = report.get("positive")
        ensemble.task = replace(ensemble.task, threshold=report["threshold"],
                                positive=ensemble.task.labels.index(positive) if positive else ensemble.task.positive)
    return ensemble


@keeps_callers_random_state  # the head is built with random weights before the saved ones replace them
def load(run_dir: str | Path, device: str | None = None) -> Predictor:
    """Loads the model of a completed run (or a run's model/ folder itself).

    Raises:
        StropError: the folder holds no strop model, or a damaged one.
    """
    if Path(run_dir).suffix == ".onnx" and Path(run_dir).is_file():  # strop export --format onnx: onnxruntime
        from strop.export import load_onnx

        return load_onnx(run_dir)
    from strop.soup import ENSEMBLE_FILE

    if (Path(run_dir) / ENSEMBLE_FILE).is_file():  # strop soup --ensemble
        return load_ensemble(Path(run_dir), device)
    folder = model_folder(Path(run_dir))  # a self-training folder: its last round's
    if folder is None and (Path(run_dir) / "config.json").is_file():  # strop pretrain's model/, a hub model
        raise StropError(f"{run_dir} is a pretrained model without a task head (as strop pretrain writes): train "
                         f"one on it first, e.g. strop fit model.name={run_dir} data.train=labelled.csv, then use "
                         "that run")
    if folder is None:
        raise StropError(f"{run_dir} holds no trained model (expected {Path(run_dir) / 'model' / 'strop.json'}); "
                         "is it a completed run of strop fit?")
    model, task, info = load_model(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model.to(device), task, info)

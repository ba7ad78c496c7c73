"""`strop soup RUN RUN ... --output DIR`: one model from the averaged weights of several fine-tuned runs of
the same base model and task (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time"); with `--ensemble`, an ensemble of their
predictions instead (any models of the same task and outputs, of any architecture).

Greedy soup (the default): the runs are ranked by their score on one validation set; starting from the
best, each next run joins the average only where the averaged model scores at least as well as without it.
`--uniform` averages them all. Adapter runs (LoRA, IA3) are merged into their base first, so they average
as whole models. The soup is an ordinary model folder (`strop predict`, `strop.load`, plain transformers).
"""

from __future__ import annotations

import copy
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from strop.errors import StropError
from strop.tasks.base import score_text



def shown_outputs(task) -> str:
    """A task's labels or targets for a message: the first eight, and how many more."""
    from strop.model import outputs_of

    outputs = outputs_of(task)
    more = f" and {len(outputs) - 8} more" if len(outputs) > 8 else ""
    return f"{outputs[:8]}{more}"

def soup(runs: list[str | Path], output: str | Path, uniform: bool = False, data: str | None = None,
         quiet: bool = False, columns: dict[str, str] | None = None) -> dict:
    """Averages the runs' weights (greedily unless `uniform`) and saves the soup to `output`.

    Scores on `data` (a labelled file) or on the first run's validation data.

    Returns:
        {"metric", "ingredients": [{"run", "score", "used"}], "soup_score"}

    Raises:
        StropError: fewer than two runs, an existing output, runs of different tasks, labels or architectures,
            or a prompt/prefix-tuning run (its learned tokens cannot be averaged into weights).
    """
    from strop.compress import validation_examples
    from strop.model import save_model
    from strop.predict import Predictor

    runs, predictors = _load_runs(runs, output, "a soup", quiet)
    output = Path(output)
    first = predictors[0]
    models = [_whole_model(p, run) for p, run in zip(predictors, runs)]
    _check_same_architecture(models, runs)
    other_base = _other_base(predictors, runs)
    if other_base:  # said, not refused: one model may be named two ways (an alias, a path, a hub id)
        print(f"strop soup: warning: {other_base}", file=sys.stderr, flush=True)
    task = first.task
    metric = task.lead_metric
    examples = validation_examples(Path(runs[0]), first, data, columns)

    def score(model) -> float:
        outputs = Predictor(model, task, first.info).outputs(examples.inputs)
        return float(task.metrics(outputs, task.scored_targets(examples.targets))[metric])

    scores = [score(m) for m in models]
    order = sorted(range(len(runs)), key=lambda i: scores[i], reverse=metric not in task.minimised)
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    chosen = [order[0]]
    soup_model = copy.deepcopy(models[order[0]])
    best = scores[order[0]]
    for i in order[1:]:
        trial = chosen + [i]
        soup_model.load_state_dict(average([states[j] for j in trial]))
        trial_score = score(soup_model)
        if uniform or not task.is_better(metric, best, trial_score):  # greedy: keep it unless the score falls
            chosen, best = trial, trial_score
    soup_model.load_state_dict(average([states[j] for j in chosen]))
    outputs = Predictor(soup_model, task, first.info).outputs(examples.inputs)  # once: the threshold, the score
    task = retuned([p.task for p in predictors], outputs, examples)
    best = float(task.metrics(outputs, task.scored_targets(examples.targets))[metric])
    report = {"metric": metric, "soup_score": best, "method": "uniform" if uniform else "greedy",
              "ingredients": [{"run": str(runs[i]), "score": scores[i], "used": i in chosen} for i in order]}
    # the best run's description less what the soup's own task says (a run's threshold would override its own)
    info = {k: v for k, v in predictors[order[0]].info.items() if k not in ("adapter", "threshold", "positive")}
    save_model(output, soup_model, task, {**info, "soup": report})
    if not quiet:
        for entry in report["ingredients"]:
            print(f"{'+' if entry['used'] else '-'} {entry['run']}: {metric} {score_text(entry['score'])}")
        print(f"soup of {len(chosen)} ({report['method']}): {metric} {score_text(best)} -> {output}")
    return report


def _whole_model(predictor, run):
    from strop.adapters import is_adapted
    from strop.compress import merged_copy

    model = merged_copy(predictor.model)
    if is_adapted(model):
        raise StropError(f"{run} is a prompt- or prefix-tuning run: its learned tokens are no weights of the model "
                         "and cannot be averaged; make a soup of full, LoRA or IA3 runs")
    return model


DECISION = ("threshold", "positive")  # a two-class run's tuned decision rule: each run tunes its own (`retuned`)


def _load_runs(runs, output, what: str, quiet: bool, free: tuple[str, ...] = DECISION) -> tuple[list, list]:
    """The runs (a self-training folder: its last round's run, said unless quiet) and their predictors (on the
    CPU), checked: two or more runs, a new output folder, one task and labels. free: what the runs' tasks may
    differ in (`_outputs`).

    Raises:
        StropError: fewer than two runs, an existing output, or runs of different tasks or outputs.
    """
    from strop.model import outputs_of
    from strop.predict import load
    from strop.selftrain import run_of

    if len(runs) < 2:
        raise StropError(f"{what} needs at least two runs")
    if Path(output).exists():
        raise StropError(f"--output {output} already exists: choose a new folder (nothing is overwritten)")
    runs = [run_of(run, "strop soup", quiet) for run in runs]
    predictors = [load(run, device="cpu") for run in runs]
    first = predictors[0]
    for predictor, run in zip(predictors[1:], runs[1:]):
        if predictor.task.name != first.task.name or outputs_of(predictor.task) != outputs_of(first.task):
            raise StropError(f"{run} predicts other outputs ({predictor.task.name}, {shown_outputs(predictor.task)}) "
                             f"than {runs[0]} ({first.task.name}, {shown_outputs(first.task)}): {what} needs runs "
                             "of the same task and labels")
        ours, theirs = _outputs(first.task, free), _outputs(predictor.task, free)
        differing = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if differing:
            shown = "; ".join(f"{k}: {theirs.get(k)} against {ours.get(k)}" for k in differing)
            hint = (" (model.head: the weights of a softmax and a sigmoid head differ in shape; `strop soup "
                    "--ensemble` averages their probabilities)" if differing == ["head"] else "")
            raise StropError(f"{run} differs from {runs[0]} in how it predicts ({shown}): {what} needs runs that "
                             f"predict alike{hint}")
    return runs, predictors


def _outputs(task, free: tuple[str, ...] = DECISION) -> dict:
    """What a task predicts, less `free`: by default the decision threshold a two-class run tuned on its
    validation data, and its class (runs of one data set tune slightly different ones, or keep none where it
    would lower their macro-F1, and the combined model's is tuned again: `retuned`); an ensemble averages
    probabilities, whatever head gave them."""
    return {k: v for k, v in task.info().items() if k not in free}


def retuned(tasks: list, outputs: list, examples):
    """The first run's task with the two-class decision threshold tuned again on the combined model's validation
    outputs, as fit tunes a run's, where any of the runs decides with one (whichever comes first: runs of one
    config need not all keep theirs); the first run's task as it is where none does."""
    task = tasks[0]
    tuned = next((t for t in tasks if getattr(t, "threshold", None) is not None), None)
    if tuned is None:
        return task
    return replace(task, positive=tuned.positive).with_threshold_for(outputs, task.scored_targets(examples.targets))


def _check_same_architecture(models, runs) -> None:
    shapes = {k: v.shape for k, v in models[0].state_dict().items()}
    for model, run in zip(models[1:], runs[1:]):
        theirs = {k: v.shape for k, v in model.state_dict().items()}
        if theirs != shapes:
            raise StropError(f"{run} and {runs[0]} have different architectures: a soup needs runs fine-tuned from "
                             "the same base model")


def _other_base(predictors, runs) -> str | None:
    """Words for runs fine-tuned from different base models (strop.json's base_model, the run's model.name),
    whose weights have the same shapes: averaging them is averaging unrelated weights (a soup's runs share
    their start); None where they share one."""
    bases = [p.info.get("base_model") for p in predictors]
    roots = [_root_model(base) for base in bases]
    other = next((i for i, root in enumerate(roots) if root != roots[0]), None)
    if other is None:
        return None
    return (f"{runs[other]} was fine-tuned from {bases[other]} and {runs[0]} from {bases[0]}: a soup averages runs "
            "of one base model (their weights stay close); of two, the average may predict worse than either, "
            "which the greedy soup leaves out and --uniform does not; --ensemble averages their predictions")


def _root_model(name: str | None) -> str | None:
    """The model a run's weights first came from, as one name: a run it started from followed to that run's
    own base model, and a local folder as its resolved path (a relative and an absolute path to it are one);
    a hub id or an alias as it is."""
    import json

    from strop.model import INFO, model_folder

    for _ in range(20):  # a chain of runs, each started from the one before (bounded: a loop cannot hang it)
        if name is None or not Path(name).is_dir():
            return name
        folder = model_folder(Path(name))
        if folder is None:
            return str(Path(name).resolve())
        name = json.loads((folder / INFO).read_text(encoding="utf-8")).get("base_model")
    return name


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor; other tensors (integer buffers) from the first state."""
    out = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        else:
            out[key] = value
    return out


ENSEMBLE_FILE = "ensemble.json"


def ensemble(runs: list[str | Path], output: str | Path, data: str | None = None, quiet: bool = False,
             columns: dict[str, str] | None = None) -> dict:
    """An ensemble of the runs' predictions (the mean of their probabilities, or of their values) saved to
    `output`: each run's model folder copied into members/<i>, and ensemble.json. `strop.load(output)`,
    `strop predict`, `strop evaluate` and `strop serve` use it as one model; it costs the members' time
    together. Scored, with each member, on `data` or on the first run's validation data.

    Returns:
        {"metric", "members": [{"run", "folder", "score"}], "ensemble_score"}

    Raises:
        StropError: fewer than two runs, an existing output, or runs of different tasks or outputs.
    """
    from strop.compress import validation_examples
    from strop.model import model_folder
    from strop.predict import EnsemblePredictor
    from strop.runs import atomic_write_json, staged

    runs, predictors = _load_runs(runs, output, "an ensemble", quiet, free=(*DECISION, "head"))
    output = Path(output)
    first = predictors[0]
    task, metric = first.task, first.task.lead_metric
    examples = validation_examples(Path(runs[0]), first, data, columns)
    targets = task.scored_targets(examples.targets)
    score = lambda predictor: float(predictor.task.metrics(predictor.outputs(examples.inputs), targets)[metric])
    members = [{"run": str(run), "folder": f"members/{i}", "score": score(p)}
               for i, (run, p) in enumerate(zip(runs, predictors))]
    joined = EnsemblePredictor(predictors, {"ensemble": True})
    outputs = joined.outputs(examples.inputs)  # every member's pass, once: the threshold, the score
    joined.task = retuned([p.task for p in predictors], outputs, examples)
    report = {"metric": metric, "members": members,
              "ensemble_score": float(joined.task.metrics(outputs, targets)[metric])}
    if hasattr(joined.task, "threshold"):  # how the ensemble decides (load_ensemble), none included: a member's
        # own threshold would decide otherwise than the score above was measured
        report["threshold"] = joined.task.threshold
        report["positive"] = None if joined.task.positive is None else joined.task.labels[joined.task.positive]
    with staged(output, "the ensemble") as tmp:
        for member, run in zip(members, runs):
            shutil.copytree(model_folder(Path(run)), tmp / member["folder"])
        atomic_write_json(tmp / ENSEMBLE_FILE, report, "the ensemble")
    if not quiet:
        for member in members:
            print(f"  {member['run']}: {metric} {score_text(member['score'])}")
        print(f"ensemble of {len(members)}: {metric} {score_text(report['ensemble_score'])} -> {output}")
    return report

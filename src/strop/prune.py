"""`strop prune RUN --sparsity 0.5 [key=value ...]`: magnitude pruning of a fine-tuned model, then a short
recovery fine-tune that keeps the pruned weights at zero (method `sparse`).

Unstructured: in every linear layer of the body, the given share of weights with the smallest magnitude is
set to zero (per layer, torch.nn.utils.prune.l1_unstructured). The embeddings, layer norms, biases and the
task head are kept. The recovery runs strop's one loop on the run's own data and config (train.epochs=2 unless
overridden) and writes a normal run directory; the sparsity of its saved model and the validation score
before and after recovery are printed and saved in its prune.json. The weights stay dense tensors: the zeros
shrink nothing on disk and speed nothing up without a sparse runtime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from strop.errors import StropError


def prunable(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.body.modules() if isinstance(m, nn.Linear)]


def magnitude_prune(model: nn.Module, sparsity: float) -> float:
    """Zeros the smallest-magnitude `sparsity` share of each body linear layer's weights, in place; returns the
    share of those weights that are zero."""
    from torch.nn.utils import prune as torch_prune

    for layer in prunable(model):
        torch_prune.l1_unstructured(layer, "weight", amount=sparsity)
        torch_prune.remove(layer, "weight")  # the mask applied for good: a plain weight with zeros
    return measured_sparsity(model)


def measured_sparsity(model: nn.Module) -> float:
    weights = [layer.weight for layer in prunable(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


def prune(run_dir: str | Path, sparsity: float = 0.5, overrides: list[str] = (), quiet: bool = False) -> Path:
    """Prunes the run's model and fine-tunes it to recover; returns the new run directory.

    Raises:
        StropError: a sparsity outside (0, 1), a run without config.yaml, or what `fit` refuses.
    """
    from strop.compress import merged_copy, validation_examples
    from strop.config import load_config
    from strop.fit import fit
    from strop.model import save_model
    from strop.predict import Predictor, load
    from strop.runs import atomic_write_json

    if not 0 < sparsity < 1:
        raise StropError(f"--sparsity must be in (0, 1); got {sparsity}")
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise StropError(f"{run_dir} has no config.yaml: give a run directory of strop fit (its data come from it)")
    predictor = load(run_dir, device="cpu")
    task, metric = predictor.task, predictor.task.lead_metric
    examples = validation_examples(run_dir, predictor, None)

    def score(model) -> float:
        outputs = Predictor(model, task, predictor.info).outputs(examples.inputs)
        return float(task.metrics(outputs, task.scored_targets(examples.targets))[metric])

    model = merged_copy(predictor.model)
    before = score(model)
    magnitude_prune(model, sparsity)
    pruned = score(model)
    cfg = load_config(run_dir / "config.yaml", ["train.resume=false", "output_dir=null", "train.epochs=2",
                                                 *overrides, "method.name=sparse"])
    with tempfile.TemporaryDirectory(prefix="strop-pruned-") as tmp:
        info = {k: v for k, v in predictor.info.items() if k != "adapter"}
        save_model(Path(tmp) / "pruned", model, task, {**info, "method": "full"})
        run = fit(load_config(cfg, [f"model.name={Path(tmp) / 'pruned'}"]))
    recovered = load(run, device="cpu")
    report = {"sparsity_target": sparsity, "sparsity": measured_sparsity(recovered.model), "metric": metric,
              "original": before, "pruned": pruned, "recovered": score(recovered.model), "source": str(run_dir)}
    atomic_write_json(run / "prune.json", report, "the pruning report")
    if not quiet:
        print(f"sparsity {report['sparsity']:.1%} of the body's linear weights; {metric}: original {before:.4f}, "
              f"pruned {pruned:.4f}, after recovery {report['recovered']:.4f} -> {run}")
    return run

"""`strop prune RUN --sparsity 0.5 [--structure weights|channels|heads] [key=value ...]`: pruning of a fine-tuned
model, then a short recovery fine-tune.

`weights` (unstructured, the default): in every linear layer of the body, the given share of weights with the
smallest magnitude is set to zero (per layer, torch.nn.utils.prune.l1_unstructured). The embeddings, layer
norms, biases and the task head are kept. The weights stay dense tensors: the zeros shrink nothing on disk and
speed nothing up without a sparse runtime. The recovery keeps them at zero (method `sparse`).

`channels` (structured): in every transformer block, the given share of the feed-forward network's inner
channels is removed for good: rows of its first linear layer, columns of its second. Each channel is scored by
the product of the norms of its two weight vectors (what it reads and what it writes), so one that is small
on either side goes first, as in L1-norm filter pruning of CNNs. Every block keeps the same number, so the
model stays a plain transformers model with a smaller `intermediate_size`: smaller on disk and faster, and
loadable by plain transformers. The feed-forward network holds two thirds of a BERT block's weights.

`heads` (structured): in every transformer block, the given share of the self-attention heads is removed: their
rows of the query, key and value projections and their columns of the output projection. Each head is scored
by the product of the norms of its value rows and its output columns (what it passes on), and every block keeps
the same number, the same kept heads in their order. A BERT config derives the head size from hidden size /
heads (transformers 5 dropped `prune_heads` and `config.pruned_heads`), so it cannot describe fewer heads of
the same size: strop.json records the heads kept (`attention_heads`), and strop rebuilds that shape before
loading the weights (predict, evaluate, serve, export, a new run starting from it). Plain transformers refuses
the folder's weights (their shapes differ from its config); its ONNX export runs anywhere.

`channels` on an image model (a timm CNN): the given share of the convolutions' output channels is removed,
scored by their filters' L1 norm, by torch-pruning's dependency graph, which prunes layers that must keep
equal widths (a residual sum, a depthwise convolution and its input) as one group; the task head keeps its
inputs. strop.json records every changed layer's new widths (`pruned_shapes`), and strop rebuilds them on the
timm architecture before the weights load; plain timm refuses the weights.

The recovery runs strop's one loop on the run's own data and config (train.epochs=2 unless overridden) and
writes a normal run directory; the sparsity (or channels removed, parameters before and after) and the
validation score before and after recovery are printed and saved in its prune.json.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from strop.errors import StropError
from strop.tasks.base import score_text


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


def feed_forward_pairs(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """The (expanding, contracting) linear layers of each transformer block's feed-forward network, for the
    BERT family's layout (`intermediate.dense`, `output.dense`: BERT, RoBERTa, ELECTRA, MiniLM, XLM-R).

    Raises:
        StropError: the body is not a transformers encoder of that layout.
    """
    pairs = []
    body = getattr(model.body, "model", None)
    config = getattr(body, "config", None)
    if config is not None and hasattr(config, "intermediate_size"):
        for block in model.body.layers()[1:]:
            inner = getattr(getattr(block, "intermediate", None), "dense", None)
            outer = getattr(getattr(block, "output", None), "dense", None)
            if isinstance(inner, nn.Linear) and isinstance(outer, nn.Linear):
                pairs.append((inner, outer))
    if not pairs:
        raise layout_refused(model, "channels", "feed-forward channels of BERT-style transformer blocks "
                             "(intermediate.dense, output.dense) or a timm CNN's convolution channels")
    return pairs


def layout_refused(model: nn.Module, structure: str, what: str) -> StropError:
    """The refusal of --structure `structure` for a body that has no `what`, naming the body's class."""
    body = getattr(model.body, "model", None)
    kind = type(body if body is not None else model.body).__name__
    return StropError(f"--structure {structure} removes {what}; {kind} has none: use --structure weights")


def is_cnn(model: nn.Module) -> bool:
    return getattr(model.body, "kind", None) == "image"


def cnn_channel_prune(model: nn.Module, share: float) -> dict:
    """Removes the `share` of channels with the smallest L1 norm from the image body's convolutions, in place
    (torch-pruning: layers that must keep equal widths, as the two sides of a residual sum, are pruned as one
    group); the task head keeps its inputs. Returns the channels and parameters before and after."""
    from strop.backbones.image import changed_widths, layer_widths

    try:
        import torch_pruning
    except ImportError:
        raise StropError("--structure channels on an image model needs torch-pruning: pip install "
                         "'strop[vision]'") from None
    body = model.body
    before = layer_widths(body.model)
    convolutions = [m for m in body.model.modules() if isinstance(m, nn.Conv2d)]
    channels = sum(m.out_channels for m in convolutions)
    parameters_before = sum(p.numel() for p in model.parameters())
    # The features the head reads keep their width: the head, and the last layer that writes that width (with
    # whatever must keep its width with it, such as a last residual stage), are left alone
    features = [m for m in body.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                and getattr(m, "out_channels", getattr(m, "out_features", None)) == body.hidden_size]
    example = {"pixel_values": torch.zeros(1, *body.data_config["input_size"])}
    pruner = torch_pruning.pruner.MagnitudePruner(model.eval(), example,
                                                  importance=torch_pruning.importance.MagnitudeImportance(p=1),
                                                  pruning_ratio=share, ignored_layers=[model.head, *features[-1:]])
    pruner.step()
    body.pruned_shapes = {**body.pruned_shapes, **changed_widths(before, body.model)}
    return {"channels": channels, "channels_kept": sum(m.out_channels for m in convolutions),
            "parameters": parameters_before, "parameters_kept": sum(p.numel() for p in model.parameters())}


def channel_prune(model: nn.Module, share: float) -> dict:
    """Removes the `share` of feed-forward channels with the lowest score from every block, in place (see the
    module docstring); returns the channels and parameters before and after. An image model: its convolutions'
    channels (cnn_channel_prune)."""
    if is_cnn(model):
        return cnn_channel_prune(model, share)
    pairs = feed_forward_pairs(model)
    width = pairs[0][0].out_features
    keep_count = max(1, round(width * (1 - share)))
    parameters_before = sum(p.numel() for p in model.parameters())
    for inner, outer in pairs:
        score = inner.weight.detach().norm(dim=1) * outer.weight.detach().norm(dim=0)
        keep = torch.sort(torch.topk(score, keep_count).indices).values  # the kept channels, in their order
        inner.weight = nn.Parameter(inner.weight.detach()[keep].clone())
        if inner.bias is not None:
            inner.bias = nn.Parameter(inner.bias.detach()[keep].clone())
        inner.out_features = keep_count
        outer.weight = nn.Parameter(outer.weight.detach()[:, keep].clone())
        outer.in_features = keep_count
    model.body.model.config.intermediate_size = keep_count  # what config.json will say: loadable as it is
    return {"channels": width, "channels_kept": keep_count, "parameters": parameters_before,
            "parameters_kept": sum(p.numel() for p in model.parameters())}


def head_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Linear]]:
    """(self-attention, output projection) of each transformer block, for the BERT family's layout.

    Raises:
        StropError: the body is not a transformers encoder of that layout.
    """
    from strop.backbones.text import attention_blocks

    body = getattr(model.body, "model", None)
    blocks = attention_blocks(body) if body is not None and hasattr(body, "config") else []
    if not blocks:
        raise layout_refused(model, "heads", "attention heads of BERT-style transformer blocks "
                             "(attention.self.query/key/value, attention.output.dense)")
    return blocks


def head_prune(model: nn.Module, share: float) -> dict:
    """Removes the `share` of attention heads with the lowest score from every block, in place (see the module
    docstring); returns the heads and parameters before and after."""
    from strop.backbones.text import keep_attention_heads

    blocks = head_blocks(model)
    heads, size = blocks[0][0].num_attention_heads, blocks[0][0].attention_head_size
    keep_count = max(1, round(heads * (1 - share)))
    parameters_before = sum(p.numel() for p in model.parameters())
    kept = []
    for attention, output in blocks:
        passed_on = attention.value.weight.detach().reshape(heads, size, -1).flatten(1).norm(dim=1)
        written = output.weight.detach().reshape(output.out_features, heads, size).transpose(0, 1).flatten(1).norm(dim=1)
        kept.append(torch.sort(torch.topk(passed_on * written, keep_count).indices).values.tolist())
    keep_attention_heads(model.body.model, kept)
    return {"heads": heads, "heads_kept": keep_count, "parameters": parameters_before,
            "parameters_kept": sum(p.numel() for p in model.parameters())}


def measured_sparsity(model: nn.Module) -> float:
    weights = [layer.weight for layer in prunable(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


STRUCTURES = ("weights", "channels", "heads")
START_FOLDER = "pruned_start"  # in the recovery's run: the pruned model it started from


def prune(run_dir: str | Path, sparsity: float = 0.5, overrides: list[str] = (), quiet: bool = False,
          structure: str = "weights") -> Path:
    """Prunes the run's model (`structure`: see the module docstring) and fine-tunes it to recover; returns the
    new run directory. quiet (or train.quiet in `overrides`): no progress and no summary line.

    Raises:
        StropError: a sparsity outside (0, 1), an unknown structure, a run without config.yaml, a body without
            feed-forward channels or attention heads of the BERT layout (structures channels, heads), or what
            `fit` refuses.
    """
    from strop.compress import validation_examples, whole_model_copy
    from strop.distill import keep_start
    from strop.config import MethodConfig, load_config, quiet_in
    from strop.fit import fit
    from strop.model import save_model
    from strop.predict import Predictor, load
    from strop.runs import atomic_write_json
    from strop.selftrain import run_of

    if not 0 < sparsity < 1:
        raise StropError(f"--sparsity must be in (0, 1); got {sparsity}")
    if structure not in STRUCTURES:
        raise StropError(f"--structure must be one of {', '.join(STRUCTURES)}; got {structure!r}")
    given = [o for o in overrides if o.split("=", 1)[0].strip() == "method.name"]
    if given:  # the recovery's method is the structure's: refused, not replaced in silence
        raise StropError(f"{given[0]}: the recovery training after pruning trains with method sparse for "
                         "--structure weights (zeroed weights stay zero) and full for channels and heads; leave "
                         "method.name out")
    quiet = quiet or quiet_in(overrides)
    run_dir = run_of(run_dir, "strop prune", quiet)
    if not (run_dir / "config.yaml").is_file():
        from strop.selftrain import round_hint

        raise StropError(f"{run_dir} has no config.yaml: give a run directory of strop fit (its data come from "
                         f"it){round_hint(run_dir)}")
    predictor = load(run_dir, device="cpu")
    task, metric = predictor.task, predictor.task.lead_metric
    model = whole_model_copy(predictor, run_dir, "prune")
    if structure == "heads" or (structure == "channels" and not is_cnn(model)):  # refused before any writing
        {"channels": feed_forward_pairs, "heads": head_blocks}[structure](model)
    examples = validation_examples(run_dir, predictor, None)

    def score(model) -> float:
        outputs = Predictor(model, task, predictor.info).outputs(examples.inputs)
        return float(task.metrics(outputs, task.scored_targets(examples.targets))[metric])

    before = score(model)
    removed = {"weights": magnitude_prune, "channels": channel_prune, "heads": head_prune}[structure](model, sparsity)
    pruned = score(model)
    # Removed channels and heads are gone: the rest trains as in full fine-tuning. Zeroed weights must stay zero.
    # Every layer was pruned, so every layer recovers (the run may have kept its bottom frozen) unless told.
    recovery = "sparse" if structure == "weights" else "full"
    # the recovery's own method settings, not the run's (a LoRA rank, a frozen bottom): every layer recovers
    run_cfg = load_config(run_dir / "config.yaml", ["train.resume=false", "output_dir=null", "train.epochs=2"])
    cfg = load_config(replace(run_cfg, method=MethodConfig(name=recovery, freeze_layers=0)),
                      [*overrides, f"method.name={recovery}"])
    with tempfile.TemporaryDirectory(prefix="strop-pruned-") as tmp:
        info = {k: v for k, v in predictor.info.items() if k != "adapter"}
        save_model(Path(tmp) / "pruned", model, task, {**info, "method": "full"})
        run = fit(load_config(cfg, [f"model.name={Path(tmp) / 'pruned'}"]))
        keep_start(run, Path(tmp) / "pruned", START_FOLDER)
    recovered = load(run, device="cpu")
    report = {"structure": structure, "sparsity_target": sparsity, "metric": metric, "original": before,
              "pruned": pruned, "recovered": score(recovered.model), "source": str(run_dir)}
    if structure == "weights":
        report["sparsity"] = measured_sparsity(recovered.model)
    else:
        report.update(removed)  # the recovery trains the pruned shapes: the counts stay those of the pruning
    atomic_write_json(run / "prune.json", report, "the pruning report")
    if not quiet:
        units = {"channels": "convolution channels kept" if is_cnn(model) else
                 "feed-forward channels kept in each block", "heads": "attention heads kept in each block"}.get(structure)
        what = (f"{report[structure + '_kept']} of {report[structure]} {units}, "
                f"{report['parameters_kept'] / report['parameters']:.1%} of the parameters"
                if units else f"sparsity {report['sparsity']:.1%} of the body's linear weights")
        print(f"{what}; {metric}: original {score_text(before)}, pruned {score_text(pruned)}, after recovery "
              f"{score_text(report['recovered'])} -> {run}")
    return run

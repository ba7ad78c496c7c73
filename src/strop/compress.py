"""`strop compress RUN`: the run's model and its compressed forms side by side, measured, not assumed.

Forms:
- `fp32`: the model as trained (PyTorch; an adapter run with its adapter merged, which computes the same).
- `int8`: dynamic int8 quantisation of every linear layer, a scale per output channel (PyTorch's own
  `quantize_dynamic`; Jacob et al. 2018): weights stored in int8, activations quantised on the fly per batch;
  for CPU inference.
- `onnx`: the fp32 model exported to ONNX (strop.export) and run by onnxruntime (where strop[export] is
  installed).

For each: size of its weights as written (safetensors for fp32, torch's format for int8, the .onnx file),
the number of weights (the same in each: these forms change the precision or the runtime, not the count),
latency per example at batch 1 and batch 32 (model only: the inputs are tokenised beforehand, alike for
all), and every metric of the task on the run's validation data (re-read and split as the run did) or on
--data. Latencies are the best of several interleaved rounds, so a burst of load on the machine slows
every form alike; they depend on the machine and its load, and the table says how many threads ran.

The table is printed and saved in the run directory as compress.json and compress.md.
"""

from __future__ import annotations

import copy
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from strop.errors import StropError
from strop.tasks.base import score_text

FORMS = ("fp32", "int8", "onnx")
LATENCY_EXAMPLES = {1: 32, 32: 128}  # batch size -> examples timed per round
ROUNDS = 3


@dataclass
class Form:
    name: str
    description: str
    size_bytes: int
    logits: Callable[[dict[str, torch.Tensor]], torch.Tensor]  # a padded batch of model inputs -> logits
    runs: object = None  # what computes them: the PyTorch module, or the onnxruntime session


def compress(run_dir: str | Path, forms: tuple[str, ...] | None = None, data: str | None = None,
             quiet: bool = False, columns: dict[str, str] | None = None) -> list[dict]:
    """Measures the run's model and the given compressed forms (by default int8 and, for the models ONNX export
    takes, onnx); prints and saves the table; returns its rows.

    Raises:
        StropError: a run without a model, an unknown form, `onnx` without strop[export], or validation
            data that can no longer be read (give --data).
    """
    from strop.predict import load, one_model
    from strop.selftrain import run_of

    unknown = [f for f in forms or () if f not in FORMS]
    if unknown:
        raise StropError(f"--forms: unknown form '{unknown[0]}'; known: {', '.join(FORMS[1:])}")
    run_dir = run_of(run_dir, "strop compress", quiet)
    predictor = load(run_dir, device="cpu")
    one_model(predictor, run_dir, "compress")
    if forms is None:  # ONNX export takes text and vector models (strop.export.example_inputs)
        forms = ("int8", "onnx") if predictor.model.body.kind in ("text", "vector") else ("int8",)
    examples = validation_examples(Path(run_dir), predictor, data, columns)
    features = predictor.task.encode(predictor.model.body, examples)
    model = merged_copy(predictor.model)
    parameters = sum(p.numel() for p in model.parameters())
    built = [fp32_form(model)]
    with tempfile.TemporaryDirectory(prefix="strop-compress-") as tmp:
        for name in forms:
            if name == "int8":
                built.append(int8_form(model))
            elif name == "onnx":
                built.append(onnx_form(predictor, Path(tmp) / "model.onnx"))
        rows = measure(built, predictor, features, parameters)
    notes = int8_notes(model) if "int8" in forms else []
    saved = _save(Path(run_dir), rows, predictor, data, notes)
    if not quiet:
        print(table_text(rows, predictor.task.metric_names))
        for note in notes:
            print(f"note: {note}")
        print(f"table saved to {saved}" if saved else f"note: {run_dir} is a model folder, not a run directory: the "
              "table above is not saved")
    return rows


def validation_examples(run_dir: Path, predictor, data: str | None, columns: dict[str, str] | None = None):
    """The examples to score: --data (its `columns` where given: text_column, label_column, text_pair_column;
    else those the model was trained on), or the run's validation data read and split as the run did."""
    from strop.evaluate.scoring import saved_columns

    task = predictor.task
    if data is not None:
        return type(task).read(data, saved_columns(predictor.info, **(columns or {})), predictor.model.body.kind,
                               "--data")
    from strop.config import load_config
    from strop.fit import load_splits

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        from strop.selftrain import round_hint

        raise StropError(f"{run_dir} has no config.yaml to find its validation data: give a labelled file with "
                         f"--data{round_hint(run_dir)}")
    try:
        splits = load_splits(load_config(config_file), predictor.model.body.kind)
    except StropError as error:
        raise StropError(f"the run's validation data cannot be read again ({error}); give a labelled file with "
                         "--data") from None
    return splits.validation


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of the model in eval mode, with a LoRA or IA3 adapter folded into its weights (the same function;
    quantisation then sees plain linear layers)."""
    from strop.adapters import is_adapted, merge

    model = copy.deepcopy(model).eval()
    if is_adapted(model) and not model.body.model.active_peft_config.is_prompt_learning:
        merge(model)
    return model


def whole_model_copy(predictor, run_dir: Path, command: str) -> nn.Module:
    """A copy of the run's model as a whole model that a new run can start from (strop prune, strop distill's
    shrunk student): a LoRA or IA3 adapter folded into its weights.

    Raises:
        StropError: an ensemble; bottleneck adapters (houlsby, pfeiffer), which compute with weights of their own
            beside the body's; prompt or prefix tuning, whose learned tokens no weight of the body holds.
    """
    from strop.adapters import adapter_of
    from strop.predict import one_model

    one_model(predictor, run_dir, command)
    method = predictor.info.get("method")
    peft_model = adapter_of(predictor.model.body)
    if method in ("houlsby", "pfeiffer") or (peft_model is not None and
                                             peft_model.active_peft_config.is_prompt_learning):
        what = ("its body carries bottleneck adapters, layers of their own beside the body's" if method in
                ("houlsby", "pfeiffer") else "its adapter adds learned tokens to the input")
        raise StropError(f"strop {command} starts a new run from a whole model, and {run_dir} was trained with "
                         f"method.name={method}: {what}, which cannot be folded into the model's weights. "
                         f"{command.capitalize()} a run of full fine-tuning, lora or ia3 (e.g. strop fit "
                         f"{run_dir / 'config.yaml'} method.name=lora output_dir=NEW)")
    return merged_copy(predictor.model)


def fp32_form(model: nn.Module) -> Form:
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return Form("fp32", "PyTorch, float32", len(save(_unshared(state))), _torch_logits(model), model)


def int8_form(model: nn.Module) -> Form:
    """Dynamic int8 quantisation of the linear layers (torch.ao.quantization.quantize_dynamic), with a scale per
    output channel of each weight: one scale per tensor lost 2.4 points of accuracy on SST-2's dev set (a
    MiniLM-L6 sentiment model: 0.665 in fp32, 0.641 per tensor), per channel none (0.665)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks its quantised tensor types and this API for a future removal
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = quantize_dynamic(copy.deepcopy(model), {nn.Linear: per_channel_dynamic_qconfig},
                                     dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    return Form("int8", "PyTorch, dynamic int8 linear layers", buffer.tell(), _torch_logits(quantized), quantized)


def int8_notes(model: nn.Module) -> list[str]:
    """What to know of the int8 form where it converts little of the model: dynamic quantisation takes linear
    layers only, and a CNN is nearly all convolutions (EfficientNet-Lite0: 0.4% of its parameters are linear)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    share = linear / max(1, sum(p.numel() for p in model.parameters()))
    if share >= 0.1:
        return []
    kinds = {"convolutions": nn.modules.conv._ConvNd, "embeddings": nn.Embedding}
    rest = [name for name, kind in kinds.items() if any(isinstance(m, kind) for m in model.modules())]
    what = f" ({', '.join(rest)})" if rest else ""
    return [f"int8 converts linear layers only, {share:.1%} of this model's parameters; the rest{what} stays "
            "float32, so its size and speed barely change"]


def onnx_form(predictor, path: Path) -> Form:
    from strop.export import export_onnx

    try:
        import onnxruntime
    except ImportError:
        raise StropError("the onnx form needs onnxruntime: pip install \"strop[export]\", or leave onnx out of "
                         "--forms") from None
    export_onnx(_predictor_copy(predictor), path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch uses: a fair comparison
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {k: batch[k].numpy() for k in names})[0])

    return Form("onnx", "onnxruntime, float32", path.stat().st_size, logits, session)


def _predictor_copy(predictor):
    from strop.predict import Predictor

    return Predictor(copy.deepcopy(predictor.model), predictor.task, predictor.info)


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor once: safetensors refuses tensors that share memory (tied embeddings; prompt tuning's copy of
    the word embeddings), and a model stores a tied tensor once, so its size counts it once."""
    storages, tensors, out = set(), set(), {}
    for key, value in state.items():
        storage, view = value.untyped_storage().data_ptr(), (value.data_ptr(), tuple(value.shape), value.stride())
        if view in tensors:  # the same tensor under another name
            continue
        out[key] = value.clone() if storage in storages else value  # another view of a storage: its own copy
        storages.add(storage)
        tensors.add(view)
    return out


def _torch_logits(model: nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    @torch.no_grad()
    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch)

    return logits


def measure(forms: list[Form], predictor, features: list[dict], parameters: int) -> list[dict]:
    """One row per form: size, weights, latency per example at batch 1 and 32, the task's metrics."""
    from strop.tasks.base import pad_collate
    from strop.train.cache import example_length

    task, body = predictor.task, predictor.model.body
    collate = partial(pad_collate, pad_values={**body.pad_values, **task.pad_values})
    ordered = sorted(features, key=example_length)  # least padding; the order does not change the metrics
    rows = []
    for form in forms:
        outputs, targets = [], []
        for start in range(0, len(ordered), 64):
            batch = collate(ordered[start:start + 64])
            labels = batch.pop("labels")
            logits = form.logits(batch)
            batch["labels"] = labels
            outputs += task.outputs(logits, batch)
            targets += task.targets(batch)
        scores = task.metrics(outputs, targets)
        rows.append({"form": form.name, "runtime": form.description, "size_mb": round(form.size_bytes / 1e6, 2),
                     "parameters": parameters,
                     **{name: round(float(scores[name]), 4) for name in task.metric_names}})
    for batch_size, count in LATENCY_EXAMPLES.items():
        batches = _latency_batches(features, batch_size, count, collate)
        best = {form.name: float("inf") for form in forms}
        for form in forms:
            form.logits(batches[0])  # warm up (first-call allocations, lazy initialisation)
        for _ in range(ROUNDS):  # interleaved: a burst of load slows every form alike
            for form in forms:
                started = time.perf_counter()
                for batch in batches:
                    form.logits(batch)
                best[form.name] = min(best[form.name], time.perf_counter() - started)
        examples = sum(len(b["input_ids" if "input_ids" in b else next(iter(b))]) for b in batches)
        for row in rows:
            row[f"ms_per_example_batch{batch_size}"] = round(1000 * best[row["form"]] / examples, 3)
    fp32 = rows[0]
    for row in rows:
        row["speedup_batch1"] = round(fp32["ms_per_example_batch1"] / row["ms_per_example_batch1"], 2)
        row["threads"] = torch.get_num_threads()
    return rows


def _latency_batches(features: list[dict], batch_size: int, count: int, collate) -> list[dict]:
    """Batches of `batch_size` examples drawn in the data's order (its mix of lengths), inputs only."""
    chosen = [features[i % len(features)] for i in range(max(count, batch_size))]
    batches = []
    for start in range(0, len(chosen), batch_size):
        batch = collate(chosen[start:start + batch_size])
        batch.pop("labels", None)
        batches.append(batch)
    return batches


def table_text(rows: list[dict], metrics: tuple[str, ...] | list[str]) -> str:
    """The table as Markdown (readable as plain text too)."""
    shown = [m for m in metrics if m != "loss"] + ["loss"] * ("loss" in metrics)
    header = ["form", "runtime", "size (MB)", "parameters", "ms/example batch 1", "ms/example batch 32",
              "speed-up batch 1", *shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["form"], row["runtime"], f"{row['size_mb']:.2f}", f"{row['parameters']:,}",
                 f"{row['ms_per_example_batch1']:.2f}", f"{row['ms_per_example_batch32']:.2f}",
                 f"{row['speedup_batch1']:.2f}x", *(score_text(row[m]) for m in shown)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save(run_dir: Path, rows: list[dict], predictor, data: str | None, notes: list[str]) -> Path | None:
    """Writes compress.json and compress.md into the run; returns the .md, or None for a bare model folder."""
    from strop.runs import atomic_write_json, atomic_write_text

    if not (run_dir / "model").is_dir():  # a bare model folder: nowhere of the run's to save
        return None
    scored = data or "the run's validation data"
    atomic_write_json(run_dir / "compress.json", {"data": scored, "rows": rows, "notes": notes},
                      "the compression table")
    atomic_write_text(run_dir / "compress.md", f"Scored on {scored}; {rows[0]['threads']} threads.\n\n"
                      + table_text(rows, predictor.task.metric_names) + "\n"
                      + "".join(f"\nNote: {note}\n" for note in notes), "the compression table")
    return run_dir / "compress.md"

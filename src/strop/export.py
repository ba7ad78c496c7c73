"""`strop export RUN --format merged|onnx --output PATH`: a trained run in another form.

- merged: an adapter run (method.name=lora or ia3) with the adapter folded into the base weights, written
  as an ordinary model folder (model.safetensors, config.json, tokenizer, strop.json): `strop.load`,
  `strop predict` and plain transformers read it, with the same predictions as the adapter run.
- onnx: one ONNX file computing the task model's logits, for onnxruntime. Its inputs are named as the
  tokenizer's outputs (input_ids, attention_mask, token_type_ids where the model reads them; `x` for an MLP
  on vectors: the standardised features, (raw - mean) / std with the metadata's strop.mlp mean and std, as
  the MLP backbone encodes them), with a dynamic batch axis and, for text, a dynamic sequence axis; its first output is
  `logits`. The file's metadata holds the run's strop.json (task, labels), under the key "strop". The export
  is checked against PyTorch with onnxruntime on the run's own tokenizer outputs before it is kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from strop.backbones.base import Backbone
from strop.backbones.text import TextBackbone
from strop.errors import StropError
from strop.runs import check_folder_path, reporting_write_errors, to_json

FORMATS = ("merged", "onnx")
# Sentences of different lengths: padding in the example batch, so that the traced graph handles it.
EXAMPLE_TEXTS = ["a short one", "a somewhat longer sentence, with more words than the first one has"]
TOLERANCE = 1e-4  # largest |logit difference| between onnxruntime and PyTorch accepted


def export(run_dir: str | Path, format: str, output: str | Path) -> Path:
    """Writes the run's model as `format` to `output` and returns it.

    Raises:
        StropError: unknown format, an output that exists, a run without a model, a model that cannot take
            the form (a prompt-tuning adapter merged), or an ONNX file whose outputs differ from PyTorch's.
    """
    if format not in FORMATS:
        raise StropError(f"--format must be one of {', '.join(FORMATS)}; got '{format}'")
    output = Path(output)
    if output.exists():
        raise StropError(f"--output {output} already exists: choose a new path (nothing is overwritten)")
    if not output.parent.is_dir():
        check_folder_path(output, "--output")  # a file in the way is said as such
        raise StropError(f"--output: the folder {output.parent} does not exist; create it or write elsewhere")
    from strop.model import model_folder
    from strop.predict import load, one_model

    predictor = load(run_dir, device="cpu")
    one_model(predictor, run_dir, "export")
    if format == "merged":
        return export_merged(predictor, output, model_folder(Path(run_dir)))
    if output.suffix != ".onnx":
        raise StropError(f"--output: an ONNX file's name ends in .onnx; got '{output}'")
    return export_onnx(predictor, output)


def export_merged(predictor, output: Path, folder: Path | None = None) -> Path:
    """The adapter folded into the base weights, saved as an ordinary model folder. folder: the model folder
    the predictor was loaded from (named where there is nothing to merge)."""
    from strop.adapters import is_adapted, merge
    from strop.model import save_model

    if not is_adapted(predictor.model):
        raise StropError("--format merged is for runs that saved an adapter (method.name=lora or ia3); this run "
                         "already holds a whole model: use its model folder as it is"
                         + (f" ({folder})" if folder is not None else ""))
    model = merge(predictor.model, predictor.info.get("method"))
    info = {k: v for k, v in predictor.info.items() if k != "adapter"}
    save_model(output, model, predictor.task, info)
    return output


class _Logits(nn.Module):
    """The task model with its inputs as positional arguments in a fixed order, as ONNX names them."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)))


def example_inputs(predictor) -> dict[str, torch.Tensor]:
    """A padded batch of two examples, as the model reads them (the tokenizer's outputs, for text)."""
    body = predictor.model.body
    if body.kind == "text":
        encoded = body.tokenizer(EXAMPLE_TEXTS, padding=True, truncation=True, max_length=body.max_length,
                                 return_tensors="pt")
        return {k: encoded[k] for k in body.input_keys if k in encoded}
    width = getattr(body, "num_features", None)  # the MLP on standardised vectors
    if width is None:
        raise StropError(f"ONNX export takes text and vector models, not {body.kind} models yet: an image run's "
                         "model folder (RUN/model) loads in timm as it is (local-dir:RUN/model), and strop compress "
                         "--forms int8 measures its int8 form")
    return {key: torch.randn(2, width) for key in body.input_keys}


def export_onnx(predictor, output: Path) -> Path:
    """Traces the model with torch.export, writes ONNX (opset 18), and checks it with onnxruntime."""
    _require_onnx()
    from torch.export import Dim

    from strop.adapters import is_adapted, merge

    model = predictor.model.eval()
    if is_adapted(model) and not model.body.model.active_peft_config.is_prompt_learning:
        model = merge(model)  # the same function with fewer operations
    inputs = example_inputs(predictor)
    names = tuple(inputs)
    text = predictor.model.body.kind == "text"
    batch, sequence = Dim("batch"), Dim("sequence")
    axes = [{0: batch, 1: sequence} if text else {0: batch} for _ in names]
    with reporting_write_errors(output, "the ONNX model", "Choose another --output"):  # a folder it cannot write
        staging = tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.")
    with staging as tmp:
        staged = Path(tmp) / output.name
        try:
            with torch.no_grad(), _quiet_exporter():
                program = torch.onnx.export(_Logits(model, names).eval(), tuple(inputs.values()), dynamo=True,
                                            input_names=list(names), output_names=["logits"],
                                            dynamic_shapes=(tuple(axes),), opset_version=18, verbose=False)
        except Exception as error:  # torch.export's errors are many and deep: say which model failed
            raise StropError(f"ONNX export failed for this model ({type(error).__name__}: "
                             f"{str(error).strip().splitlines()[0][:300]})") from None
        program.model.metadata_props["strop"] = to_json(predictor.info)  # the task and labels
        if text:  # the tokenizer too: `strop predict FILE.onnx` needs nothing else
            program.model.metadata_props["strop_tokenizer"] = to_json(_tokenizer_files(predictor.model.body))
        program.save(str(staged))
        difference = check_onnx(staged, predictor)
        if difference > TOLERANCE:
            raise StropError(f"the ONNX export differs from PyTorch by up to {difference:.2e} in the logits (more "
                             f"than {TOLERANCE:g}); it was not written")
        shutil.move(str(staged), output)
    return output


@contextmanager
def _quiet_exporter():
    """torch.export and the ONNX exporter warn about much that does not concern a finished model (training-mode
    notes, torchvision operators, axis renaming); the export is checked against PyTorch instead."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_onnx(path: Path, predictor, texts: list[str] | None = None) -> float:
    """The largest |logit difference| between onnxruntime on `path` and the PyTorch model, over batches of
    other sizes and lengths than the traced example (by default)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    body = predictor.model.body
    batches = []
    if body.kind == "text":
        texts = texts or ["good", "the plot was dull , and the acting poor , but the music was fine", "ok then"]
        for group in (texts[:1], texts):
            encoded = body.tokenizer(group, padding=True, truncation=True, max_length=body.max_length,
                                     return_tensors="pt")
            batches.append({k: encoded[k] for k in body.input_keys if k in encoded})
    else:
        batches.append({k: v[:1] for k, v in example_inputs(predictor).items()})
    worst = 0.0
    for batch in batches:
        (logits, *_) = session.run(None, {k: v.numpy() for k, v in batch.items()})
        with torch.no_grad():
            expected = predictor.model(**batch).numpy()
        worst = max(worst, float(np.abs(logits - expected).max()))
    return worst


def _tokenizer_files(body) -> dict[str, str]:
    """The tokenizer's files (as save_pretrained writes them), name -> text."""
    with tempfile.TemporaryDirectory() as tmp:
        body.tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


class TokenizerBody(Backbone):
    """The encoding half of a text backbone (its tokenizer and truncation), for a model run elsewhere."""

    kind = "text"
    input_keys = TextBackbone.input_keys
    encode = TextBackbone.encode
    encode_words = TextBackbone.encode_words

    def __init__(self, tokenizer, max_length: int):
        super().__init__()
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad_values = {"input_ids": tokenizer.pad_token_id or 0}


class OnnxTaskModel(nn.Module):
    """A task model whose logits onnxruntime computes from an ONNX export; `body` encodes the inputs as the
    exported model's backbone did (its tokenizer, or the MLP's standardisation)."""

    def __init__(self, session, body):
        super().__init__()
        self.session, self.names = session, [i.name for i in session.get_inputs()]
        self.body = body  # for encoding only: the MLP's weights, if any, are not used
        # Predictor places batches on the device of the model's parameters: the CPU, where onnxruntime reads them
        self.device_marker = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {k: batch[k].cpu().numpy() for k in self.names})[0])


def load_onnx(path: str | Path):
    """A Predictor that runs an ONNX export of strop with onnxruntime (`strop predict FILE.onnx`).

    Raises:
        StropError: onnxruntime is missing, or the file is not an ONNX export of strop.
    """
    _require_onnx()
    import onnxruntime

    from strop.backbones.base import BACKBONES
    from strop.predict import Predictor
    from strop.tasks import TASKS

    metadata = _metadata(path)
    if "strop" not in metadata:
        raise StropError(f"{path} is not an ONNX export of strop (no 'strop' metadata): export a run with "
                         "strop export RUN --format onnx")
    info = json.loads(metadata["strop"])
    task = TASKS.get(info["task"]).from_info(info)
    with tempfile.TemporaryDirectory() as tmp:
        if info.get("backbone", "text") == "text":
            from strop.backbones.text import load_tokenizer

            files = json.loads(metadata.get("strop_tokenizer", "{}"))
            if not files:
                raise StropError(f"{path} carries no tokenizer (exported by an earlier strop): export the run again")
            for name, text in files.items():
                (Path(tmp) / Path(name).name).write_text(text, encoding="utf-8")
            body = TokenizerBody(load_tokenizer(tmp), info["max_length"])
        else:
            body = BACKBONES.get(info["backbone"]).from_saved(Path(tmp), info)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return Predictor(OnnxTaskModel(session, body), task, info)


def _metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises its own DecodeError and others for a file that is not ONNX
        raise StropError(f"{path} cannot be read as an ONNX model ({type(error).__name__}: {error})") from None
    return {p.key: p.value for p in proto.metadata_props}


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise StropError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error.name} is missing): "
                         "pip install \"strop[export]\"") from None

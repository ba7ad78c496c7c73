"""Text backbones from Hugging Face transformers: any encoder by hub id, local folder or bundled alias.

The encoder is loaded with `AutoModel` (the body without any task head); strop puts its own task head on
it. A sentence-level head reads one vector per text, pooled the way the pretrained model was trained:
a sentence-transformers model declares its pooling (`modules.json`, `1_Pooling/config.json`) and that is
what `model.pooling=auto` uses; other models use BERT's pooler where they have one with its weights, else
[CLS].
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from strop.backbones.base import BACKBONES, Backbone, masked_mean
from strop.backbones.bundled import BUNDLED
from strop.errors import StropError

POOLINGS = ("cls", "mean", "pooler")


TOKENIZE_CHUNK = 10_000  # texts the tokenizer takes at once


def in_chunks(inputs: list, tokenized) -> list:
    """`tokenized(inputs)`, called on TOKENIZE_CHUNK of them at a time: the tokenizer's working memory for a large
    data set at once is several times its token ids', and tokenizing 100,000 texts takes tens of seconds, which
    shows as progress (a few chunks take moments: no bar flashes by)."""
    from strop.progress import progress

    starts = range(0, len(inputs), TOKENIZE_CHUNK)
    large = len(starts) > 2
    features: list = []
    for start in progress(starts, f"tokenizing {len(inputs)} texts" if large else "", large, unit="chunk"):
        features.extend(tokenized(inputs[start:start + TOKENIZE_CHUNK]))
    return features


CUT_SAID: set = set()  # (source, max_length) whose inputs cut by model.max_length were said


def say_cut(source: str | None, max_length: int, how_many: str, effect: str) -> None:
    """Says, once a process for a source (a server's requests: once), that `how_many` inputs are longer than
    model.max_length tokens, and `effect`."""
    from strop.data.tables import say_note

    if (source, max_length) in CUT_SAID:
        return
    CUT_SAID.add((source, max_length))
    where = f" in {Path(source).name}" if source and Path(source).is_file() else ""
    say_note(f"{how_many}{where} are longer than model.max_length={max_length} tokens: {effect}; a larger "
             "model.max_length (up to the model's limit) reads them")


def resolve_model_source(name: str) -> str:
    """Turns model.name into something `from_pretrained` accepts: a local folder or a hub id.

    A bundled alias becomes the folder its package installed; an existing path stays a path; anything
    else is taken as a hub id, which must be in the local cache or downloadable now.

    Raises:
        StropError: the name is neither a folder, an alias, a cached model nor reachable on the hub.
    """
    if name in BUNDLED:
        return str(BUNDLED.get(name)())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            return str(path / "model")  # the output folder of `strop pretrain`: the model it wrote
        if not (path / "config.json").is_file() and (path / "config.yaml").is_file():  # a run that wrote no model
            raise StropError(f"model.name: {path} is a run that has not completed (no model/ folder yet): continue "
                             f"it with train.resume=true (as strop fit or strop pretrain started it), then start from it")
        if not (path / "config.json").is_file():
            raise StropError(f"model.name: {path} has no config.json; point it at a Hugging Face model folder "
                             "(config.json, weights, tokenizer files) or at a strop run directory")
        return str(path)
    if _in_hub_cache(name) or _hub_reachable():
        return name
    raise StropError(
        f"model.name: '{name}' is not a local folder or a bundled alias, and the model hub cannot be reached "
        f"(offline?). Use a local copy: model.name=/path/to/model (a folder with config.json, weights and "
        f"tokenizer files, e.g. saved with save_pretrained), or a bundled model: {', '.join(BUNDLED.names())}")


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id the hub would reject is simply not cached
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check, so that an offline machine fails in seconds rather than after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _model_file(source: str, name: str) -> Path | None:
    """A file of a local model folder or of a cached hub model; None where it has none."""
    local = Path(source) / name
    if Path(source).is_dir():
        return local if local.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, name))
    except Exception:  # no such file in the repository, or offline: the model declares nothing
        return None


def declared_pooling(source: str) -> str | None:
    """The pooling a sentence-transformers model was trained with ("mean" or "cls"), or None for a model
    that declares none. Max pooling and the other modes map to the closest of strop's poolings (mean)."""
    modules_file = _model_file(source, "modules.json")
    if modules_file is None:
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        folder = next(m["path"] for m in modules if m.get("type", "").endswith("models.Pooling"))
        config_file = _model_file(source, f"{folder}/config.json")
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file else {}
    except (StopIteration, KeyError, TypeError, ValueError, OSError):
        return None
    return "cls" if config.get("pooling_mode_cls_token") else "mean"


def resolve_pooling(setting: str, source: str, model: nn.Module, pooler_saved: bool = True) -> tuple[str, str]:
    """model.pooling made concrete, and why (said in the run's output). pooler_saved: the folder holds the
    pooler's weights; a masked-language-model checkpoint (`strop pretrain`'s, many hub ones) has none, and its
    pooler would start from random values.

    Raises:
        StropError: `pooler` asked for a model that has none.
    """
    has_pooler = getattr(model, "pooler", None) is not None
    if setting == "pooler" and not has_pooler:
        raise StropError("model.pooling=pooler: this model has no pooler layer; use model.pooling=mean or cls")
    if setting != "auto":
        if setting == "pooler" and not pooler_saved:
            return setting, "as configured (its weights are not in the folder: the pooler starts from random values)"
        return setting, "as configured"
    declared = declared_pooling(source)
    if declared is not None:
        return declared, "declared by the model (sentence-transformers pooling config)"
    if has_pooler and pooler_saved:
        return "pooler", "the model's pooler layer (no sentence-transformers pooling declared)"
    if has_pooler:
        return "cls", ("the first token (the folder holds no weights for the model's pooler layer, as a "
                       "masked-language-model checkpoint does not; it would start from random values)")
    return "cls", "the first token (the model declares no pooling and has no pooler)"


def refuse_pickle_only(source: str) -> None:
    """A local model folder whose weights are only pickles (pytorch_model.bin, *.pt) is refused: loading a
    pickle runs whatever code it holds, and strop loads weights only from safetensors.

    Raises:
        StropError: naming the pickle file and how to convert it where it is trusted.
    """
    folder = Path(source)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.glob(pattern))
    if pickles:
        raise StropError(
            f"model.name: {folder} holds its weights only as a pickle ({pickles[0]}), and loading a pickle can run "
            "any code it holds; strop loads weights from safetensors only. If you trust the file, convert it: "
            f"python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{folder}')"
            f".save_pretrained('{folder}')\"")


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """The tokenizer of a model folder or hub id.

    Raises:
        StropError: a folder of a model type transformers does not know, or no tokenizer (its first line said).
    """
    from transformers import AutoTokenizer

    refuse_unknown_model_type(source, trust_remote_code)
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StropError(f"model.name: could not load a tokenizer from '{source}': {said}") from None


def refuse_unknown_model_type(source: str, trust_remote_code: bool = False) -> None:
    """Raises StropError where the folder's config.json names a model type this transformers does not know:
    transformers' own error then is a list of tokenizer libraries to install, none of which would help."""
    import transformers
    from transformers import CONFIG_MAPPING

    try:
        model_type = json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):  # no folder, no config.json, or not JSON: said where it is read
        return
    if trust_remote_code or not isinstance(model_type, str) or model_type in CONFIG_MAPPING:
        return
    raise StropError(f"model.name={source}: its config.json names the model type '{model_type}', which transformers "
                     f"{transformers.__version__} does not know: give a Hugging Face encoder folder (config.json, "
                     "model.safetensors, tokenizer.json) of a known type, upgrade transformers, or set "
                     "model.trust_remote_code=true for a model that ships its own code")


def tokens_read(model: nn.Module, tokenizer) -> int | None:
    """The most tokens an input of this encoder may have: its tokenizer's model_max_length where set (a huge
    placeholder where not), and the rows of its absolute position embeddings (less RoBERTa's offset, its
    positions counting from the padding index + 1); None where neither says."""
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    if isinstance(positions, nn.Embedding):
        offset = getattr(model.embeddings, "padding_idx", None)
        limits.append(positions.num_embeddings - (0 if offset is None else offset + 1))
    return min(limits) if limits else None


def check_vocabulary(model: nn.Module, tokenizer, source: str) -> None:
    """Refuses a tokenizer whose own vocabulary goes past the model's word embeddings (a folder put together by
    hand, its tokenizer from another checkpoint): the first batch would index past them, an IndexError deep in
    torch. Added tokens past them are let be: special tokens a text rarely holds.

    Raises:
        StropError: the tokenizer's vocabulary is larger than the embeddings.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows, tokens = getattr(embeddings, "num_embeddings", None), getattr(tokenizer, "vocab_size", None)
    if isinstance(rows, int) and isinstance(tokens, int) and tokens > rows:
        raise StropError(f"model.name={source}: its tokenizer has {tokens:,} tokens but the model's word embeddings "
                         f"have {rows:,} rows, so most token ids would index past them: the tokenizer files belong to "
                         "another model; put the model's own tokenizer files (tokenizer.json and its config) in the "
                         "folder")


@BACKBONES.register("text")
class TextBackbone(Backbone):
    """A transformers encoder (`AutoModel`) with its tokenizer.

    Its pooler, where the pooling uses it, is handed to the task head (`take_pooler`): it then trains with
    the head in methods that freeze the body, as BERT's classification head does.
    """

    kind = "text"
    input_keys = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model: nn.Module, tokenizer, pooling: str, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.hidden_size = model.config.hidden_size
        self.pad_values = {"input_ids": tokenizer.pad_token_id or 0}
        # The pooler is taken out of the encoder: only the pooler head uses it, and it registers it as its own
        # module (kept out of this module's parameters so that it is saved, frozen and trained once, as head).
        object.__setattr__(self, "_pooler", getattr(model, "pooler", None))
        if self._pooler is not None:
            model.pooler = None

    @classmethod
    def from_pretrained(cls, source: str, pooling: str, max_length: int,
                        trust_remote_code: bool = False, every_weight: bool = False) -> tuple[TextBackbone, str]:
        """The pretrained encoder of `source` (see resolve_model_source); returns it and why its pooling.
        every_weight: refuse a folder that lacks a weight of the encoder (but its pooler's), which transformers
        would start from random values: a strop run's model/ holds every one it trained.

        Raises:
            StropError: the folder or hub id holds no loadable encoder or tokenizer (every_weight: or not all
                its weights).
        """
        from safetensors import SafetensorError
        from transformers import AutoModel

        refuse_pickle_only(source)
        tokenizer = load_tokenizer(source, trust_remote_code)
        pooler_saved = True
        try:
            heads = saved_attention_heads(source)
            if heads:  # a strop model folder with attention heads removed: its config cannot describe that
                model = encoder_with_heads(source, heads)
            else:
                with quiet_transformers():  # its report of unused head weights is expected: strop adds its own head
                    model, loading = AutoModel.from_pretrained(source, use_safetensors=True, output_loading_info=True,
                                                               trust_remote_code=trust_remote_code)
                missing = [k for k in loading["missing_keys"] if not k.startswith("pooler.")]
                pooler_saved = len(missing) == len(loading["missing_keys"])
                if every_weight and missing:
                    raise StropError(f"model.name={source}: its model.safetensors lacks {len(missing)} weight(s) of "
                                     f"the encoder (e.g. {missing[0]}), which would start from random values: the "
                                     "folder is damaged or was written for another layout")
        except (OSError, ValueError, KeyError, SafetensorError) as error:
            raise StropError(f"model.name: could not load '{source}' as a transformers encoder (weights in "
                             f"safetensors): {str(error).splitlines()[0]}") from None
        check_vocabulary(model, tokenizer, source)
        pooling, why = resolve_pooling(pooling, source, model, pooler_saved)
        limit = tokens_read(model, tokenizer)
        # longer inputs would index past the position embeddings (a crash at predict time on a long text)
        return cls(model, tokenizer, pooling, max_length if limit is None else min(max_length, limit)), why

    @classmethod
    def from_saved(cls, directory: Path, info: dict) -> TextBackbone:
        """The architecture of a saved strop model folder, with random weights (the caller loads them)."""
        model = encoder_from_config(str(directory), info.get("attention_heads"))
        tokenizer = load_tokenizer(str(directory))
        if info["pooling"] not in POOLINGS or not isinstance(info["max_length"], int) or info["max_length"] < 1:
            raise ValueError(f"pooling {info['pooling']!r} and max_length {info['max_length']!r} in strop.json")
        limit = tokens_read(model, tokenizer)  # as from_pretrained cuts it: never past the positions
        return cls(model, tokenizer, info["pooling"], min(info["max_length"], limit or info["max_length"]))

    def take_pooler(self) -> nn.Module:
        """The model's pooler (dense + tanh on the first token), for a head that pools with it."""
        return self._pooler

    @property
    def prefix(self) -> str:
        """How transformers names the body inside its task models (e.g. "bert"): the saved weights use it."""
        return self.model.base_model_prefix

    def encode(self, inputs: list, source: str | None = None) -> list[dict]:
        """Texts or (text, text) pairs -> unpadded token ids (padding happens per batch). Texts longer than
        max_length are cut to it, and how many is said (once a process for a source)."""
        pairs = bool(inputs) and isinstance(inputs[0], tuple)
        cut = 0

        def tokenized(chunk: list) -> list[dict]:
            nonlocal cut
            if pairs:
                encoded = self.tokenizer([a for a, _ in chunk], [b for _, b in chunk], truncation="longest_first",
                                         max_length=self.max_length)
            else:
                encoded = self.tokenizer(list(chunk), truncation=True, max_length=self.max_length)
            # a fast tokenizer keeps what truncation cut off; a slow one (no encodings) cannot say
            cut += sum(bool(e.overflowing) for e in encoded.encodings or [])
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
            return [{k: encoded[k][i] for k in keys} for i in range(len(chunk))]

        features = in_chunks(inputs, tokenized)
        if cut:
            say_cut(source, self.max_length, f"{cut} of {len(inputs)} {'text pairs' if pairs else 'texts'}",
                    "their ends are not read")
        return features

    def encode_words(self, words: list[list[str]]) -> list[tuple[dict, list[int | None]]]:
        """Pre-split words -> (features, the word index of each token, None for special tokens).

        Raises:
            StropError: the tokenizer cannot map tokens back to words (a slow, Python-only tokenizer).
        """
        if not getattr(self.tokenizer, "is_fast", False):
            raise StropError("token classification needs a fast tokenizer (one with a tokenizer.json) to align "
                             "labels with subwords; this model's tokenizer is a slow one")

        def tokenized(chunk: list) -> list[tuple[dict, list[int | None]]]:
            encoded = self.tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=self.max_length)
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
            return [({k: encoded[k][i] for k in keys}, encoded.word_ids(i)) for i in range(len(chunk))]

        return in_chunks(words, tokenized)

    def forward(self, level: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        # The text's own positions: prompt tuning (method.name=prompt_tuning) puts learned tokens before them.
        states = states[:, states.shape[1] - input_ids.shape[1]:]
        if level == "token":
            return states  # (batch, seq, hidden)
        if self.pooling == "mean":
            return masked_mean(states, attention_mask)  # (batch, hidden)
        return states[:, 0]  # the first token: the head's pooler (pooling=pooler) or the vector itself (cls)

    def layers(self) -> list[nn.Module]:
        """Embeddings, then the transformer blocks (the module list as long as the model's layer count)."""
        # The embeddings block (words, positions, types and their norm) where the model has one, else the table
        embeddings = getattr(self.model, "embeddings", None)
        return [embeddings if isinstance(embeddings, nn.Module) else self.model.get_input_embeddings(),
                *transformer_blocks(self.model)]

    def save(self, directory: Path) -> dict[str, Any]:
        with quiet_transformers():
            self.model.config.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        described = {"backbone": "text", "pooling": self.pooling, "max_length": self.max_length}
        blocks = attention_blocks(self.model)
        if blocks and blocks[0][0].num_attention_heads != self.model.config.num_attention_heads:
            described["attention_heads"] = blocks[0][0].num_attention_heads  # strop prune --structure heads
        return described


@contextmanager
def quiet_transformers():
    """Silences transformers' load reports and its per-file progress bars; strop reports progress itself."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# --- attention heads removed (strop prune --structure heads) ---------------------------------------------

def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks: the module list as long as its layer count."""
    count = getattr(model.config, "num_hidden_layers", None)
    blocks = next((m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count), None)
    if blocks is None:
        raise StropError(f"cannot find the layer list of {type(model).__name__}")
    return blocks


def attention_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Linear]]:
    """(self-attention, its output projection) of every block in the BERT family's layout
    (`attention.self.query/key/value`, `attention.output.dense`: BERT, RoBERTa, ELECTRA, MiniLM, XLM-R);
    [] for a model of another layout."""
    found = []
    for block in transformer_blocks(model):
        attention = getattr(getattr(block, "attention", None), "self", None)
        output = getattr(getattr(getattr(block, "attention", None), "output", None), "dense", None)
        projections = [getattr(attention, name, None) for name in ("query", "key", "value")]
        if (all(isinstance(p, nn.Linear) for p in projections) and isinstance(output, nn.Linear)
                and hasattr(attention, "attention_head_size")):
            found.append((attention, output))
    return found if len(found) == len(transformer_blocks(model)) else []


def keep_attention_heads(model: nn.Module, kept: list) -> None:
    """Keeps only the heads `kept[i]` (indices, in order) of block i's self-attention, in place: their rows of
    the query, key and value projections and their columns of the output projection. Each head keeps its
    size (the scaling of its dot products is unchanged); the attention reshapes by head size, so it runs
    with fewer heads as it is."""
    for (attention, output), heads in zip(attention_blocks(model), kept):
        size = attention.attention_head_size
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])
        for name in ("query", "key", "value"):
            projection = getattr(attention, name)
            projection.weight = nn.Parameter(projection.weight.detach()[index].clone())
            if projection.bias is not None:
                projection.bias = nn.Parameter(projection.bias.detach()[index].clone())
            projection.out_features = len(index)
        output.weight = nn.Parameter(output.weight.detach()[:, index].clone())
        output.in_features = len(index)
        attention.num_attention_heads, attention.all_head_size = len(heads), len(index)


def saved_attention_heads(source: str) -> int | None:
    """The heads kept in each block where `source` is a strop model folder whose heads were pruned."""
    info_file = Path(source) / "strop.json"
    if not info_file.is_file():
        return None
    return json.loads(info_file.read_text(encoding="utf-8")).get("attention_heads")


def encoder_from_config(folder: str, heads: int | None) -> nn.Module:
    """The encoder that `folder`'s config.json describes, with random weights, cut to `heads` attention heads
    in each block where given (strop prune --structure heads: the config cannot say so)."""
    from transformers import AutoConfig, AutoModel

    with quiet_transformers():
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    if heads:
        keep_attention_heads(model, [range(heads)] * len(attention_blocks(model)))
    return model


def encoder_with_heads(folder: str, heads: int) -> nn.Module:
    """The encoder of a strop model folder whose blocks keep `heads` attention heads each: built from its
    config, cut to that many heads, then its body weights loaded (plain `from_pretrained` would refuse the
    shapes).

    Raises:
        ValueError: the weights do not fit (a damaged folder).
    """
    from safetensors.torch import load_file

    model = encoder_from_config(folder, heads)
    prefix = f"{model.base_model_prefix}."
    saved = {k[len(prefix):]: v for k, v in load_file(str(Path(folder) / "model.safetensors")).items()
             if k.startswith(prefix)}
    missing, _ = model.load_state_dict(saved, strict=False)  # the task head's tensors are strop's to load
    missing = [k for k in missing if not k.startswith("pooler.")]  # a pooler the head did not use is not saved
    if missing:
        raise ValueError(f"its model.safetensors lacks {prefix}{missing[0]}")
    return model

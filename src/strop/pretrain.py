"""`strop pretrain --data domain.txt`: continued masked-language-model pretraining on unlabelled domain text
(Gururangan et al. 2020, "Don't Stop Pretraining"), then `strop fit model.name=<output>/model` starts from it.
With model.name=mlp and a table of numeric columns, an autoencoder instead (`pretrain_vectors`).

It runs in strop's one training loop (checkpoints, resume, metrics.jsonl): BERT's masking (Devlin et al. 2019:
15% of the tokens chosen; of those 80% become [MASK], 10% a random token, 10% stay) drawn afresh for each
training batch, and drawn once per text (seeded) for the validation lines, so the validation loss compares
epochs. The model is the config's `model.name` with its masked-language-model head (a new one where the
checkpoint has none, e.g. a sentence-transformers model); <output>/model is an ordinary transformers folder
(safetensors, tokenizer), with the source's sentence-transformers pooling files where it has them, so fit pools
as the source model did.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from strop.backbones.text import TOKENIZE_CHUNK
from strop.data.tables import read_text, split_lines
from strop.errors import StropError
from strop.tasks.base import Task
from strop.train.checkpoint import keeps_callers_random_state

MASK_SHARE = 0.15
VALIDATION_SHARE, VALIDATION_MAX = 0.05, 2000  # texts (a long one's windows each counted) held out to validate on
POOLING_FILES = ("modules.json", "1_Pooling")  # a sentence-transformers model's pooling, kept with the weights
# Suffixes of files that hold a table or records, not one text a line: read as lines, their syntax would be trained on
TABLE_LIKE = (".json", ".ndjson", ".xlsx", ".xls", ".ods", ".feather", ".arrow", ".orc", ".avro", ".pkl", ".pickle",
              ".npy", ".npz", ".h5", ".hdf5")
COMPRESSED = (".gz", ".zip", ".bz2", ".xz", ".zst", ".7z")


def read_lines(path: str | Path, what: str = "--data", at_least: int = 2,
               why: str = "pretraining needs at least 2 (one is held out to validate on)") -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; `what` names the file in messages (the option that
    gave it), `why` says why it needs `at_least` lines.

    Raises:
        StropError: the file is missing, not UTF-8 (UTF-16 among them: the message says how to convert it), or
            has fewer than `at_least` texts.
    """
    path = Path(path)
    if path.is_dir():
        raise StropError(f"{what} {path} is a folder: give a text file with one text per line (or a table)")
    if not path.is_file():
        raise StropError(f"{what} {path}: no such file; give a text file with one text per line")
    # read as the tables are: a byte-order mark (as Notepad writes) is no part of the first text, and a UTF-16 file
    # is named as such with the command that converts it, not taken as text with a NUL between its letters
    lines = [line.strip() for line in split_lines(read_text(path, what))]
    lines = [line for line in lines if line]
    if len(lines) < at_least:
        raise StropError(f"{what} {path} has {len(lines)} non-blank line{'' if len(lines) == 1 else 's'}; {why}")
    return lines


def read_domain_texts(path: str | Path, data_cfg) -> list[str]:
    """The texts to pretrain on: a table's data.text_column (CSV, TSV, JSONL, Parquet: the files `strop fit`
    reads, whose header and quoting are no part of any text), or the lines of any other file.

    Raises:
        StropError: an unreadable file, a table without the text column or with missing texts, or fewer than
            two texts.
    """
    from strop.data.inputs import read_texts
    from strop.data.tables import READERS, read_table, shown_columns, table_suffix
    from strop.tasks import CONLL_SUFFIXES

    if Path(path).suffix.lower() in CONLL_SUFFIXES:  # its lines are a word and its tags, not texts
        raise StropError(f"--data {path} is a CoNLL file (a word and its tags a line): pretraining reads whole "
                         "texts; give a .txt file of one text per line, or a table with a text column")
    if table_suffix(Path(path)) not in READERS:
        refuse_unreadable_suffix(Path(path), READERS)
        return read_lines(path)
    frame = read_table(path, "--data")
    if data_cfg.text_column not in frame.columns:  # named here: --data's usual fix, --text-column, is not pretrain's
        raise StropError(f"--data: column '{data_cfg.text_column}' not found in {Path(path).name}; columns found: "
                         f"{shown_columns(frame.columns)}. Name the text column with data.text_column=<column>, "
                         "or give a .txt file of one text per line")
    texts = read_texts(frame, path, data_cfg, "--data", None)
    if len(texts) < 2:
        raise StropError(f"--data {path} has {len(texts)} text(s); pretraining needs at least 2 (one is held out "
                         "to validate on)")
    return texts


def refuse_unreadable_suffix(path: Path, readers) -> None:
    """Refuses a file that is not a table strop reads (`readers`) and would be misread as lines of text: a
    compressed one (its bytes are not text) or another table format (its syntax would be trained on).

    Raises:
        StropError: such a file, with what to give instead.
    """
    suffix = path.suffix.lower()
    if suffix in COMPRESSED:
        raise StropError(f"--data {path} is compressed ({suffix}): pretraining reads a plain text file of one text "
                         "per line, or a table (.csv, .tsv, .jsonl, which may be compressed with gzip, bz2 or xz: "
                         "texts.csv.gz); decompress it first")
    if suffix in TABLE_LIKE:  # worded as strop fit refuses data.train=x.json (strop.data.tables.read_table)
        hint = "; JSON lines (as Dataset.to_json writes) are read from a .jsonl file" if suffix == ".json" else ""
        raise StropError(f"--data: cannot read '{path.name}': use one of .txt (one text a line), "
                         f"{', '.join(readers)} (got '{path.suffix}'){hint}")


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of (batch, seq) token ids: returns (masked ids, labels); labels are -100 where no
    prediction is asked (unchosen tokens, special tokens, padding, all marked in `special`). Every row with a
    token that can be chosen has at least one chosen."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_SHARE) & ~special
    unchosen = ~chosen.any(dim=1) & (~special).any(dim=1)
    if unchosen.any():  # a short text (3 tokens: none chosen 61% of the time) would train and measure nothing
        pick = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0).argmax(dim=1)
        chosen[unchosen, pick[unchosen]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = torch.randint(vocab_size, input_ids.shape, generator=generator)[swap]
    return masked, labels


class MaskingCollate:
    """Pads a batch and masks it: afresh from the global RNG (seeded by the run, restored on resume) for
    training; for validation features (which carry "seed"), from each text's own seed, the same every epoch."""

    def __init__(self, tokenizer, pad_collate):
        self.tokenizer, self.pad_collate = tokenizer, pad_collate
        self.vocab_size = len(tokenizer)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        seeds = [f.get("seed") for f in features]
        batch = self.pad_collate([model_inputs(f) for f in features])
        special = (batch["attention_mask"] == 0) | torch.isin(batch["input_ids"],
                                                               torch.tensor(self.tokenizer.all_special_ids))
        if seeds[0] is None:
            batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], special,
                                                              self.tokenizer.mask_token_id, self.vocab_size)
            return batch
        rows = [mask_tokens(ids[None], spec[None], self.tokenizer.mask_token_id, self.vocab_size,
                            torch.Generator().manual_seed(seed))
                for ids, spec, seed in zip(batch["input_ids"], special, seeds)]
        batch["input_ids"] = torch.cat([r[0] for r in rows])
        batch["labels"] = torch.cat([r[1] for r in rows])
        return batch


def compact_tokens(feature: dict) -> dict:
    """A tokenized text as pretraining holds it in memory: its token ids as an int32 array (200,000 lines of
    SST-2, 25 tokens each, took 0.8 KB a line against 2.1 KB as the tokenizer's Python lists), its token type
    ids only where not all 0 (a single text's are, the model's default); the attention mask, all
    ones before padding, is made per batch (`model_inputs`)."""
    kept = {"input_ids": np.asarray(feature["input_ids"], dtype=np.int32)}
    if any(feature.get("token_type_ids") or ()):
        kept["token_type_ids"] = np.asarray(feature["token_type_ids"], dtype=np.int8)
    return kept


def model_inputs(feature: dict) -> dict[str, torch.Tensor]:
    """A `compact_tokens` feature's model inputs as the collate pads them: int64 ids and type ids, a mask of ones."""
    ids = torch.as_tensor(np.asarray(feature["input_ids"]), dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in feature:
        inputs["token_type_ids"] = torch.as_tensor(np.asarray(feature["token_type_ids"]), dtype=torch.long)
    return inputs


class MaskedLM(nn.Module):
    """A transformers masked-language model as the loop trains it: logits (batch, seq, vocab) from token ids.
    `body` (not a submodule: its parameters are the model's own) gives the loop the encoder's layer list."""

    level = "token"

    def __init__(self, model: nn.Module, body):
        super().__init__()
        self.model = model
        object.__setattr__(self, "body", body)
        self.new_parameters: set[int] = set()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        extra = {k: v for k, v in inputs.items() if k == "token_type_ids"}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


class MaskedLMTask(Task):
    """The loss and metrics of masked-language modelling, as the loop sees a task: cross-entropy over the
    masked tokens; validation loss and perplexity over all masked tokens of the validation lines."""

    name = "masked_lm"
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "perplexity")
    lead_metric = "loss"
    minimised = frozenset({"loss", "perplexity"})

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # The mean over the masked tokens; 0 for a batch of short texts where none was chosen (not NaN).
        summed = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return summed / (labels != -100).sum().clamp(min=1)

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        # Per text: (summed loss over its masked tokens, their count): small, unlike the logits.
        losses = F.cross_entropy(logits.float().transpose(1, 2), batch["labels"], ignore_index=-100,
                                 reduction="none")  # (batch, seq)
        counts = (batch["labels"] != -100).sum(dim=1)
        return [np.array([s, c], dtype=np.float64) for s, c in zip(losses.sum(dim=1).tolist(), counts.tolist())]

    def targets(self, batch: dict) -> list:
        return [0] * len(batch["labels"])

    def metrics(self, outputs: list, targets: list) -> dict[str, Any]:
        total = np.sum(outputs, axis=0) if outputs else np.zeros(2)
        loss = float(total[0] / max(total[1], 1))
        return {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0)))}


def maskable_features(body, lines: list[str], data, model_name: str,
                      show: bool = False) -> tuple[list[dict], list[int], int]:
    """The tokenized texts that hold a token the masking can choose (not special, not unknown: `mask_tokens`),
    the line each comes from, and how many lines hold none: such a text trains nothing, and a validation of those
    alone would score a loss of 0. A text is read whole: one longer than the model reads at once is cut into
    consecutive windows of at most body.max_length tokens (`windows`), each a text to train on. Tokenized a chunk
    at a time (the tokenizer's working memory for all of a large corpus at once is several times its token ids'),
    with progress where `show`; each kept `compact_tokens`.

    Raises:
        StropError: fewer than two texts hold one.
    """
    from strop.progress import progress

    special = set(body.tokenizer.all_special_ids)
    features, sources = [], []
    for start in progress(range(0, len(lines), TOKENIZE_CHUNK), f"tokenizing {len(lines)} texts", show, unit="chunk"):
        for feature, line in zip(*windows(body, lines[start:start + TOKENIZE_CHUNK])):
            if any(t not in special for t in feature["input_ids"]):
                features.append(compact_tokens(feature))
                sources.append(start + line)
    texts = len(set(sources))
    if not texts:
        raise StropError(f"--data {data}: none of its {len(lines)} texts has a token that can be masked: after "
                         f"tokenizing, every token is special or unknown to {model_name}'s tokenizer (e.g. emoji its "
                         "vocabulary lacks); give texts in a language and script the model reads")
    if texts < 2:  # one text is held out to validate on: none would be left to train on
        others = (f" (in the others every token is special or unknown to {model_name}'s tokenizer, e.g. emoji its "
                  "vocabulary lacks)" if len(lines) > 1 else "")
        raise StropError(f"--data {data}: only 1 of its {len(lines)} texts has a token that can be masked{others}; "
                         "pretraining needs at least 2 (one is held out to validate on): give more texts in a language "
                         "and script the model reads")
    return features, sources, len(lines) - texts


def windows(body, texts: list[str]) -> tuple[list[dict], list[int]]:
    """The texts' token ids in consecutive windows of at most body.max_length tokens, each with the model's
    special tokens (a long document trains on all of its text, not on its first max_length tokens alone), and the
    text each window comes from: a fast tokenizer's overflow; a slow (Python-only) one, which gives no overflow
    for a batch, tokenizes each text whole and its ids are cut into windows here."""
    tokenizer = body.tokenizer
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(list(texts), truncation=True, max_length=body.max_length, return_overflowing_tokens=True)
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        return ([{k: encoded[k][i] for k in keys} for i in range(len(encoded["input_ids"]))],
                list(encoded["overflow_to_sample_mapping"]))
    room = max(1, body.max_length - tokenizer.num_special_tokens_to_add(pair=False))
    features, sources = [], []
    for text, ids in enumerate(tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]):
        for start in range(0, max(len(ids), 1), room):
            features.append({"input_ids": tokenizer.build_inputs_with_special_tokens(ids[start:start + room])})
            sources.append(text)
    return features, sources


def hold_out(features: list[dict], seed: int, data, sources: list[int] | None = None) -> tuple[list[int], list[int]]:
    """The rows to train on and the rows held out to validate on: VALIDATION_SHARE of the rows (at least one, at
    most VALIDATION_MAX), reproducibly for a seed. A row is a text or one window of a long one (`sources`: the
    text each row comes from; None: each its own), and a text goes to one side with all its windows and every text
    it shares a window with (a repeat of it, as `strop fit` splits repeats; a common header), so that the
    validation loss never scores text that trained. Texts are taken in a seeded order, each where its rows still fit the share; with no
    repeats and no windows, the first rows of a seeded permutation.

    Raises:
        StropError: fewer than two different texts (as the model reads them).
    """
    from strop.data.splits import distinct_inputs, rows_of

    sources = list(range(len(features))) if sources is None else sources
    # One group a text and its windows, joined with every text it shares a window with (a repeated text, a common
    # header): the validation loss never scores a window that trained.
    group: dict[int, int] = {}

    def root(text: int) -> int:
        while group.setdefault(text, text) != text:
            group[text] = group[group[text]]
            text = group[text]
        return text

    first_text_of = {}
    for feature, source in zip(features, sources):
        other = first_text_of.setdefault(np.asarray(feature["input_ids"], dtype=np.int32).tobytes(), source)
        group[root(source)] = root(other)
    first, of_row = distinct_inputs([root(source) for source in sources])
    if len(first) < 2:
        raise StropError(f"--data {data}: its {len(set(sources))} texts are one text as the model reads them (the "
                         "same tokens, or windows they share); pretraining needs at least 2 different ones (one is "
                         "held out to validate on): give different texts")
    rows_of_text = np.bincount(of_row)
    wanted = max(1, min(VALIDATION_MAX, int(round(VALIDATION_SHARE * len(features)))))
    order = np.random.default_rng(seed).permutation(len(first))
    held, count = [], 0
    for text in order:
        if count + rows_of_text[text] <= wanted:
            held.append(text)
            count += rows_of_text[text]
        if count == wanted:
            break
    if not held:  # every text repeats more often than the share: the one with the fewest rows, first in the order
        held = [min(order, key=lambda text: rows_of_text[text])]
    chosen = set(held)
    kept = [text for text in order if text not in chosen]
    return rows_of(kept, of_row), rows_of(held, of_row)


def check_same_rows(started: dict | None, rows: dict, long_texts: int, root: Path, max_length: int) -> None:
    """Refuses to resume a run whose texts read now as other rows than when it started (the same file, read by an
    earlier strop that cut a text longer than max_length tokens to its first max_length, where it is now read
    whole, in windows): its epochs would train and validate on two sets of texts. `started`: the rows the run
    recorded; None for a run from before they were recorded, which read as now where no text is that long."""
    if started == rows or (started is None and not long_texts):
        return
    was = (f"{started['train']} texts to train on and {started['validation']} held out" if started else
           f"its {long_texts} text(s) longer than {max_length} tokens cut to their first {max_length}")
    raise StropError(f"cannot resume {root}: it started with {was}, and --data now reads as {rows['train']} and "
                     f"{rows['validation']} ({long_texts} text(s) longer than {max_length} tokens read whole, in "
                     "windows); its epochs would train on two sets of texts: start a new run in another --output")


@keeps_callers_random_state
def pretrain(config=None, overrides: list[str] = (), data: str | Path | None = None,
             output: str | Path | None = None) -> Path:
    """Masked-language-model training of the config's model on the lines of `data`; returns the output folder,
    whose model/ `strop fit model.name=...` starts from. train.*, optim.* and model.max_length apply.

    Raises:
        StropError: a bad file, config or model, or an output folder that holds another run.
    """
    from transformers import AutoModelForMaskedLM

    from strop.backbones.text import (TextBackbone, check_vocabulary, load_tokenizer, quiet_transformers,
                                      refuse_pickle_only, tokens_read)
    from strop.config import load_config
    from strop.fit import _open_run_dir, _resolve_precision, enable_gradient_checkpointing, refuse_early
    from strop.index import record_run
    from strop.methods.base import Method
    from strop.model import resolve_source
    from strop.runs import (atomic_write_json, atomic_write_text, check_same_data, data_fingerprints, library_versions,
                            note_other_versions, remove_failed_run)
    from strop.tasks.base import pad_collate
    from strop.train.batch_size import resolve_batch_sizes
    from strop.train.loop import make_accelerator, train

    if data is None:
        raise StropError("give the unlabelled data with --data FILE (text: one text per line, or a table with "
                         "data.text_column; model.name=mlp: a table of numeric columns)")
    cfg = load_config(config, overrides)
    source = resolve_source(cfg.model.name)
    if source.kind == "mlp":
        return pretrain_vectors(cfg, data, output)
    if source.kind == "run":  # a strop run: its base is what continued pretraining starts from
        base = (source.info or {}).get("base_model")
        raise StropError(f"model.name={cfg.model.name} is a strop run (a model with its task head): strop pretrain "
                         "continues a pretrained text model, then strop fit puts the task head on it; give "
                         + (f"the run's base model, model.name={base}" if base else "the model the run started from"))
    if source.kind != "text":
        raise StropError(f"model.name={cfg.model.name}: strop pretrain continues a transformers text model (a "
                         "bundled alias, a hub id or a model folder), or trains an MLP autoencoder (mlp)")
    refuse_methods(cfg)
    cfg, unused = without_unused_data_settings(cfg)
    if unused and not cfg.train.quiet:
        print(f"not used by strop pretrain, which reads the texts of --data alone and holds out "
              f"{VALIDATION_SHARE:.0%} of them to validate on: {', '.join(unused)} (left out of its config.yaml)")
    # data.train records --data (as the vector path's fit does), so that resuming with other data is refused
    cfg = replace(cfg, output_dir=str(output) if output is not None else cfg.output_dir,
                  data=replace(cfg.data, train=str(data)), train=replace(cfg.train, metric="auto", imbalance="none"))
    existed = cfg.output_dir is not None and Path(cfg.output_dir).exists()
    option = output_option(output, cfg)
    refuse_early(cfg, option)
    lines = read_domain_texts(data, cfg.data)
    refuse_pickle_only(source.location)
    tokenizer = load_tokenizer(source.location, cfg.model.trust_remote_code)
    if tokenizer.mask_token_id is None:
        raise StropError(f"model.name={cfg.model.name}: its tokenizer has no mask token, so it cannot be trained as "
                         "a masked-language model")
    from accelerate.utils import set_seed

    set_seed(cfg.train.seed)
    with quiet_transformers():
        try:
            model, loading = AutoModelForMaskedLM.from_pretrained(source.location, use_safetensors=True,
                                                                  trust_remote_code=cfg.model.trust_remote_code,
                                                                  output_loading_info=True)
        except (OSError, ValueError, KeyError) as error:
            raise StropError(f"model.name={cfg.model.name}: cannot be loaded as a masked-language model "
                             f"({str(error).splitlines()[0]})") from None
    check_vocabulary(model.base_model, tokenizer, cfg.model.name)
    limit = tokens_read(model.base_model, tokenizer)  # past the position embeddings a long line would crash
    body = TextBackbone(model.base_model, tokenizer, "cls",
                        cfg.model.max_length if limit is None else min(cfg.model.max_length, limit))
    features, sources, unmaskable = maskable_features(body, lines, data, cfg.model.name, show=not cfg.train.quiet)
    kept, held = hold_out(features, cfg.train.seed, data, sources)
    windows_a_text = Counter(sources)
    long_texts = sum(n > 1 for n in windows_a_text.values())  # read in several windows
    train_features = [features[i] for i in kept]
    val_features = [{**features[i], "seed": int(i)} for i in held]
    cfg = _resolve_precision(cfg)
    run, cfg, lock = _open_run_dir(cfg, "pretrain", option)
    created = not cfg.train.resume
    saved = False  # the summary written: the run is complete from then on
    try:
        accelerator = make_accelerator(cfg)
        collate = MaskingCollate(tokenizer, lambda f: pad_collate(f, body.pad_values))
        wrapped, method = MaskedLM(model, body), Method(cfg.method)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(wrapped)
        texts = data_fingerprints(train=str(data))  # a file changed in place reads as the same --data
        rows = {"train": len(train_features), "validation": len(val_features)}
        provenance = {"data": texts, "rows": rows, "versions": library_versions()}
        if cfg.train.resume and run.provenance.is_file():  # refused before the batch sizes are measured
            recorded = json.loads(run.provenance.read_text(encoding="utf-8"))
            check_same_data(recorded.get("data"), texts,
                            f"the run in {run.root}", "resume with the texts it started with, or start a new run in "
                            "another --output", option="--data", mixed="its epochs would train on two sets of texts")
            check_same_rows(recorded.get("rows"), rows, long_texts, run.root, body.max_length)
            note_other_versions(run.root, recorded, provenance, accelerator.is_main_process)
        cfg = resolve_batch_sizes(cfg, wrapped, MaskedLMTask(), method, train_features, val_features, collate,
                                  accelerator.device, show=not cfg.train.quiet and accelerator.is_main_process)
        if accelerator.is_main_process:
            atomic_write_text(run.config, cfg.to_yaml(), "the config")
            atomic_write_json(run.provenance, provenance, "the provenance")
            if not cfg.train.quiet:
                print(f"strop pretrain -> {run.root}\n  {len(train_features)} texts to train on, {len(val_features)} "
                      f"held out; masked-language model {cfg.model.name}")
                if long_texts:
                    print(f"  note: {long_texts} text(s) longer than {body.max_length} tokens are read whole, in "
                          f"{sum(n for n in windows_a_text.values() if n > 1)} windows of at most {body.max_length} "
                          "tokens, each a text to train on")
                if unmaskable:
                    print(f"  note: {unmaskable} text(s) left out: none of their tokens can be masked (each is "
                          "special or unknown to the tokenizer, e.g. emoji its vocabulary lacks)")
                if loading["missing_keys"] and not cfg.train.resume:  # the encoder loaded: what is missing is the head
                    print(f"  note: {cfg.model.name} has no masked-language head in its weights (a sentence-embedding "
                          "model keeps its encoder alone): a new one starts from random values, so the perplexity "
                          "starts high and falls as that head learns; the encoder is what strop fit starts from")
            record_run(run.root, "running")  # the runs folder's index (strop runs), as a fit's
        state, final, _ = train(wrapped, MaskedLMTask(), method, train_features, val_features, collate,
                                body.input_keys, cfg, run, accelerator)
        if accelerator.is_main_process:
            save_pretrained(accelerator.unwrap_model(wrapped).model, tokenizer, source.location, run.model)
            atomic_write_json(run.summary, {"task": "masked_lm", "best_epoch": state.best_epoch,
                                            "epochs_run": state.epoch, "steps": state.step,
                                            "train_seconds": round(state.train_seconds, 3), "validation": final,
                                            "train_texts": len(train_features), "validation_texts": len(val_features),
                                            # texts longer than max_length, each read in several of those windows
                                            "texts_in_windows": long_texts},
                              "the summary")
            saved = True
            record_run(run.root, "complete")
            if not cfg.train.keep_checkpoint:  # as fit: a complete run cannot resume, its checkpoint only takes space
                shutil.rmtree(run.checkpoints, ignore_errors=True)
            if not cfg.train.quiet:
                print(f"validation loss {final['loss']:.4f} (perplexity {final['perplexity']:.2f}); the model is in "
                      f"{run.model}: strop fit model.name={run.model} ...")
    except BaseException as error:
        if saved:  # complete once its summary is written, as a fit: nothing to resume or remove
            if isinstance(error, KeyboardInterrupt) and not cfg.train.quiet:
                print(f"interrupted after the run was saved: {run.root} is complete", file=sys.stderr)
            raise
        if created and not run.last_checkpoint.exists():
            remove_failed_run(run.root, existed)
        if isinstance(error, KeyboardInterrupt) and not cfg.train.quiet:  # as fit says it
            print(f"interrupted; continue the run with: strop pretrain {run.config} --data {data} train.resume=true"
                  if run.last_checkpoint.exists() else "interrupted before the run's first checkpoint: nothing was "
                  "kept; run the same command again to start over", file=sys.stderr)
        record_run(run.root, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed", error)
        raise
    finally:
        if lock is not None:
            lock.close()
    return run.root


PRETRAIN_DATA_KEYS = ("train", "text_column")  # the data settings text pretraining reads


def without_unused_data_settings(cfg):
    """The config with the data settings text pretraining does not read put back to their defaults (a fit's
    config reused for pretraining: its validation file, pool, augmentation), and their keys: config.yaml then
    records only what the run used."""
    from dataclasses import fields

    defaults = type(cfg.data)()
    unused = [f.name for f in fields(cfg.data)
              if f.name not in PRETRAIN_DATA_KEYS and getattr(cfg.data, f.name) != getattr(defaults, f.name)]
    kept = replace(defaults, **{key: getattr(cfg.data, key) for key in PRETRAIN_DATA_KEYS})
    return replace(cfg, data=kept), [f"data.{key}" for key in unused]


def refuse_methods(cfg) -> None:
    """Refuses method settings that text pretraining cannot honour: it trains the whole model (the masked-language
    head predicts from every layer's work), with the loop's default method.

    Raises:
        StropError: method.name other than full or auto, or method.freeze_layers other than auto or 0.
    """
    if cfg.method.name not in ("full", "auto"):
        raise StropError(f"method.name={cfg.method.name}: strop pretrain trains the whole model (method full); leave "
                         "method.name unset, and adapt with that method in the strop fit that starts from the "
                         "pretrained model")
    if cfg.method.freeze_layers not in ("auto", 0):
        raise StropError(f"method.freeze_layers={cfg.method.freeze_layers}: strop pretrain trains every layer; "
                         "leave method.freeze_layers unset (freeze layers in the strop fit that follows instead)")


def output_option(output: str | Path | None, cfg) -> str:
    """How the run's folder was given, as messages name it: output_dir=... (an override) or --output (the option,
    or neither: the option is what strop pretrain --help shows). `cfg`: with --output made its output_dir."""
    return "output_dir" if output is None and cfg.output_dir is not None else "--output"


def pretrain_vectors(cfg, data: str | Path, output: str | Path | None) -> Path:
    """model.name=mlp: an autoencoder on the rows of the table `data` (task reconstruction, an ordinary fit:
    see strop.tasks.reconstruction); returns the run, whose model/ `strop fit model.name=...` starts from."""
    from strop.fit import fit, refuse_early
    from strop.tasks import TASKS

    # Read once here so that what is wrong with the file (missing, empty, unreadable, a column that is not
    # numbers) is named as the user gave it, --data, not as the fit below reads it, data.train.
    rows = TASKS.get("reconstruction").read(data, cfg.data, "vector", "--data")
    if len(rows) < 2:
        raise StropError(f"--data {data} has {len(rows)} row; an autoencoder needs at least 2 to learn from")
    cfg = replace(cfg, task=replace(cfg.task, name="reconstruction"), data=replace(cfg.data, train=str(data)),
                  output_dir=str(output) if output is not None else cfg.output_dir)
    # the folder's faults named as this command was given it, before the fit below checks it again as output_dir
    refuse_early(cfg, output_option(output, cfg))
    run = fit(cfg)
    if not cfg.train.quiet:
        print(f"the pretrained MLP is in {run / 'model'}: strop fit model.name={run / 'model'} ...")
    return run


def save_pretrained(model: nn.Module, tokenizer, source: str, folder: Path) -> None:
    """The model (with its masked-language-model head) and tokenizer as a transformers folder, written
    atomically, with the source's sentence-transformers pooling files where it has them."""
    from strop.backbones.text import quiet_transformers
    from strop.runs import staged

    with staged(folder, "the pretrained model") as tmp, quiet_transformers():  # no shard-writing bar
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in POOLING_FILES:
            path = Path(source) / name
            if path.is_dir():
                shutil.copytree(path, tmp / name)
            elif path.is_file():
                shutil.copy2(path, tmp / name)

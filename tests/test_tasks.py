"""Every registered task, end to end on tiny random backbones: fit two steps, save, reload with strop.load,
predict and evaluate. A task added to the registry is added here; it needs a data maker in DATA_MAKERS."""

import json
import re
import random

import numpy as np
import pytest

import strop
from conftest import interrupt_after_checkpoint, NEGATIVE, NEUTRAL, POSITIVE, make_texts, write_csv
from strop.errors import StropError
from strop.tasks import TASKS

# The tasks on the tiny BERT; image tasks are tested on tiny timm models in tests/test_image_classification.py.
TEXT_TASKS = [name for name in TASKS.names() if "text" in TASKS.get(name).input_kinds]


def _classification(tmp_path):
    return [write_csv(tmp_path / f"{s}.csv", make_texts(n, seed)) for s, n, seed in (("train", 40, 1), ("dev", 20, 2))], []


def _pairs(tmp_path):
    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            same = i % 2 == 0
            a = rng.choice(POSITIVE)
            b = a if same else rng.choice(NEGATIVE)
            out.append((f"the film was {a}", f"it was {b}", "same" if same else "different"))
        return out
    header = ("text", "text_pair", "label")
    return [write_csv(tmp_path / f"{s}.csv", rows(n, seed), header) for s, n, seed in (("train", 40, 1), ("dev", 20, 2))], []


def _multilabel(tmp_path):
    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            labels = {"good"} if i % 3 == 0 else {"bad"} if i % 3 == 1 else {"good", "plot"}
            words = rng.sample(NEUTRAL, 3) + [rng.choice(POSITIVE if "good" in labels else NEGATIVE)]
            out.append((" ".join(words), "|".join(sorted(labels))))
        return out
    return [write_csv(tmp_path / f"{s}.csv", rows(n, seed)) for s, n, seed in (("train", 40, 1), ("dev", 21, 2))], []


def _regression(tmp_path):
    def rows(n, seed):
        rng = random.Random(seed)
        return [(" ".join(rng.sample(POSITIVE, k) + rng.sample(NEUTRAL, 3)), k + rng.random()) for k in
                [rng.randint(0, 4) for _ in range(n)]]
    return [write_csv(tmp_path / f"{s}.csv", rows(n, seed)) for s, n, seed in (("train", 40, 1), ("dev", 20, 2))], []


def _tokens(tmp_path):
    def sentences(n, seed):
        rng = random.Random(seed)
        lines = []
        for _ in range(n):
            words = [(w, "O") for w in rng.sample(NEUTRAL, 3)]
            words.insert(rng.randint(0, 3), ("Paris", "I-LOC"))
            words.insert(rng.randint(0, 4), ("Anna", "I-PER"))
            words.insert(rng.randint(0, 5), ("Smith", "I-PER"))
            lines += [f"{w} NN O {t}" for w, t in words] + [""]
        return "-DOCSTART- -X- -X- O\n\n" + "\n".join(lines)
    paths = []
    for s, n, seed in (("train", 30, 1), ("dev", 10, 2)):
        (tmp_path / f"{s}.conll").write_text(sentences(n, seed))
        paths.append(tmp_path / f"{s}.conll")
    return paths, []


DATA_MAKERS = {"text_classification": _classification, "pair_classification": _pairs,
               "multilabel_classification": _multilabel, "regression": _regression,
               "token_classification": _tokens}

PREDICT_INPUTS = {"text_classification": ["great fun", "awful film"],
                  "pair_classification": [("the film was good", "it was good")],
                  "multilabel_classification": ["the film was great"], "regression": ["great good fine"],
                  "token_classification": ["Anna Smith was in Paris .", ["Paris", "is", "nice"]]}


def _fit(task, tiny_model_dir, tmp_path, method="full", extra=()):
    assert task in DATA_MAKERS, f"task {task} is registered but has no data maker in tests/test_tasks.py"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (train, dev), overrides = DATA_MAKERS[task](tmp_path)
    return strop.fit(None, [f"task.name={task}", f"model.name={tiny_model_dir}", f"data.train={train}",
                            f"data.validation={dev}", f"output_dir={tmp_path / ('run-' + method)}",
                            "train.epochs=2", "train.batch_size=16", "optim.lr=1e-3", "train.quiet=true",
                            "train.mixed_precision=no", "model.max_length=32", f"method.name={method}",
                            *overrides, *extra]), dev


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_fits_saves_loads_predicts_and_evaluates(task, tiny_model_dir, tmp_path, monkeypatch,
                                                            capsys):
    from strop.evaluate.scoring import evaluate_file

    run, dev = _fit(task, tiny_model_dir, tmp_path)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    task_cls = TASKS.get(task)
    assert len(history) == 2 and all(f"val_{m}" in history[0] for m in task_cls.metric_names)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == task and summary["metric"] == task_cls.lead_metric
    info = json.loads((run / "model" / "strop.json").read_text())
    assert info["task"] == task

    predictor = strop.load(run)
    assert predictor.task.name == task
    inputs = PREDICT_INPUTS[task]
    predictions = predictor.predict(inputs)
    assert len(predictions) == len(inputs)
    records = predictor.records(inputs)
    json.dumps(records)  # JSON-ready
    # Many inputs are encoded a chunk at a time (whole batches), with the same outputs as all at once.
    many, encoded = list(inputs) * 5, []
    whole = predictor.outputs(many)
    encode = type(predictor.task).encode
    monkeypatch.setattr(type(predictor.task), "encode", lambda task, body, examples:
                        encoded.append(len(examples.inputs)) or encode(task, body, examples))
    monkeypatch.setattr("strop.predict.ENCODE_CHUNK", 5)
    predictor.batch_size = 2
    chunked = predictor.outputs(many)
    assert encoded == [4] * (len(many) // 4) + ([len(many) % 4] if len(many) % 4 else [])
    assert len(chunked) == len(whole) and all(np.allclose(a, b, atol=1e-6) for a, b in zip(chunked, whole))
    import strop.progress as progress_module  # asked to, the pass shows its progress (a line every batch here)

    shown = progress_module.progress
    monkeypatch.setattr(progress_module, "progress", lambda *a, **k: shown(*a, **{**k, "every": 0}))
    capsys.readouterr()
    predictor.outputs(many, show="scoring the pool")
    assert f"scoring the pool: 1/{-(-len(many) // 2)} batches" in capsys.readouterr().err
    predictor.batch_size = 64
    # strop evaluate on the validation file gives what the run measured on it (same weights, fp32)
    scored = evaluate_file(predictor, dev)
    for metric in task_cls.metric_names:
        assert scored[metric] == pytest.approx(summary["validation"][metric], abs=1e-5), metric


@pytest.mark.parametrize("task", TEXT_TASKS)
@pytest.mark.parametrize("method", ["freeze", "linear_probe"])
def test_every_task_trains_with_a_frozen_body(task, method, tiny_model_dir, tmp_path):
    run, _ = _fit(task, tiny_model_dir, tmp_path, method)
    assert (run / "summary.json").is_file()
    strop.load(run).predict(PREDICT_INPUTS[task])


def test_token_predictions_are_entity_spans_with_character_offsets(tiny_model_dir, tmp_path):
    run, _ = _fit("token_classification", tiny_model_dir, tmp_path, extra=["train.epochs=20", "optim.lr=3e-3"])
    text = "Yesterday  Anna Smith flew to Paris ."
    (record,) = strop.load(run).records([text])
    spans = {(e["type"], e["text"]) for e in record["entities"]}
    assert ("PER", "Anna Smith") in spans and ("LOC", "Paris") in spans
    for entity in record["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]


def test_a_word_that_comes_to_no_token_leaves_the_other_words_their_own_tags(tiny_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    import strop.backbones.text as text_backbone

    monkeypatch.setattr(text_backbone, "CUT_SAID", set())  # said once a process: not yet in this test
    run, _ = _fit("token_classification", tiny_model_dir, tmp_path, extra=["train.epochs=20", "optim.lr=3e-3"])
    predictor = strop.load(run)
    words = ["Anna", "Smith", "flew", "to", "Paris", "."]
    (plain,) = predictor.predict_tags([words])
    assert "I-PER" in plain and "I-LOC" in plain  # the model tells the entities apart: a shift would show
    for invisible in ("\u200b", "\u00ad", ""):  # a zero-width space, a soft hyphen, an empty word: no token
        (tags,) = predictor.predict_tags([words[:1] + [invisible] + words[1:]])
        assert tags == plain[:1] + ["O"] + plain[1:], invisible
    (record,) = predictor.records(["Anna\u00ad Smith flew to Paris ."])
    assert ("LOC", "Paris") in {(e["type"], e["text"]) for e in record["entities"]}

    # words past model.max_length (32 tokens here) are tagged O, and the run says so, once
    capsys.readouterr()
    predictor.predict_tags([["and"] * 30 + ["\u200b"]])  # 32 tokens with [CLS] and [SEP]: a word of none, not cut
    assert capsys.readouterr().err == ""
    long = ["and"] * 40 + ["Paris"]
    (tags,) = predictor.predict_tags([long])
    assert len(tags) == len(long) and tags[-1] == "O"
    assert "1 of 1 sentences are longer than model.max_length=32 tokens: their last 11 words" in capsys.readouterr().err
    predictor.predict_tags([long])
    assert capsys.readouterr().err == ""


def test_multilabel_thresholds_are_tuned_saved_and_used(tiny_model_dir, tmp_path):
    run, _ = _fit("multilabel_classification", tiny_model_dir, tmp_path, extra=["train.epochs=4"])
    info = json.loads((run / "model" / "strop.json").read_text())
    assert len(info["thresholds"]) == len(info["labels"]) == 3
    predictor = strop.load(run)
    probabilities = predictor.predict_proba(["the film was great", "awful plot"])
    expected = [[name for name, p, t in zip(info["labels"], row, info["thresholds"]) if p >= t]
                for row in probabilities]
    assert predictor.predict(["the film was great", "awful plot"]) == expected


def test_regression_targets_are_standardised_and_predictions_on_their_scale(tiny_model_dir, tmp_path):
    run, _ = _fit("regression", tiny_model_dir, tmp_path, extra=["train.epochs=10"])
    info = json.loads((run / "model" / "strop.json").read_text())
    assert info["targets"] == ["label"] and 1 < info["target_mean"][0] < 4 and info["target_std"][0] > 0.5
    values = strop.load(run).predict(["fine", "great good fine happy love"])
    assert all(-1 < v < 7 for v in values)  # the targets' scale (0-5), not standardised units


def test_token_model_loads_in_plain_transformers_with_the_same_logits(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification

    run, _ = _fit("token_classification", tiny_model_dir, tmp_path)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    predictor = strop.load(run)
    plain = AutoModelForTokenClassification.from_pretrained(run / "model").eval()
    batch = predictor.model.body.tokenizer(["Anna Smith was in Paris"], return_tensors="pt")
    with torch.no_grad():
        ours = predictor.model(**batch)
        theirs = plain(**batch).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == predictor.labels


def test_mean_pooled_head_is_not_passed_off_as_a_transformers_head(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    run, _ = _fit("text_classification", tiny_model_dir, tmp_path, extra=["model.pooling=mean"])
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and "id2label" not in config
    weights = load_file(run / "model" / "model.safetensors")
    assert "strop_head.output.weight" in weights and "classifier.weight" not in weights
    # The body loads in plain transformers as it is in strop.
    predictor = strop.load(run)
    body = AutoModel.from_pretrained(run / "model").eval()
    batch = predictor.model.body.tokenizer(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(body(**batch).last_hidden_state, predictor.model.body("token", **batch), atol=1e-5)


def test_a_folder_without_the_pooler_weights_pools_the_first_token_not_a_random_pooler(tiny_model_dir, tmp_path):
    """A masked-language-model checkpoint (strop pretrain's output, many on the hub) has no pooler weights:
    pooling=auto must not put a randomly started pooler between the encoder and the head."""
    from transformers import AutoTokenizer, BertForMaskedLM

    from strop.backbones.text import TextBackbone

    folder = tmp_path / "mlm"
    BertForMaskedLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    body, why = TextBackbone.from_pretrained(str(folder), "auto", 32)
    assert body.pooling == "cls" and "no weights for the model's pooler" in why
    body, why = TextBackbone.from_pretrained(str(tiny_model_dir), "auto", 32)  # its pooler was saved: used
    assert body.pooling == "pooler"
    _, why = TextBackbone.from_pretrained(str(folder), "pooler", 32)  # asked for: kept, and said
    assert "random values" in why


def _weights_equal(a_run, b_run, name="model/model.safetensors", atol=0.0):
    import torch
    from safetensors.torch import load_file

    a, b = load_file(a_run / name), load_file(b_run / name)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_resumes_to_the_uninterrupted_run(task, tiny_model_dir, tmp_path, monkeypatch):

    straight, _ = _fit(task, tiny_model_dir, tmp_path / "straight", extra=["train.epochs=3"])
    interrupt_after_checkpoint(monkeypatch, lambda: _fit(task, tiny_model_dir, tmp_path / "resumed",
                                                         extra=["train.epochs=3"]))
    resumed, _ = _fit(task, tiny_model_dir, tmp_path / "resumed", extra=["train.epochs=3", "train.resume=true"])
    _weights_equal(straight, resumed)
    timing = ("epoch_seconds", "train_samples_per_s", "train_tokens_per_s", "time")
    history = lambda run: [{k: v for k, v in json.loads(line).items() if k not in timing}
                           for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history(resumed) == history(straight)


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_caches_a_frozen_body_with_the_uncached_result(task, tiny_model_dir, tmp_path, monkeypatch):
    from transformers import BertModel

    from strop.methods import METHODS

    calls = []
    forward = BertModel.forward
    monkeypatch.setattr(BertModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    cached, _ = _fit(task, tiny_model_dir, tmp_path / "cached", method="freeze", extra=["train.epochs=3"])
    passes = len(calls)
    monkeypatch.setattr(METHODS.get("freeze"), "frozen_split", lambda self, model: None)
    uncached, _ = _fit(task, tiny_model_dir, tmp_path / "uncached", method="freeze", extra=["train.epochs=3"])
    assert passes < len(calls) - passes  # the cached run ran the body once, not in every step
    _weights_equal(cached, uncached, atol=1e-5)


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_caches_frozen_bottom_layers_with_the_uncached_result(task, tiny_model_dir, tmp_path, monkeypatch):
    """method.freeze_layers=2 (embeddings and the first block): their output is computed once and each step runs
    the block above on it; the run ends with the weights of a run that computes them at every step."""
    from transformers.models.bert.modeling_bert import BertEmbeddings

    from strop.methods import METHODS

    calls = []
    forward = BertEmbeddings.forward
    monkeypatch.setattr(BertEmbeddings, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    extra = ["train.epochs=3", "method.freeze_layers=2"]
    cached, _ = _fit(task, tiny_model_dir, tmp_path / "cached", extra=extra)
    passes = len(calls)
    monkeypatch.setattr(METHODS.get("full"), "frozen_split", lambda self, model: None)
    uncached, _ = _fit(task, tiny_model_dir, tmp_path / "uncached", extra=extra)
    assert passes < len(calls) - passes  # the cached run ran the bottom once, not in every step
    _weights_equal(cached, uncached, atol=1e-5)


def test_bottom_caching_is_not_used_where_it_would_compute_something_else(tiny_model_dir, tmp_path, monkeypatch,
                                                                           capsys):
    """A model with something between its layers (here: the embeddings scaled before the first block) fails the
    check on real inputs, and trains without the cache."""
    import torch
    from transformers.models.bert.modeling_bert import BertEncoder

    forward = BertEncoder.forward

    def scaled(self, hidden_states, *args, **kwargs):  # applied to the cached states again: not a plain stack
        # Each feature by its own factor: the blocks' layer norms would undo a uniform scaling or shift.
        factors = torch.linspace(0.2, 3.0, hidden_states.shape[-1])
        return forward(self, hidden_states * factors, *args, **kwargs)

    monkeypatch.setattr(BertEncoder, "forward", scaled)
    extra = ["train.epochs=1", "method.freeze_layers=2", "train.quiet=false"]
    run, _ = _fit("text_classification", tiny_model_dir, tmp_path / "a", extra=extra)
    assert "the frozen bottom layers are not cached" in capsys.readouterr().out


CLI_TEXTS = {"text_classification": ["--text", "great fun"],
             "pair_classification": ["--text", "the film was good", "--text-pair", "it was good"],
             "multilabel_classification": ["--text", "the film was great"], "regression": ["--text", "great good"],
             "token_classification": ["--text", "Anna Smith was in Paris ."]}


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_through_the_cli_predict_and_evaluate(task, tiny_model_dir, tmp_path, capsys):
    import pandas as pd

    from strop.cli import main

    assert task in CLI_TEXTS, f"task {task} is registered but has no command-line input in tests/test_tasks.py"
    run, dev = _fit(task, tiny_model_dir, tmp_path)
    capsys.readouterr()
    assert main(["predict", str(run), *CLI_TEXTS[task]]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = {"text_classification": "label", "pair_classification": "label", "multilabel_classification": "labels",
                "regression": "value", "token_classification": "entities"}[task]
    assert expected in record
    # a file of inputs in, a CSV of predictions out (one row per input)
    assert main(["predict", str(run), "--input", str(dev), "--output", str(tmp_path / "p.csv")]) == 0
    n_inputs = len(TASKS.get(task).read(dev, __import__("strop").config.DataConfig(
        text_pair_column="text_pair" if task == "pair_classification" else None), "text", "x").inputs)
    assert len(pd.read_csv(tmp_path / "p.csv")) == n_inputs
    assert main(["evaluate", str(run), "--data", str(dev), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert TASKS.get(task).lead_metric in metrics
    assert main(["evaluate", str(run), "--data", str(dev)]) == 0
    assert TASKS.get(task).lead_metric in capsys.readouterr().out


def test_label_sets_read_from_json_and_parquet_lists_as_from_separated_text(tmp_path):
    import pandas as pd

    from strop.config import DataConfig
    from strop.errors import StropError

    frame = pd.DataFrame({"text": ["one", "two", "three"], "label": [["a", "b"], ["c"], ["b", "a", "c"]]})
    frame.to_json(tmp_path / "sets.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "sets.parquet", index=False)
    (tmp_path / "sets.csv").write_text("text,label\none,a|b\ntwo,c\nthree,b|a|c\n")
    task = TASKS.get("multilabel_classification")
    read = [task.read(tmp_path / f"sets.{kind}", DataConfig(), "text", "data.train").targets
            for kind in ("csv", "jsonl", "parquet")]
    assert read[0] == read[1] == read[2] == [("a", "b"), ("c",), ("a", "b", "c")]
    with pytest.raises(StropError, match=r"holds a list in row 1 .* task.name=multilabel_classification"):
        TASKS.get("text_classification").read(tmp_path / "sets.jsonl", DataConfig(), "text", "data.train")
    # a null in a list is no label (it was read as the label 'None'); a list of nulls only is a missing set
    pd.DataFrame({"text": ["one", "two"], "label": [["a", None], ["b"]]}).to_parquet(tmp_path / "nulls.parquet")
    assert task.read(tmp_path / "nulls.parquet", DataConfig(), "text", "data.train").targets == [("a",), ("b",)]
    (tmp_path / "null.jsonl").write_text('{"text": "one", "label": [null]}\n{"text": "two", "label": ["b"]}\n')
    with pytest.raises(StropError, match="missing"):
        task.read(tmp_path / "null.jsonl", DataConfig(), "text", "data.train")


def test_a_listed_label_is_one_label_as_written_and_look_alikes_are_said(tmp_path, capsys):
    from strop.config import Config, DataConfig

    task = TASKS.get("multilabel_classification")
    (tmp_path / "items.jsonl").write_text('{"text": "one", "label": ["News|0", "Sport"]}\n'
                                          '{"text": "two", "label": [1.0, "Sport"]}\n{"text": "three", "label": [1]}\n')
    # a separator inside a listed item is part of its name; 1.0 and 1 are one label, as in a cell
    assert task.read(tmp_path / "items.jsonl", DataConfig(), "text", "data.train").targets == [
        ("News|0", "Sport"), ("1", "Sport"), ("1",)]
    (tmp_path / "case.csv").write_text("text,label\none,L1|L2\ntwo,l1\nthree,L2\n")
    task.read(tmp_path / "case.csv", DataConfig(), "text", "data.train")
    assert "differ only in case are classes of their own: 'L1' and 'l1'" in capsys.readouterr().err
    # every row one label, and the labels hold another separator: the file's, most likely
    (tmp_path / "semi.csv").write_text("text,label\none,red;blue\ntwo,blue\nthree,red\n")
    train = task.read(tmp_path / "semi.csv", DataConfig(), "text", "data.train")
    task.from_data(train, None, Config())
    assert "set data.label_separator=';'" in capsys.readouterr().err
    (tmp_path / "fine.csv").write_text("text,label\none,red|blue\ntwo,blue\nthree,red;dark\n")
    task.from_data(task.read(tmp_path / "fine.csv", DataConfig(), "text", "data.train"), None, Config())
    assert "label_separator" not in capsys.readouterr().err  # a row with two labels: the separator is right
    (tmp_path / "lists.jsonl").write_text('{"text": "one", "label": ["sci/tech"]}\n{"text": "two", "label": ["art"]}\n')
    task.read(tmp_path / "lists.jsonl", DataConfig(), "text", "data.train")
    assert "label_separator" not in capsys.readouterr().err  # lists are sets as they stand: no separator to set


def test_predictions_of_a_tagged_jsonl_keep_its_other_keys_not_its_words(tiny_model_dir, tmp_path, capsys):
    from strop.cli import main

    run, _ = _fit("token_classification", tiny_model_dir, tmp_path)
    rows = [{"id": "s1", "tokens": ["Anna", "Smith", "was", "in", "Paris"], "tags": ["I-PER", "I-PER", "O", "O", "I-LOC"]},
            {"id": "s2", "tokens": ["Paris", "is", "nice"], "tags": ["I-LOC", "O", "O"]}]
    (tmp_path / "tagged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "tagged.jsonl")]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in out] == ["s1", "s2"] and [r["tags"] for r in out] == [r["tags"] for r in rows]
    assert all("tokens" not in r and "entities" in r for r in out)  # the words are the prediction's text
    # a CoNLL file named .txt would be read as raw lines, its tags as words: refused, naming the fix
    (tmp_path / "dev.txt").write_text((tmp_path / "dev.conll").read_text())
    assert main(["predict", str(run), "--input", str(tmp_path / "dev.txt")]) == 2
    assert "look like CoNLL" in capsys.readouterr().err
    (tmp_path / "raw.txt").write_text("Anna Smith was in Paris .\nParis is nice\nO B-PER\n")
    assert main(["predict", str(run), "--input", str(tmp_path / "raw.txt")]) == 0  # raw texts, one a line
    assert len(capsys.readouterr().out.splitlines()) == 3
    # evaluate refuses a second text column for a model of single texts, as predict does
    assert main(["evaluate", str(run), "--data", str(tmp_path / "dev.conll"), "--text-pair-column", "x"]) == 2
    assert "this model reads single texts, not pairs" in capsys.readouterr().err


def test_the_api_predicts_one_result_an_input_and_refuses_inputs_the_model_cannot_read(tiny_model_dir, tmp_path):
    single = strop.load(_fit("text_classification", tiny_model_dir, tmp_path / "single", extra=["train.epochs=1"])[0])
    assert len(single.predict(["great fun", "awful film"])) == 2 and len(single.predict("great fun")) == 1
    assert len(single.predict(("great fun", "awful film"))) == 2  # it was read as one pair: one prediction
    with pytest.raises(StropError, match=r"input 0 is \('great fun', 'awful film'\): this model reads single texts.*"
                                         "a tuple is not a pair for this model: give a list of texts"):
        single.predict([("great fun", "awful film")])
    for bad in ["  ", None, 3]:
        with pytest.raises(StropError, match="input 1 is .*: this model reads single texts; give each input as a "
                                             "non-empty string"):
            single.predict_proba(["fine", bad])
    pairs = strop.load(_fit("pair_classification", tiny_model_dir, tmp_path / "pairs", extra=["train.epochs=1"])[0])
    assert len(pairs.predict(("the film was good", "it was good"))) == 1
    assert len(pairs.predict([("a good film", "good"), ("bad", "awful")])) == 2
    with pytest.raises(StropError, match="input 0 is 'a good film': this model reads text pairs; give each input as "
                                         r"a tuple of two non-empty texts \(text, text_pair\)"):
        pairs.predict(["a good film"])  # it predicted as if the pair's second text were empty


def test_a_pair_models_second_column_is_named_on_the_command_line(tiny_model_dir, tmp_path, capsys):
    import pandas as pd

    from strop.cli import main

    run, dev = _fit("pair_classification", tiny_model_dir, tmp_path, extra=["train.epochs=1"])
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(dev).rename(columns={"text_pair": "second"}).assign(id=range(20)).to_csv(renamed, index=False)
    assert main(["evaluate", str(run), "--data", str(renamed)]) == 2
    assert "Name the right one with --text-pair-column <column>" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(renamed), "--text-pair-column", "second", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(
        json.loads((run / "summary.json").read_text())["validation"]["accuracy"])
    assert main(["predict", str(run), "--input", str(renamed), "--text-pair-column", "second"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == [str(i) for i in range(20)] and all("second" not in r for r in records)
    # under its default name the second text is read too, not repeated as an input column
    assert main(["predict", str(run), "--input", str(dev)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 20 and all("input_text_pair" not in r and "text_pair" in r for r in records)
    assert strop.load(run).records([["the film was good", "it was good"]])[0]["text_pair"] == "it was good"
    (tmp_path / "lines.txt").write_text("the film was good\nit was good\n")
    assert main(["predict", str(run), "--input", str(tmp_path / "lines.txt")]) == 2
    assert "a .txt file holds one text per line, and this model reads pairs of texts" in capsys.readouterr().err
    single, _ = _fit("text_classification", tiny_model_dir, tmp_path / "single", extra=["train.epochs=1"])
    assert main(["predict", str(single), "--text", "fine", "--text-pair-column", "second"]) == 2
    assert "--text-pair-column: this model reads single texts, not pairs" in capsys.readouterr().err


def test_class_names_holding_the_label_separator_get_a_multilabel_hint(tiny_model_dir, tmp_path, capsys):
    rows = [(t, y + ("|long" if len(t) > 20 else "")) for t, y in make_texts(60, seed=4)]
    train = write_csv(tmp_path / "labels.csv", rows)
    strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={train}", f"output_dir={tmp_path / 'run'}",
                     "train.epochs=1", "model.max_length=32", "train.mixed_precision=no"])
    out = capsys.readouterr().out
    assert re.search(r"\d+ class name\(s\) hold data.label_separator '\|' \(e.g. '\w+\|long'\), each trained as one "
                     r"class; if an example may have several labels, set task.name=multilabel_classification", out)
    plain = write_csv(tmp_path / "plain.csv", make_texts(60, seed=4))
    strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={plain}", f"output_dir={tmp_path / 'plain'}",
                     "train.epochs=1", "model.max_length=32", "train.mixed_precision=no"])
    assert "label_separator" not in capsys.readouterr().out


def test_task_auto_reads_a_jsonl_of_tagged_tokens_as_token_classification(tmp_path):
    from strop.tasks import infer_task_name

    tagged = tmp_path / "ner.jsonl"
    tagged.write_text('\n{"tokens": ["Anna", "left"], "tags": ["B-PER", "O"]}\n')
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "fine", "label": "positive"}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"tokens": ["Anna"\n')
    assert infer_task_name("auto", str(tagged)) == "token_classification"
    assert infer_task_name("auto", str(texts)) == "text_classification"
    assert infer_task_name("auto", str(broken)) == "text_classification"  # its reader says what is wrong
    assert infer_task_name("multilabel_classification", str(tagged)) == "multilabel_classification"
    # under keys of the user's own, named as token classification reads them: data.text_column, label_column
    from strop.config import load_config
    from strop.fit import resolve_config

    words = tmp_path / "words.jsonl"
    words.write_text('{"words": ["Anna", "left"], "ner": ["B-PER", "O"]}\n')
    named = resolve_config(load_config(None, [f"data.train={words}", "data.text_column=words",
                                              "data.label_column=ner"]))
    assert named.task.name == "token_classification"
    assert resolve_config(load_config(None, [f"data.train={words}"])).task.name == "text_classification"


def test_targets_on_scales_far_apart_are_said_with_the_metric_that_weighs_them_alike():
    from strop.tasks.regression import Regression

    apart = Regression(columns=("y", "y2"), mean=(0.0, 0.0), std=(0.36, 201.0))
    assert "targets on different scales (standard deviations y 0.36, y2 201)" in apart.notes()[0]
    assert "train.metric=r2" in apart.notes()[0]
    assert Regression(columns=("y", "y2"), mean=(0.0, 0.0), std=(1.0, 3.0)).notes() == []
    assert Regression(columns=("y",), mean=(0.0,), std=(201.0,)).notes() == []


def test_written_numbers_keep_six_significant_digits_at_any_scale():
    import warnings

    import numpy as np

    from strop.tasks.base import compact

    assert compact(1.5157e-06) == 1.5157e-06 and compact(0.5444049) == 0.544405 and compact(123456789.0) == 123457000.0
    assert compact([[0.0, -2.345678e-9]]) == [[0.0, -2.34568e-9]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        assert compact([1e-310, -2.5e200, float("inf")]) == [1e-310, -2.5e200, float("inf")]
    assert np.isnan(compact(float("nan")))
    # with a scale (a regression target's spread), digits of the scale: a large offset keeps its units
    assert compact(1000000.37, 1.0) == 1000000.37 and compact(1000000.37) == 1000000.0
    assert compact([2.5e-7, 1.25e-6], 1e-6) == [2.5e-7, 1.25e-6]


def test_scores_on_the_terminal_keep_their_digits_at_any_scale():
    from strop.tasks.base import score_text

    assert score_text(0.842913) == "0.8429" and score_text(3.2e-06) == "3.2e-06" and score_text(0) == "0.0000"
    assert score_text(-0.004) == "-0.004" and score_text(12.5) == "12.5000"


@pytest.mark.parametrize("task", ["regression", "reconstruction", "text_classification"])
def test_statistics_come_from_the_training_share_not_the_held_out_rows(task, tmp_path):
    """Without a validation file the held-out rows take no part in what the run learns from the data: the
    targets' (features') standardisation and the class weights are those of the rows it trains on."""
    import numpy as np

    from strop.config import load_config
    from strop.fit import load_splits

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=60), rng.exponential(5.0, size=60)  # skewed: a share's mean differs from all rows'
    labels = ["a"] * 45 + ["b"] * 15
    if task == "text_classification":
        path = write_csv(tmp_path / "train.csv", [(f"text {i}", label) for i, label in enumerate(labels)])
        kind, extra = "text", ["train.imbalance=weights"]
    else:
        path = write_csv(tmp_path / "train.csv", list(zip(x, y)), header=("x", "y"))
        kind, extra = "vector", ["data.label_column=y"] if task == "regression" else []
    cfg = load_config(None, [f"data.train={path}", f"task.name={task}", "data.validation_fraction=0.3",
                             *extra])
    splits = load_splits(cfg, kind)
    assert len(splits.validation) == 18
    if task == "text_classification":
        counts = np.array([splits.train.targets.count(c) for c in ("a", "b")])
        assert splits.task.class_weights == pytest.approx(tuple(counts.sum() / (2 * counts)))
        assert splits.task.class_weights != pytest.approx((60 / 90, 60 / 30))  # the whole file's
        return
    trained = np.stack(splits.train.inputs) if task == "reconstruction" else np.asarray(splits.train.targets)
    every = np.stack([x, y], axis=1) if task == "reconstruction" else y[:, None]
    assert splits.task.mean == pytest.approx(tuple(trained.mean(axis=0)))
    assert splits.task.std == pytest.approx(tuple(trained.std(axis=0)))
    assert not np.allclose(splits.task.mean, every.mean(axis=0))

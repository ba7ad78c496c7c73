"""strop pretrain: masked-language-model training on domain text writes a model that fit starts from."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import strop
from conftest import make_texts
from strop.pretrain import MaskingCollate, mask_tokens


def test_masking_follows_bert_and_never_touches_special_tokens():
    ids = torch.randint(1000, 2000, (64, 50))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and (labels[chosen] == ids[chosen]).all()
    share = chosen[:, 1:].float().mean().item()
    assert 0.12 < share < 0.18  # 15% of the tokens
    assert 0.7 < (masked[chosen] == 103).float().mean().item() < 0.9  # 80% of them [MASK]
    assert (masked[~chosen] == ids[~chosen]).all()


def test_every_text_has_a_token_to_predict_however_short():
    ids = torch.randint(1000, 2000, (200, 6))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, [0, 4, 5]] = True  # [CLS], [SEP], padding: three tokens that can be chosen
    special[-1] = True  # a row with nothing to choose stays unchosen
    masked, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert chosen[:-1].any(dim=1).all() and not chosen[-1].any() and not (chosen & special).any()


def test_pretrain_writes_a_model_that_fit_starts_from(tiny_model_dir, tiny_overrides, tmp_path, capsys):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(t for t, _ in make_texts(60, seed=3)) + "\n\n", encoding="utf-8")
    out = tmp_path / "pretrained"
    done = subprocess.run([sys.executable, "-m", "strop", "pretrain", f"model.name={tiny_model_dir}", "train.epochs=2",
                           "train.batch_size=8", "model.max_length=32", "optim.lr=1e-3", "train.mixed_precision=no",
                           "--data", str(text), "--output", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[1]["val_loss"] < history[0]["val_loss"] + 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_texts"] + summary["validation_texts"] == 60
    from strop.index import INDEX_FILE, list_runs

    assert (tmp_path / INDEX_FILE).is_file()  # recorded as it ran (strop runs), as a fit is
    [row] = list_runs(tmp_path)
    assert row["status"] == "complete" and row["task"] == "masked_lm" and row["metrics"] == summary["validation"]
    tuned = load_file(out / "model" / "model.safetensors")
    before = load_file(tiny_model_dir / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[f"bert.{key}"], before[key])  # the encoder trained
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith("model.name")]
                    + [f"model.name={out / 'model'}", "train.epochs=1"])
    assert json.loads((run / "model" / "strop.json").read_text())["base_model"] == str(out / "model")
    from strop.backbones.text import resolve_model_source

    assert resolve_model_source(str(out)) == str(out / "model")  # the pretrain folder itself names its model
    from strop.cli import main

    capsys.readouterr()
    assert main(["report", str(out)]) == 2  # no report: said so, not "no complete run"
    assert "is a run of strop pretrain, which has no report" in capsys.readouterr().err


def test_a_table_gives_its_text_column_and_any_other_file_its_lines(tmp_path):
    import pandas as pd

    from strop.config import DataConfig
    from strop.pretrain import read_domain_texts

    texts = ["first, with a comma", 'a "quoted" one', "two\nlines"]
    frame = pd.DataFrame({"id": [1, 2, 3], "body": texts})
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.parquet"):
        getattr(frame, {"d.csv": "to_csv", "d.tsv": "to_csv", "d.jsonl": "to_json", "d.parquet": "to_parquet"}[name])(
            tmp_path / name, index=False, **({"sep": "\t"} if name == "d.tsv" else
                                              {"orient": "records", "lines": True} if name == "d.jsonl" else {}))
        assert read_domain_texts(tmp_path / name, DataConfig(text_column="body")) == texts, name
    with pytest.raises(strop.StropError, match="column 'text' not found in d.csv; columns found: 'id', 'body'. "
                                               ".* data.text_column=<column>"):
        read_domain_texts(tmp_path / "d.csv", DataConfig())  # no column "text": named, with the key that fixes it
    (tmp_path / "d.txt").write_text("id,body\n\nsecond line\n")
    assert read_domain_texts(tmp_path / "d.txt", DataConfig()) == ["id,body", "second line"]


def test_validation_masks_are_the_same_every_epoch(tiny_model_dir):
    from transformers import AutoTokenizer

    from strop.tasks.base import pad_collate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    collate = MaskingCollate(tokenizer, lambda f: pad_collate(f, {"input_ids": 0}))
    features = [{**{k: v for k, v in tokenizer(t).items()}, "seed": i} for i, t in
                enumerate(["a fairly long sentence about films and plots", "another one here"])]
    first, second = collate(features), collate(features)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])


# --- vectors: an MLP autoencoder ------------------------------------------------------------------------------

def _rows(path, n, seed, labelled=False, columns=6):
    """Vectors on a 2-dimensional manifold (an autoencoder can reconstruct them), labelled by one latent."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    x = np.tanh(latent @ np.random.default_rng(0).normal(size=(2, columns))) + 0.05 * rng.normal(size=(n, columns))
    frame = pd.DataFrame(x * 10 + 3, columns=[f"f{i}" for i in range(columns)])  # not standardised: strop does it
    if labelled:
        frame["label"] = np.where(latent[:, 0] > 0, "up", "down")
    frame.to_csv(path, index=False)
    return path


def test_an_mlp_autoencoder_pretrains_and_fit_starts_from_its_body(tmp_path):
    pool = _rows(tmp_path / "pool.csv", 600, 1)
    pre = tmp_path / "pre"
    subprocess.run([sys.executable, "-m", "strop", "pretrain", "model.name=mlp", "train.epochs=30", "model.hidden=[32,8]",
                    "--data", str(pool), "--output", str(pre), "--quiet"], check=True)
    summary = json.loads((pre / "summary.json").read_text())
    assert summary["task"] == "reconstruction" and summary["validation"]["r2"] > 0.8  # it learned the manifold
    info = json.loads((pre / "model" / "strop.json").read_text())
    assert info["backbone"] == "mlp" and info["feature_columns"] == [f"f{i}" for i in range(6)]
    scored = subprocess.run([sys.executable, "-m", "strop", "evaluate", str(pre), "--data", str(pool)],
                            capture_output=True, text=True)  # the autoencoder itself, scored as any run
    assert scored.returncode == 0 and scored.stdout.startswith("n 600  loss "), scored.stderr

    labelled = _rows(tmp_path / "labelled.csv", 80, 2, labelled=True)
    run = strop.fit(None, [f"model.name={pre / 'model'}", f"data.train={labelled}", f"output_dir={tmp_path / 'fit'}",
                           "method.name=freeze", "train.epochs=3", "train.quiet=true",
                           "model.hidden=[4]", "model.activation=tanh"])  # the saved MLP's shape wins ...
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert recorded["hidden"] == [32, 8] and recorded["activation"] == "relu"  # ... and config.yaml says so
    before, after = load_file(pre / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    body = [k for k in before if k.startswith("body.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # the pretrained body, kept frozen
    fitted = json.loads((run / "model" / "strop.json").read_text())
    assert fitted["task"] == "text_classification" and fitted["mlp"]["mean"] == info["mlp"]["mean"]


def test_a_pretrained_mlp_reads_its_columns_by_name_in_another_order(tmp_path):
    import pandas as pd

    from strop.pretrain import pretrain

    pre = pretrain(None, ["model.name=mlp", "train.epochs=2", "train.quiet=true"],
                   data=_rows(tmp_path / "pool.csv", 60, 1), output=tmp_path / "pre")
    labelled = pd.read_csv(_rows(tmp_path / "labelled.csv", 40, 2, labelled=True))
    labelled[["label", "f5", "f3", "f1", "f0", "f2", "f4"]].to_csv(tmp_path / "shuffled.csv", index=False)
    runs = {name: strop.fit(None, [f"model.name={pre / 'model'}", f"data.train={tmp_path / name}.csv",
                                   f"output_dir={tmp_path / name}-run", "train.epochs=2", "train.quiet=true"])
            for name in ("labelled", "shuffled")}
    same = [json.loads((run / "summary.json").read_text())["validation"] for run in runs.values()]
    assert same[0] == same[1]  # the same model on the same numbers: the columns went where its weights expect
    assert yaml.safe_load((runs["shuffled"] / "config.yaml").read_text())["data"]["feature_columns"] == [
        f"f{i}" for i in range(6)]


def test_a_pretrained_mlp_refuses_data_with_other_columns(tmp_path):
    from strop.pretrain import pretrain

    pre = pretrain(None, ["model.name=mlp", "train.epochs=1", "train.quiet=true"],
                         data=_rows(tmp_path / "pool.csv", 50, 1), output=tmp_path / "pre")
    other = _rows(tmp_path / "other.csv", 40, 2, labelled=True, columns=5)
    with pytest.raises(strop.StropError, match=r"its MLP reads the columns \['f0', .*'f5'\]"):
        strop.fit(None, [f"model.name={pre / 'model'}", f"data.train={other}", f"output_dir={tmp_path / 'fit'}"])
    assert not (tmp_path / "fit").exists()
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(strop.StropError, match=r"^--data: .*empty\.csv is empty"):
        pretrain(None, ["model.name=mlp"], data=tmp_path / "empty.csv", output=tmp_path / "none")
    (tmp_path / "words.csv").write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(strop.StropError, match=r"^--data: feature column 'b' of words\.csv holds 'x'"):
        pretrain(None, ["model.name=mlp"], data=tmp_path / "words.csv", output=tmp_path / "none")
    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    with pytest.raises(strop.StropError, match=r"^--data .*one\.csv has 1 row; an autoencoder needs at least 2"):
        pretrain(None, ["model.name=mlp"], data=tmp_path / "one.csv", output=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_new_masked_language_head_is_said_and_a_conll_file_is_refused(tiny_model_dir, tmp_path):
    from strop.config import DataConfig
    from strop.pretrain import read_domain_texts

    text = tmp_path / "domain.txt"
    text.write_text("\n".join(t for t, _ in make_texts(20, seed=3)), encoding="utf-8")
    command = [sys.executable, "-m", "strop", "pretrain", "train.epochs=1", "train.batch_size=8",
               "model.max_length=32", "train.mixed_precision=no", "--data", str(text)]
    first = subprocess.run(command + [f"model.name={tiny_model_dir}", "--output", str(tmp_path / "a")],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "has no masked-language head in its weights" in first.stdout  # a BertModel: the encoder alone
    again = subprocess.run(command + [f"model.name={tmp_path / 'a' / 'model'}", "--output", str(tmp_path / "b")],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "masked-language head" not in again.stdout  # pretrain saved its head
    (tmp_path / "ner.conll").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    with pytest.raises(strop.StropError, match="is a CoNLL file .*: pretraining reads whole texts"):
        read_domain_texts(tmp_path / "ner.conll", DataConfig())


def test_texts_without_a_token_to_mask_are_left_out_and_none_at_all_is_refused(tiny_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    from strop.pretrain import pretrain

    emoji = ["😀😀😀", "🙂", "🎉 🎉", "💱"]  # unknown to the tokenizer: [UNK] is never masked
    words = [t for t, _ in make_texts(20, seed=3)]
    overrides = [f"model.name={tiny_model_dir}", "train.epochs=1", "train.batch_size=8", "model.max_length=32",
                 "train.mixed_precision=no"]
    (tmp_path / "emoji.txt").write_text("\n".join(emoji * 3), encoding="utf-8")
    with pytest.raises(strop.StropError, match="none of its 12 texts has a token that can be masked"):
        pretrain(None, overrides, data=tmp_path / "emoji.txt", output=tmp_path / "none")
    assert not (tmp_path / "none").exists()
    (tmp_path / "mixed.txt").write_text("\n".join(emoji + words), encoding="utf-8")
    import strop.pretrain as module

    encoded, windows = [], module.windows  # tokenized a chunk at a time, chunks across both kinds of text
    monkeypatch.setattr(module, "windows", lambda body, lines: encoded.append(len(lines)) or windows(body, lines))
    monkeypatch.setattr("strop.pretrain.TOKENIZE_CHUNK", 3)
    run = pretrain(None, overrides, data=tmp_path / "mixed.txt", output=tmp_path / "mixed")
    assert encoded == [3] * 8
    assert "note: 4 text(s) left out: none of their tokens can be masked" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_texts"] + summary["validation_texts"] == 20 and summary["validation"]["loss"] > 0


def test_a_max_length_past_the_models_positions_pretrains_on_windows_of_that_many(tiny_model_dir, tmp_path, capsys):
    from strop.pretrain import pretrain

    long_lines = [" ".join([t] * 60) for t, _ in make_texts(12, seed=4)]  # each past the tiny BERT's 128 positions
    (tmp_path / "long.txt").write_text("\n".join(long_lines), encoding="utf-8")
    run = pretrain(None, [f"model.name={tiny_model_dir}", "train.epochs=1", "train.batch_size=4",
                          "model.max_length=1000", "train.mixed_precision=no", "train.quiet=false"],
                   data=tmp_path / "long.txt", output=tmp_path / "out")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["loss"] > 0 and summary["texts_in_windows"] == 12
    assert summary["train_texts"] + summary["validation_texts"] > 12
    assert "note: 12 text(s) longer than 128 tokens are read whole, in " in capsys.readouterr().out


def test_a_long_text_is_read_whole_in_windows_that_stay_on_one_side_of_the_split(tiny_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from strop.backbones.text import TextBackbone
    from strop.pretrain import hold_out, maskable_features

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    body = TextBackbone(AutoModelForMaskedLM.from_pretrained(tiny_model_dir).base_model, tokenizer, "cls", 16)
    texts = [t for t, _ in make_texts(40, seed=2)]
    document = " ".join(texts[:12])  # far past 16 tokens
    features, sources, unmaskable = maskable_features(body, [document, *texts[12:]], "d.txt", "tiny")
    windows = [f["input_ids"].tolist() for f, s in zip(features, sources) if s == 0]
    assert unmaskable == 0 and len(windows) > 2 and sources.count(0) == len(windows)
    assert all(len(w) <= 16 and w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in windows)
    whole = tokenizer(document)["input_ids"][1:-1]  # every token of the text, in order, none left out
    assert [t for w in windows for t in w[1:-1]] == whole
    for seed in range(20):
        kept, held = hold_out(features, seed, "d.txt", sources)
        assert sorted(kept + held) == list(range(len(features)))
        held_windows = {i for i in held if sources[i] == 0}
        assert not held_windows or held_windows == {i for i, s in enumerate(sources) if s == 0}  # all or none


# --- what pretrain reads, refuses and records ------------------------------------------------------------------

def _pretrain_overrides(tiny_model_dir, *extra):
    return [f"model.name={tiny_model_dir}", "train.epochs=1", "train.batch_size=8", "model.max_length=32",
            "train.mixed_precision=no", "train.quiet=true", *extra]


def _domain(path, n=20, seed=3):
    path.write_text("\n".join(t for t, _ in make_texts(n, seed=seed)), encoding="utf-8")
    return path


def test_a_json_or_compressed_file_is_refused_not_trained_on_as_lines(tmp_path):
    import gzip

    import pandas as pd

    from strop.config import DataConfig
    from strop.pretrain import read_domain_texts

    frame = pd.DataFrame({"text": ["first text", "second text"]})
    frame.to_json(tmp_path / "d.json", orient="records", lines=True)  # what Dataset.to_json writes
    with pytest.raises(strop.StropError, match=r"cannot read 'd\.json': use one of \.txt .*\(got '\.json'\)"):
        read_domain_texts(tmp_path / "d.json", DataConfig())
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"first text\nsecond text\n"))
    with pytest.raises(strop.StropError, match=r"d\.txt\.gz is compressed \(\.gz\).*decompress it"):
        read_domain_texts(tmp_path / "d.txt.gz", DataConfig())
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"text\nfirst text\nsecond text\n"))  # a table: read
    assert read_domain_texts(tmp_path / "d.csv.gz", DataConfig()) == ["first text", "second text"]
    (tmp_path / "plain").write_text("first text\nsecond text\n")  # no suffix: lines
    assert read_domain_texts(tmp_path / "plain", DataConfig()) == ["first text", "second text"]


def test_texts_are_split_at_line_breaks_alone(tmp_path):
    from strop.config import DataConfig
    from strop.pretrain import read_domain_texts

    (tmp_path / "d.txt").write_bytes("one\u2028still one\r\ntwo\x0cstill two\x1cand two\n".encode())
    assert read_domain_texts(tmp_path / "d.txt", DataConfig()) == ["one\u2028still one", "two\x0cstill two\x1cand two"]
    (tmp_path / "mac.txt").write_bytes(b"one\rtwo\r\rthree\r")  # old Mac line endings: a lone \r
    assert read_domain_texts(tmp_path / "mac.txt", DataConfig()) == ["one", "two", "three"]


def test_one_maskable_text_is_refused_before_a_run_is_written(tiny_model_dir, tmp_path):
    from strop.pretrain import pretrain

    (tmp_path / "d.txt").write_text("\n".join(["😀😀😀", "🙂", "🎉 🎉", "a film about a plot"]), encoding="utf-8")
    with pytest.raises(strop.StropError, match="only 1 of its 4 texts has a token that can be masked.* at least 2"):
        pretrain(None, _pretrain_overrides(tiny_model_dir), data=tmp_path / "d.txt", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_resuming_with_other_data_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from conftest import interrupt_after_checkpoint

    from strop.pretrain import pretrain

    first, other = _domain(tmp_path / "first.txt"), _domain(tmp_path / "other.txt", seed=5)
    overrides = _pretrain_overrides(tiny_model_dir, "train.epochs=2")
    interrupt_after_checkpoint(monkeypatch, lambda: pretrain(None, overrides, data=first, output=tmp_path / "out"))
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["data"]["train"] == str(first)
    with pytest.raises(strop.StropError, match=r"cannot resume .*its config differs in --data; resume with the saved "
                                               rf"config: strop pretrain .*config.yaml --data {first} train.resume"):
        pretrain(None, [*overrides, "train.resume=true"], data=other, output=tmp_path / "out")
    first.write_text(first.read_text() + "\na text added to the same file", encoding="utf-8")
    with pytest.raises(strop.StropError, match=r"cannot continue the run in .*: --data differs from the data it "
                                               r"started.*two sets of texts"):
        pretrain(None, [*overrides, "train.resume=true"], data=first, output=tmp_path / "out")


def test_an_interrupted_pretrain_says_the_command_that_continues_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import shlex

    from conftest import interrupt_after_checkpoint

    from strop.cli import main
    from strop.pretrain import pretrain

    data = _domain(tmp_path / "d.txt")
    overrides = _pretrain_overrides(tiny_model_dir, "train.epochs=2", "train.quiet=false")
    interrupt_after_checkpoint(monkeypatch, lambda: pretrain(None, overrides, data=data, output=tmp_path / "out"))
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith("interrupted; continue the run with: strop pretrain ")
    with pytest.raises(strop.StropError, match="is a run that has not completed .* train.resume=true"):
        strop.fit(None, [f"model.name={tmp_path / 'out'}", f"data.train={data}"])  # not yet a model to start from
    assert main(shlex.split(said.split(": ", 1)[1])[1:]) == 0  # the command as said completes the run
    assert (tmp_path / "out" / "summary.json").is_file()
    with pytest.raises(strop.StropError, match="is a pretrained model without a task head"):
        strop.load(tmp_path / "out" / "model")  # predict, serve, evaluate: it has no head yet


def test_auto_batch_sizes_are_measured_and_recorded(tiny_model_dir, tmp_path):
    from strop.pretrain import pretrain

    run = pretrain(None, _pretrain_overrides(tiny_model_dir, "train.batch_size=auto", "train.eval_batch_size=auto"),
                   data=_domain(tmp_path / "d.txt"), output=tmp_path / "out")
    train_cfg = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert isinstance(train_cfg["batch_size"], int) and isinstance(train_cfg["eval_batch_size"], int)


@pytest.mark.parametrize("setting, message", [
    ("method.freeze_layers=1", r"method\.freeze_layers=1: strop pretrain trains every layer"),
    ("method.name=lora", r"method\.name=lora: strop pretrain trains the whole model"),
])
def test_method_settings_pretrain_cannot_honour_are_refused(tiny_model_dir, tmp_path, setting, message):
    from strop.pretrain import pretrain

    with pytest.raises(strop.StropError, match=message):
        pretrain(None, _pretrain_overrides(tiny_model_dir, setting), data=_domain(tmp_path / "d.txt"),
                 output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_run_leaves_the_output_folder_the_user_made(tiny_model_dir, tmp_path, monkeypatch):
    import strop.train.loop as loop
    from strop.pretrain import pretrain

    def fail(*args, **kwargs):
        raise RuntimeError("stopped in training")

    monkeypatch.setattr(loop, "train", fail)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="stopped in training"):
        pretrain(None, _pretrain_overrides(tiny_model_dir), data=_domain(tmp_path / "d.txt"), output=tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not [p for p in (tmp_path / "out").iterdir() if p.name != ".lock"]
    with pytest.raises(RuntimeError, match="stopped in training"):  # a folder pretrain made goes as before
        pretrain(None, _pretrain_overrides(tiny_model_dir), data=_domain(tmp_path / "d.txt"), output=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_gradient_checkpointing_and_keep_checkpoint_apply(tiny_model_dir, tmp_path, monkeypatch):
    import importlib

    from strop.pretrain import pretrain

    fit_module = importlib.import_module("strop.fit")  # strop.fit is also the package's fit function
    enable, enabled = fit_module.enable_gradient_checkpointing, []
    monkeypatch.setattr(fit_module, "enable_gradient_checkpointing", lambda model: enabled.append(enable(model)))
    run = pretrain(None, _pretrain_overrides(tiny_model_dir, "train.gradient_checkpointing=true",
                                             "train.keep_checkpoint=false"),
                   data=_domain(tmp_path / "d.txt"), output=tmp_path / "out")
    assert enabled and (run / "model" / "model.safetensors").is_file()
    assert not (run / "checkpoints").exists()  # as fit: a complete run keeps no checkpoint it cannot resume from


def test_an_output_folder_with_files_is_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForMaskedLM

    from strop.pretrain import pretrain

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(AutoModelForMaskedLM, "from_pretrained", never)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(strop.StropError, match="already holds files"):
        pretrain(None, _pretrain_overrides(tiny_model_dir), data=_domain(tmp_path / "d.txt"), output=tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_data_settings_pretraining_does_not_read_are_said_and_left_out_of_its_config(tiny_model_dir, tmp_path,
                                                                                     capsys):
    from strop.pretrain import pretrain

    run = pretrain(None, _pretrain_overrides(tiny_model_dir, "train.quiet=false", "data.augment=deletion",
                                             f"data.unlabeled={tmp_path / 'pool.txt'}", "data.text_column=body"),
                   data=_domain(tmp_path / "d.txt"), output=tmp_path / "out")
    assert "not used by strop pretrain" in capsys.readouterr().out
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["augment"] == "auto" and saved["unlabeled"] is None  # what the run did not use is not recorded
    assert saved["text_column"] == "body" and saved["train"] == str(tmp_path / "d.txt")


def test_an_interrupt_once_the_summary_is_written_leaves_a_complete_run_and_no_resume_hint(tiny_model_dir, tmp_path,
                                                                                          monkeypatch, capsys):
    import strop.index
    from strop.index import list_runs
    from strop.pretrain import pretrain

    record = strop.index.record_run

    def stopped_when_complete(run, status, *args, **kwargs):
        record(run, status, *args, **kwargs)
        if status == "complete":
            raise KeyboardInterrupt

    monkeypatch.setattr(strop.index, "record_run", stopped_when_complete)
    with pytest.raises(KeyboardInterrupt):
        pretrain(None, _pretrain_overrides(tiny_model_dir, "train.quiet=false"), data=_domain(tmp_path / "d.txt"),
                 output=tmp_path / "mlm")
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mlm'} is complete" in err and "train.resume" not in err
    assert [r["status"] for r in list_runs(tmp_path)] == ["complete"]  # not recorded interrupted after it


def test_a_repeated_text_is_held_out_whole_or_not_at_all(tmp_path):
    import numpy as np

    from strop.pretrain import hold_out

    texts = [[1, i % 25, 2] for i in range(200)]  # 25 distinct texts, each 8 times
    kept, held = hold_out([{"input_ids": t} for t in texts], seed=3, data="d.txt")
    assert sorted(kept + held) == list(range(200))
    assert not {tuple(texts[i]) for i in kept} & {tuple(texts[i]) for i in held}
    assert len(held) == 8  # one text: 5% of 200 rows is 10, and a second text's 8 rows would pass it
    # one text repeated 95 times among 5 others: 5% of the rows held out, whichever the seed draws first
    texts = [[1, 7, 2]] * 95 + [[1, i, 2] for i in range(10, 15)]
    for seed in range(12):
        kept, held = hold_out([{"input_ids": t} for t in texts], seed=seed, data="d.txt")
        assert len(held) == 5 and [1, 7, 2] not in [texts[i] for i in held]
    # without repeats, the held-out rows are the seeded permutation's first 5%, as before repeats were kept whole
    distinct = [{"input_ids": [1, i, 2]} for i in range(200)]
    kept, held = hold_out(distinct, seed=3, data="d.txt")
    assert held == sorted(np.random.default_rng(3).permutation(200)[:10].tolist())
    with pytest.raises(strop.StropError,
                       match=r"its 30 texts are one text as the model reads them \(the same tokens"):
        hold_out([{"input_ids": [1, 5, 2]}] * 30, seed=3, data="d.txt")


def test_a_folder_given_as_data_is_named_a_folder(tmp_path):
    from strop.pretrain import read_domain_texts

    with pytest.raises(strop.StropError, match="is a folder"):
        read_domain_texts(tmp_path, None)


def test_pretraining_holds_token_ids_compactly_and_pads_them_as_the_tokenizers_lists(tiny_model_dir):
    """A corpus of millions of lines must fit in memory: its token ids are kept as int32 arrays, not Python lists
    (2.5 times the memory), and nothing is kept that a batch can make (the mask of ones, type ids all 0)."""
    import numpy as np
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from strop.backbones.text import TextBackbone
    from strop.pretrain import compact_tokens, maskable_features, model_inputs
    from strop.tasks.base import pad_collate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    body = TextBackbone(AutoModelForMaskedLM.from_pretrained(tiny_model_dir).base_model, tokenizer, "cls", 32)
    texts = ["a fairly long sentence about films and plots", "short one", "another text of middling length"]
    features, _, unmaskable = maskable_features(body, texts, "d.txt", "tiny")
    assert unmaskable == 0 and all(set(f) == {"input_ids"} and f["input_ids"].dtype == np.int32 for f in features)
    pads = {"input_ids": tokenizer.pad_token_id}
    for encoded in (body.encode(texts), body.encode([("a question", "its answer"), ("short", "pair")])):
        expected = pad_collate(encoded, pads)  # the tokenizer's lists, padded
        padded = pad_collate([model_inputs(compact_tokens(f)) for f in encoded], pads)
        assert all(torch.equal(padded[k], expected[k]) for k in padded)
        left_out = expected.keys() - padded.keys()  # a single text's type ids: all 0, the model's default
        assert all(not expected[k].any() for k in left_out) and left_out <= {"token_type_ids"}
    assert compact_tokens(body.encode([("a question", "its answer")])[0])["token_type_ids"].dtype == np.int8


def test_a_pretrain_resumed_with_other_library_versions_warns_and_records_them(tiny_model_dir, tmp_path, monkeypatch,
                                                                              capsys):
    import json

    from conftest import interrupt_after_checkpoint

    import strop.runs
    from strop.pretrain import pretrain

    data, out = _domain(tmp_path / "d.txt"), tmp_path / "out"
    overrides = _pretrain_overrides(tiny_model_dir, "train.epochs=2")
    interrupt_after_checkpoint(monkeypatch, lambda: pretrain(None, overrides, data=data, output=out))
    started = json.loads((out / "provenance.json").read_text())["versions"]
    real = strop.runs.library_versions
    monkeypatch.setattr(strop.runs, "library_versions", lambda: {**real(), "transformers": "9.0"})
    capsys.readouterr()
    pretrain(None, [*overrides, "train.resume=true"], data=data, output=out)
    assert f"(transformers {started['transformers']} -> 9.0)" in capsys.readouterr().err
    assert json.loads((out / "provenance.json").read_text())["earlier_versions"] == [started]


def test_a_slow_tokenizer_reads_a_long_text_whole_in_the_same_windows_as_a_fast_one(tiny_model_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertTokenizerLegacy

    from strop.backbones.text import TextBackbone
    from strop.pretrain import windows

    base = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).base_model
    fast = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = tmp_path / "vocab.txt"  # the same vocabulary, for the Python-only tokenizer (no overflow for a batch)
    vocab.write_text("\n".join(sorted(fast.get_vocab(), key=fast.get_vocab().get)) + "\n", encoding="utf-8")
    slow = BertTokenizerLegacy(vocab_file=str(vocab))
    assert fast.is_fast and not slow.is_fast
    texts = [" ".join(t for t, _ in make_texts(12, seed=2)), "a short one", ""]
    fast_windows, fast_sources = windows(TextBackbone(base, fast, "cls", 16), texts)
    slow_windows, slow_sources = windows(TextBackbone(base, slow, "cls", 16), texts)
    assert [w["input_ids"] for w in slow_windows] == [w["input_ids"] for w in fast_windows]
    assert slow_sources == fast_sources and fast_sources.count(0) > 2


def test_texts_that_share_a_window_are_held_out_together():
    from strop.pretrain import hold_out

    header = [101, 7, 7, 7, 102]  # the same first window of two documents (a common header)
    features = [{"input_ids": ids} for ids in ([header, [101, 8, 102], header, [101, 9, 102]]
                                               + [[101, i, 102] for i in range(1000, 1196)])]
    sources = [0, 0, 1, 1] + list(range(2, 198))  # 200 rows: 10 held out
    sides = set()
    for seed in range(60):
        kept, held = hold_out(features, seed, "d.txt", sources)
        assert sorted(kept + held) == list(range(200))
        sides.add(tuple(sorted(set(range(4)) & set(held))))
    assert sides == {(), (0, 1, 2, 3)}  # the two documents, all four windows, on one side, both sides seen


def test_a_pretrain_that_started_cutting_its_long_texts_is_not_resumed_on_their_windows(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    """A run begun by a strop that cut each text to its first max_length tokens, resumed by one that reads it in
    windows, would train and validate its later epochs on other rows than its first: refused, saying why."""
    import json

    from conftest import interrupt_after_checkpoint

    from strop.pretrain import pretrain

    short = _domain(tmp_path / "short.txt")
    long = tmp_path / "long.txt"
    long.write_text(short.read_text() + "\n" + " ".join(t for t, _ in make_texts(20, seed=8)), encoding="utf-8")
    for data, refused in ((long, True), (short, False)):
        out = tmp_path / f"out-{data.stem}"
        overrides = _pretrain_overrides(tiny_model_dir, "train.epochs=2")
        interrupt_after_checkpoint(monkeypatch, lambda: pretrain(None, overrides, data=data, output=out))
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["rows"]["train"] > 0
        del provenance["rows"]  # as the earlier strop wrote it
        (out / "provenance.json").write_text(json.dumps(provenance))
        resumed = lambda: pretrain(None, [*overrides, "train.resume=true"], data=data, output=out)  # noqa: E731
        if refused:
            with pytest.raises(strop.StropError, match=r"cannot resume .*: it started with its 1 text\(s\) longer than "
                                                       r"32 tokens cut to their first 32, .* read whole, in windows"):
                resumed()
        else:  # no text that long: the rows read as they did
            assert (resumed() / "summary.json").is_file()


def test_pretrains_folder_faults_name_its_output_option_as_it_was_given(tmp_path, capsys):
    """strop pretrain takes --output: its messages named output_dir, which its help does not show."""
    from strop.cli import main

    texts, table = tmp_path / "d.txt", tmp_path / "pool.csv"
    texts.write_text("a line\nanother line\nthird line\n")
    table.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(20)))
    (tmp_path / "afile").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for data, model in ((texts, []), (table, ["model.name=mlp"])):  # the MLM path and the autoencoder's fit
        assert main(["pretrain", "--data", str(data), *model, "--output", str(tmp_path / "full"), "-q"]) == 2
        assert "--output " in capsys.readouterr().err.split("already holds files: choose another --output")[0]
        assert main(["pretrain", "--data", str(data), *model, "--output", str(tmp_path / "afile"), "-q"]) == 2
        assert "is a file, not a folder; choose another --output" in capsys.readouterr().err
        assert main(["pretrain", "--data", str(data), *model, "train.resume=true", "-q"]) == 2
        assert "train.resume=true needs --output <the run directory to continue>" in capsys.readouterr().err
        assert main(["pretrain", "--data", str(data), *model, f"output_dir={tmp_path / 'full'}", "-q"]) == 2
        assert "choose another output_dir" in capsys.readouterr().err  # given as the override: named so
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "d.txt", "full", "pool.csv"]


def test_a_strop_run_given_to_pretrain_is_refused_naming_its_base_model(tiny_model_dir, tiny_overrides, tmp_path):
    import strop
    from strop.errors import StropError
    from strop.pretrain import pretrain

    run = strop.fit(None, [*tiny_overrides, "train.epochs=1"])
    texts = tmp_path / "domain.txt"
    texts.write_text("".join(f"a line of domain text number {i}\n" for i in range(20)))
    with pytest.raises(StropError, match=rf"is a strop run \(a model with its task head\).*give the run's base "
                                         rf"model, model.name={re.escape(str(tiny_model_dir))}$"):
        pretrain(None, [f"model.name={run}", "train.quiet=true"], data=texts, output=tmp_path / "mlm")
    assert not (tmp_path / "mlm").exists()

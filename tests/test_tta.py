"""data.tta=flip: each image is predicted with its mirror wherever the model predicts, validation included; a
frozen bottom is then not cached; text and vector runs refuse it."""

import json

import numpy as np
import pytest
import yaml

timm = pytest.importorskip("timm")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import strop  # noqa: E402
from strop.errors import StropError  # noqa: E402
from strop.evaluate.scoring import evaluate_file  # noqa: E402
from test_image_classification import _fit, image_data, tiny_timm_dir  # noqa: E402,F401  (fixtures)


def _plain_probabilities(run, files, flip: bool) -> np.ndarray:
    plain = timm.create_model(f"local-dir:{run / 'model'}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=plain))
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        logits = plain(batch)
        if flip:
            logits = (logits + plain(batch.flip(3))) / 2
    return logits.softmax(-1).numpy()


@pytest.mark.parametrize("extra", [("method.freeze_layers=1",), ("method.name=freeze",)])
def test_flip_predicts_the_image_and_its_mirror_everywhere(extra, tiny_timm_dir, image_data, tmp_path):
    run = _fit(tiny_timm_dir, image_data, tmp_path / "run", "data.tta=flip", "data.augment=none", *extra)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["tta"] == "flip"
    if "method.freeze_layers=1" in extra:
        assert saved["method"]["cache_bottom"] is False  # a cache of the images as they are holds no mirrors
    assert json.loads((run / "model" / "strop.json").read_text())["image"]["tta"] == "flip"

    files = sorted(image_data["val"].rglob("*.*"))
    ours = strop.load(run, device="cpu").predict_proba([str(f) for f in files])
    assert np.allclose(ours, _plain_probabilities(run, files, flip=True), atol=1e-5)
    assert not np.allclose(ours, _plain_probabilities(run, files, flip=False), atol=1e-5)
    # what the run validated is what the saved model predicts
    summary = json.loads((run / "summary.json").read_text())
    table = tmp_path / "val.csv"
    table.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    assert evaluate_file(strop.load(run, device="cpu"), table)["loss"] == \
        pytest.approx(summary["validation"]["loss"], abs=1e-5)


def test_flip_with_a_cached_bottom_or_on_texts_is_refused(tiny_timm_dir, image_data, tiny_overrides, tmp_path):
    with pytest.raises(StropError, match="method.cache_bottom=false"):
        _fit(tiny_timm_dir, image_data, tmp_path / "cached", "data.tta=flip", "data.augment=none",
             "method.freeze_layers=1", "method.cache_bottom=true")
    assert not (tmp_path / "cached").exists()
    with pytest.raises(StropError, match="data.tta=flip is for images"):
        strop.fit(None, [*[o for o in tiny_overrides if not o.startswith("output_dir")], "data.tta=flip",
                         f"output_dir={tmp_path / 'text'}"])
    assert not (tmp_path / "text").exists()
    with pytest.raises(StropError, match="data.tta must be one of"):
        _fit(tiny_timm_dir, image_data, tmp_path / "bad", "data.tta=rotate")

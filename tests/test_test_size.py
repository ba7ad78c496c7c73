"""data.test_image_size and data.crop_pct: training crops at data.image_size, validation and prediction at the
test size and crop, the saved model (strop and plain timm) predicting as the run validated."""

import json

import numpy as np
import pytest

timm = pytest.importorskip("timm")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import strop  # noqa: E402
from strop.backbones.image import ImageBackbone  # noqa: E402
from strop.errors import StropError  # noqa: E402
from strop.evaluate.scoring import evaluate_file  # noqa: E402
from test_image_classification import _fit, image_data, tiny_timm_dir  # noqa: E402,F401  (fixtures)


def test_training_crops_at_image_size_and_the_rest_at_the_test_size(tiny_timm_dir, image_data, tmp_path,
                                                                     monkeypatch):
    seen, forward = set(), ImageBackbone.forward

    def recorded(self, level, pixel_values, **kwargs):
        seen.add((self.training, tuple(pixel_values.shape[-2:])))
        return forward(self, level, pixel_values, **kwargs)

    monkeypatch.setattr(ImageBackbone, "forward", recorded)
    run = _fit(tiny_timm_dir, image_data, tmp_path / "run", "data.augment=light", "data.test_image_size=48",
               "data.crop_pct=1.0")
    assert (True, (32, 32)) in seen and (False, (48, 48)) in seen
    assert {size for training, size in seen if training} == {(32, 32)}
    assert {size for training, size in seen if not training} == {(48, 48)}
    monkeypatch.undo()

    saved = json.loads((run / "model" / "strop.json").read_text())["image"]["data_config"]
    assert saved["input_size"] == [3, 48, 48] and saved["crop_pct"] == 1.0
    files = sorted(image_data["val"].rglob("*.*"))
    ours = strop.load(run, device="cpu").predict_proba([str(f) for f in files])
    plain = timm.create_model(f"local-dir:{run / 'model'}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=plain)
    assert tuple(config["input_size"]) == (3, 48, 48) and config["crop_pct"] == 1.0
    transform = timm.data.create_transform(**config)
    with torch.no_grad():
        theirs = plain(torch.stack([transform(Image.open(f).convert("RGB")) for f in files])).softmax(-1).numpy()
    assert np.allclose(ours, theirs, atol=1e-5)
    # what the run validated is what the saved model scores
    table = tmp_path / "val.csv"
    table.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    summary = json.loads((run / "summary.json").read_text())
    assert evaluate_file(strop.load(run, device="cpu"), table)["loss"] == \
        pytest.approx(summary["validation"]["loss"], abs=1e-5)


def test_a_test_size_without_augmentation_or_for_texts_is_refused(tiny_timm_dir, image_data, tiny_overrides,
                                                                    tmp_path):
    with pytest.raises(StropError, match="Set data.image_size instead"):
        _fit(tiny_timm_dir, image_data, tmp_path / "plain", "data.augment=none", "data.test_image_size=48")
    assert not (tmp_path / "plain").exists()
    with pytest.raises(StropError, match="data.test_image_size and data.crop_pct: for images only"):
        strop.fit(None, [*[o for o in tiny_overrides if not o.startswith("output_dir")], "data.test_image_size=48",
                         "data.crop_pct=1.0", f"output_dir={tmp_path / 'text'}"])
    assert not (tmp_path / "text").exists()
    with pytest.raises(StropError, match=r"data.crop_pct must be in \[0.1, 1\]"):
        strop.fit(None, [*tiny_overrides, "data.crop_pct=1.5"])

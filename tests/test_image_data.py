"""Image examples without timm: reading class folders and tables of paths, every kind of bad image file, the
decompression-bomb limit, the stratified split, the checkpoint import, and the message naming the `vision`
extra when timm is missing. These run in the base install too (Pillow comes with it)."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from strop.backbones.checkpoint_import import import_checkpoint, map_state_dict
from strop.config import DataConfig
from strop.errors import StropError
from strop.tasks.image_classification import ImageClassification


def write_image(path: Path, colour: int = 0, size: int = 16, mode: str = "RGB", mark: int = 0) -> Path:
    """A flat colour; `mark` shades a corner, so that images of one colour differ (a split keeps equal ones together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[..., colour] = 200
    array[:4, :4] = mark
    Image.fromarray(array).convert(mode).save(path)
    return path


def class_folders(root: Path, per_class: int = 4) -> Path:
    for c, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            write_image(root / name / f"{i}.{'png' if i % 2 else 'jpg'}", colour=c, mark=10 * i)
    return root


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header promises width x height pixels, with almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def read(path, **settings):
    return ImageClassification.read(path, DataConfig(**settings), "image", "data.train")


def test_class_folders_are_read_with_their_labels_and_any_colour_mode(tmp_path):
    root = class_folders(tmp_path / "train")
    write_image(root / "cat" / "deep" / "grey.png", mode="L")  # below the class folder, other modes
    write_image(root / "dog" / "rgba.png", mode="RGBA")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not examples
    examples = read(root)
    assert len(examples) == 10 and sorted(set(examples.targets)) == ["cat", "dog"]
    assert examples.targets[examples.inputs.index(str(root / "cat" / "deep" / "grey.png"))] == "cat"
    assert examples.skipped == ()


def _bad_files(root: Path) -> dict[str, str]:
    """Every kind of unusable file, with a word its message must hold."""
    good = write_image(root / "cat" / "whole.jpg")
    truncated = root / "cat" / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "dog" / "text.jpg").write_text("this is not a picture")
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("a stray file")
    bomb_png(root / "dog" / "bomb.png")
    (root / "cat" / "gone.png").symlink_to(root / "nowhere.png")  # a dangling link: no file to read
    os.mkfifo(root / "cat" / "pipe.png")  # reading a pipe blocks: refused unopened
    (root / "dog" / "null.jpg").symlink_to("/dev/null")  # a device reads as empty, /dev/zero without end
    return {"truncated.jpg": "truncated", "text.jpg": "not an image", "empty.png": "an empty file (0 bytes)",
            "notes.txt": "not an image", "bomb.png": "decompression-bomb", "gone.png": "does not exist",
            "pipe.png": "not a regular file", "null.jpg": "not a regular file"}


def test_every_bad_image_is_reported_by_path_and_why(tmp_path):
    root = class_folders(tmp_path / "train")
    bad = _bad_files(root)
    with pytest.raises(StropError) as error:
        read(root)
    message = str(error.value)
    assert f"{len(bad)} of the files" in message and "data.bad_images=skip" in message
    with pytest.raises(StropError) as error:  # predict's and evaluate's files: no data.* setting to suggest
        ImageClassification.read(root, DataConfig(), "image", "--input", with_targets=False)
    assert "Replace or remove them" in str(error.value) and "data.bad_images" not in str(error.value)
    for name, why in bad.items():
        assert name in message, name
        reason = message.split(name, 1)[1].split(";")[0]
        assert why in reason, (name, reason)


def test_skip_leaves_bad_images_out_and_says_how_many_and_which(tmp_path, capsys):
    root = class_folders(tmp_path / "train")
    bad = _bad_files(root)
    examples = read(root, bad_images="skip")
    assert len(examples) == 9  # the 8 generated images and whole.jpg
    assert sorted(Path(p).name for p, _ in examples.skipped) == sorted(bad)
    said = capsys.readouterr().err
    assert f"skipped {len(bad)} files" in said and all(name in said for name in bad)
    # a split keeps the record of what was left out
    train, validation = ImageClassification(labels=("cat", "dog")).split(examples, 0.3, seed=1)
    assert train.skipped == validation.skipped == examples.skipped


def test_decompression_bomb_limit_is_pillows(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "train")
    assert len(read(root)) == 8
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x16 images now exceed it
    with pytest.raises(StropError, match="decompression-bomb limit"):
        read(root)


def test_all_bad_with_skip_is_refused(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "x.jpg").write_text("no")
    with pytest.raises(StropError, match="none of the files"):
        read(tmp_path / "train", bad_images="skip")


def test_a_table_of_paths_relative_to_its_folder(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "images")
    rows = [f"images/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.*"))]
    table = tmp_path / "train.csv"
    table.write_text("file,label\n" + "\n".join(rows + ["images/cat/missing.jpg,cat"]) + "\n")
    with pytest.raises(StropError, match="path_column"):
        read(table)  # the default column is `path`
    with pytest.raises(StropError, match="missing.jpg"):
        read(table, path_column="file")
    examples = read(table, path_column="file", bad_images="skip")
    assert len(examples) == 8 and all(Path(p).is_file() for p in examples.inputs)
    assert examples.targets == [r.split(",")[1] for r in rows]
    # paths written from the working directory, a folder in the table, a missing or a lone bad file: said so
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "cwd.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with monkeypatch.context() as here, pytest.raises(StropError, match="relative to the working directory"):
        here.chdir(tmp_path)
        read(tmp_path / "lists" / "cwd.csv")
    (tmp_path / "folder.csv").write_text("path,label\nimages/cat,cat\nimages/dog/0.jpg,dog\n")
    with pytest.raises(StropError, match="a folder, not an image file"):
        read(tmp_path / "folder.csv")
    with pytest.raises(StropError, match="missing.png does not exist; give an image file, a folder of images"):
        ImageClassification.read(tmp_path / "missing.png", DataConfig(), "image", "--input", with_targets=False)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(StropError, match=r"zero.png cannot be used as an image \(an empty file"):
        ImageClassification.read(tmp_path / "zero.png", DataConfig(), "image", "--input", with_targets=False)


def test_folder_layout_mistakes_are_named(tmp_path):
    write_image(tmp_path / "flat" / "a.jpg")
    with pytest.raises(StropError, match="outside any class folder"):
        read(tmp_path / "flat")
    with pytest.raises(StropError, match="does not exist"):
        read(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StropError, match="no class folders"):
        read(tmp_path / "empty")


def test_inputs_without_labels_one_file_or_a_folder(tmp_path):
    root = class_folders(tmp_path / "images")
    one = ImageClassification.read(root / "cat" / "0.jpg", DataConfig(), "image", "--input", with_targets=False)
    assert one.inputs == [str(root / "cat" / "0.jpg")] and one.targets is None
    every = ImageClassification.read(root, DataConfig(), "image", "--input", with_targets=False)
    assert len(every.inputs) == 8


def test_predict_reads_the_files_of_a_folder_that_a_fit_on_it_reads(tmp_path):
    root = class_folders(tmp_path / "images")
    write_image(root / "cat" / ".cache" / "hidden.jpg")  # in a hidden folder: left out by both
    write_image(root / "cat" / "phone.jfif")  # JPEG under another name
    write_image(tmp_path / "elsewhere" / "more" / "0.png", colour=1)
    (root / "dog" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # followed by both
    (root / "dog" / "loop").symlink_to(root / "dog", target_is_directory=True)  # a loop: walked once
    (root / "cat" / "up").symlink_to("..", target_is_directory=True)  # up to the root, and into another class:
    (root / "cat" / "dogs").symlink_to("../dog", target_is_directory=True)  # not cats, so not followed
    fitted = read(root).inputs
    predicted = ImageClassification.read(root, DataConfig(), "image", "--input", with_targets=False).inputs
    assert predicted == fitted and len(fitted) == 10
    assert read(root).targets.count("cat") == 5  # its 4 and phone.jfif, no dog among them
    assert str(root / "cat" / "phone.jfif") in fitted and str(root / "dog" / "linked" / "more" / "0.png") in fitted


def test_a_folder_of_splits_an_empty_class_and_look_alike_classes_are_said(tmp_path, capsys):
    class_folders(tmp_path / "photos" / "train")
    class_folders(tmp_path / "photos" / "val")
    with pytest.raises(StropError, match=r"are train, val, .* give data.train=\S+train and data.validation=\S+val"):
        read(tmp_path / "photos")
    root = class_folders(tmp_path / "animals")
    (root / "bird").mkdir()
    write_image(root / "Cat" / "0.png", mark=99)
    assert set(read(root).targets) == {"cat", "Cat", "dog"}
    said = capsys.readouterr().err
    assert "class folder(s) bird of" in said and "no class of the model" in said
    assert "differ only in case are classes of their own: 'Cat' and 'cat'" in said
    (root / "fish").mkdir()
    (root / "fish" / "0.jpg").write_bytes(b"not a picture")
    assert "fish" not in read(root, bad_images="skip").targets
    assert "no usable image of class(es) fish is left" in capsys.readouterr().err


def test_seeded_stratified_split(tmp_path):
    examples = read(class_folders(tmp_path / "train", per_class=10))
    task = ImageClassification(labels=("cat", "dog"))
    first, again = task.split(examples, 0.2, seed=3), task.split(examples, 0.2, seed=3)
    assert first[1].inputs == again[1].inputs
    assert sorted(first[1].targets) == ["cat", "cat", "dog", "dog"]
    assert task.split(examples, 0.2, seed=4)[1].inputs != first[1].inputs


def test_copies_of_one_picture_under_other_names_stay_on_one_side_of_the_split(tmp_path):
    root = class_folders(tmp_path / "train", per_class=10)
    for path in list(root.rglob("*.*")):  # every picture twice, the copy under another name
        (path.parent / f"copy-{path.name}").write_bytes(path.read_bytes())
    task = ImageClassification(labels=("cat", "dog"))
    train, validation = task.split(read(root), 0.2, seed=3)
    held_out = {Path(p).read_bytes() for p in validation.inputs}
    assert len(validation) >= 4 and not held_out & {Path(p).read_bytes() for p in train.inputs}


def _wide_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)
    return path


def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped_to_one_colour(tmp_path):
    from strop.data.images import BadImage, open_rgb

    # scaled from the range of the bit depth the largest value needs: 16, 12 or 8 bits
    bright = _wide_image(tmp_path / "bright.tif", np.full((8, 8), 60000, np.uint16))
    twelve = _wide_image(tmp_path / "twelve.png", np.full((8, 8), 1000, np.uint16))
    eight = _wide_image(tmp_path / "eight.png", np.full((8, 8), 200, np.uint16))  # 8-bit values in a 16-bit file
    ramp = _wide_image(tmp_path / "ramp.tif", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    assert Image.open(twelve).mode.startswith("I") and Image.open(ramp).mode == "F"
    assert np.asarray(open_rgb(bright)).mean() == pytest.approx(60000 / 257, abs=0.5)
    assert np.asarray(open_rgb(twelve)).mean() == pytest.approx(1000 * 255 / 4095, abs=0.5)
    assert np.asarray(open_rgb(eight)).mean() == 200
    scaled = np.asarray(open_rgb(ramp))[..., 0]
    assert scaled.min() == 0 and scaled.max() == 255 and len(np.unique(scaled)) == 64
    floats = _wide_image(tmp_path / "floats.tif", np.full((8, 8), 7.5, np.float32))  # floats of 0..255
    assert np.asarray(open_rgb(floats)).mean() == 8
    for name, pixels, said in (("beyond.tif", np.full((8, 8), 300.0, np.float32), "float pixels from 300 to 300"),
                               ("negative.tif", np.full((8, 8), -5, np.int32), "integer pixels from -5 to -5")):
        with pytest.raises(BadImage, match=said):
            open_rgb(_wide_image(tmp_path / name, pixels))


def test_a_photo_stored_sideways_is_read_the_way_its_exif_orientation_says(tmp_path):
    from strop.data.images import open_rgb

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), (200, 0, 0)).save(tmp_path / "sideways.jpg", exif=exif.tobytes())
    assert open_rgb(tmp_path / "sideways.jpg").size == (20, 40)
    assert open_rgb((tmp_path / "sideways.jpg").read_bytes()).size == (20, 40)  # as strop serve receives it


# --- the checkpoint import -----------------------------------------------------------------------------------

def _net(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Flatten(), nn.Linear(width, 2))


def test_a_checkpoint_is_imported_by_name_or_by_order_and_shape(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source, target = _net(), _net()
    state = source.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "named.pth")
    assert import_checkpoint(target, tmp_path / "named.pth") == "name"
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), state.values()))
    # another naming scheme, no num_batches_tracked (as the bundled EfficientNet-Lite0 weights are)
    foreign = {f"_layer{i}": v for i, (k, v) in enumerate(state.items()) if not k.endswith("num_batches_tracked")}
    save_file(foreign, tmp_path / "foreign.safetensors")
    fresh = _net()
    assert import_checkpoint(fresh, tmp_path / "foreign.safetensors") == "order"
    assert torch.equal(fresh[1].running_mean, source[1].running_mean) and torch.equal(fresh[4].weight, source[4].weight)


def test_a_checkpoint_that_differs_is_refused_naming_the_first_tensor():
    model = _net()
    wider = {f"w{i}": v for i, (k, v) in enumerate(_net(width=5).state_dict().items())}
    with pytest.raises(StropError, match=r"tensor 0 'w0' has shape \(5, 3, 3, 3\).*'0.weight' has \(4, 3, 3, 3\)"):
        map_state_dict(model, wider)
    shorter = {f"w{i}": v for i, (k, v) in enumerate(model.state_dict().items()) if i < 3}
    with pytest.raises(StropError, match="the first without a partner is '1.bias' of the model"):
        map_state_dict(model, shorter)
    renamed_shape = {k: (v if k != "4.weight" else torch.zeros(3, 4)) for k, v in model.state_dict().items()}
    with pytest.raises(StropError, match="'4.weight' has shape"):
        map_state_dict(model, renamed_shape)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(StropError, match="weights_only=True"):
        import_checkpoint(_net(), tmp_path / "evil.pth")


# --- without timm ----------------------------------------------------------------------------------------------

def test_strop_imports_without_timm_and_names_the_vision_extra(tmp_path):
    root = class_folders(tmp_path / "train")
    script = ("import sys; sys.modules['timm'] = None\n"  # as if timm were not installed
              "import strop, strop.fit, strop.predict\n"
              "from strop.cli import main\n"
              f"sys.exit(main(['fit', 'data.train={root}', 'model.name=efficientnet-lite0', "
              f"'output_dir={tmp_path / 'run'}']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'pip install "strop[vision]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_checking_a_large_folder_shows_progress_unless_the_command_is_quiet(tmp_path, monkeypatch, capsys):
    from strop.progress import quiet_progress

    monkeypatch.setattr("strop.data.images.CHECK_BAR_FROM", 4)  # 8 images count as many
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every image
    root = class_folders(tmp_path / "pets")
    read(root)
    assert "checking images: 1/8 images" in capsys.readouterr().err
    with quiet_progress():  # strop fit --quiet (train.quiet), strop predict --quiet: their data readers too
        read(root)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("strop.data.images.CHECK_BAR_FROM", 9)
    read(root)
    assert capsys.readouterr().err == ""  # a small folder: checked in moments, no progress


def test_a_folder_of_data_files_given_for_its_file_is_named_not_read_as_images(tiny_overrides, tmp_path):
    """A folder as data.train reads as an image data set: with a text model it asked for an image model."""
    import strop
    from strop.errors import StropError

    folder = tmp_path / "csvdir"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    (folder / "dev.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    overrides = [o for o in tiny_overrides if not o.startswith("data.")]
    with pytest.raises(StropError, match=r"^data.train: .*csvdir is a folder, and holds data files \(dev.csv, "
                                         r"train.csv\), not class folders of images: name the file, e.g. "
                                         r"data.train=.*csvdir/dev.csv$"):
        strop.fit(None, [*overrides, f"data.train={folder}"])
    assert not (tmp_path / "run").exists()
    from strop.tasks import infer_task_name  # said before the model is looked at (the bundled text model by default)

    with pytest.raises(StropError, match="holds data files"):
        infer_task_name("auto", str(folder))
    with pytest.raises(StropError, match="holds data files"):  # the task named: the image reader says the same
        strop.fit(None, [*overrides, f"data.train={folder}", "task.name=image_classification"])
    (folder / "pos").mkdir()  # a class folder beside a labels file: an image data set as before
    assert infer_task_name("auto", str(folder)) == "image_classification"

"""Image examples: class folders (`train/<class>/*.jpg`), a table of image paths, single files; every file
checked before training starts.

Each file is opened and fully decoded once when it is read, so that an unreadable, truncated or non-image
file is reported by its path before the first epoch instead of crashing in the middle of one, and so that
an image whose header promises an absurd size (a decompression bomb) is refused before it is decoded.
`data.bad_images=error` stops at such files, naming them; `skip` leaves them out, says how many and which,
and the run records them (the model's strop.json, `skipped_images`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from strop.errors import StropError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".avif", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet", ".gz", ".bz2", ".xz", ".zst")
SHOWN = 10  # bad files named in a message; the rest are counted
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")  # folders of a data set


@dataclass(frozen=True)
class ImageFiles:
    """Usable image paths with their labels (None without targets), and the files left out with why."""

    paths: list[str]
    labels: list[str] | None
    bad: list[tuple[str, str]]  # (path, reason), for files that are no usable image
    lost_classes: tuple[str, ...] = ()  # classes whose every file is in `bad`


def pixel_limit() -> int:
    """Pillow's decompression-bomb limit, in pixels (Image.MAX_IMAGE_PIXELS, about 89 million by default)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0) or sys.maxsize


def _refuse_special_file(path: str | Path) -> None:
    """Raises BadImage, without opening it, for a pipe, device or socket (a link to one, in a folder from a tar
    archive or a link to /dev): reading one would block, or stream forever."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # opening it says what is wrong
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BadImage("not a regular file (a pipe, device or socket): only image files are read")


def open_rgb(path: str | Path | bytes):
    """The image at `path` (or the image file's bytes, as a client uploads them) as an RGB PIL image, fully
    decoded.

    Raises:
        BadImage: the file cannot be read, is no image Pillow knows, is truncated, or is larger than
            Pillow's decompression-bomb limit (checked on the header, before anything is decoded).
    """
    from PIL import Image

    with _read_as_bad_image(path), Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
        _within_bomb_limit(image)
        return _rgb(_upright(image))  # decodes every pixel: a truncated file fails here


def image_size(data: bytes) -> tuple[int, int]:
    """The width and height of an image file's bytes, read from its header without decoding a pixel (what
    strop serve checks on arrival, where decoding would hold up every other request); where the format can
    check its file without decoding it (PNG: every chunk's checksum, to the end), that check runs too. Pixels
    that fail to decode only fail in open_rgb.

    Raises:
        BadImage: no image Pillow knows, a header cut short or damaged, or beyond Pillow's decompression-bomb
            limit.
    """
    from PIL import Image

    with _read_as_bad_image(data), Image.open(io.BytesIO(data)) as image:
        _within_bomb_limit(image)
        size = image.size
        image.verify()
        return size


def _within_bomb_limit(image) -> None:
    width, height = image.size
    if width * height > pixel_limit():
        raise BadImage(f"{width}x{height} pixels, beyond the decompression-bomb limit of {pixel_limit():,} pixels")


@contextlib.contextmanager
def _read_as_bad_image(path: str | Path | bytes):
    """Pillow's and the file system's errors while reading `path` (or a file's bytes) as BadImage, each said."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(path, bytes):
        _refuse_special_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"beyond the decompression-bomb limit ({error})") from None
    except UnidentifiedImageError:
        if (len(path) if isinstance(path, bytes) else Path(path).stat().st_size) == 0:
            raise BadImage("an empty file (0 bytes)") from None
        raise BadImage("not an image (Pillow cannot identify the format)") from None
    except FileNotFoundError:
        raise BadImage("the file does not exist") from None
    except IsADirectoryError:
        raise BadImage("a folder, not an image file") from None
    except PermissionError:
        raise BadImage("the file cannot be read (permission denied)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # Pillow's decoders raise all of these
        raise BadImage(f"truncated or damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                       ) from None


class BadImage(Exception):
    """A file that is no usable image; the message says why."""


class UndecodableImage(StropError):
    """An image sent as bytes (strop serve) whose header was fine but whose pixels failed to decode, when the
    model read them: `data` is those bytes, so that the server can name the item it was sent as."""

    def __init__(self, message: str, data: bytes):
        super().__init__(message)
        self.data = data


def _upright(image):
    """The image as its camera meant it: a phone's photo is stored sideways with an EXIF orientation tag, which
    viewers (and Hugging Face's image loading) apply. A tag Pillow cannot apply leaves the image as stored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except (ValueError, TypeError, KeyError, SyntaxError, ZeroDivisionError):
        return image


WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # one channel of 16 or 32 bits
BIT_DEPTHS = (255.0, 4095.0, 65535.0)  # the ranges of 8-, 12- and 16-bit pixels


def _rgb(image):
    """An 8-bit RGB copy. Pillow's convert("RGB") clips wider pixels to 255, which leaves a 16-bit scan (medical,
    microscopy, depth) or a float image one flat colour: those are scaled to 0..255 from the range of the bit
    depth their largest value needs (8, 12 or 16 bits: 8-bit values written in a 16-bit file keep their
    brightness), floats from 0..1 or 0..255.

    Raises:
        BadImage: pixels outside 0..65535 (negative, or beyond 16 bits), or floats outside 0..255.
    """
    if image.mode not in (*WIDE_INTEGER_MODES, "F"):
        return image.convert("RGB")
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    depths = (1.0, 255.0) if image.mode == "F" else BIT_DEPTHS
    top = next((depth for depth in depths if high <= depth), None)
    if not np.isfinite(pixels).all() or low < 0 or top is None:
        kind = "float" if image.mode == "F" else "integer"
        raise BadImage(f"{kind} pixels from {low:g} to {high:g}, outside 0..{depths[-1]:g}: convert the image to "
                       "8 bits")
    return Image.fromarray(np.round(pixels * (255.0 / top)).astype(np.uint8), "L").convert("RGB")


CHECK_BAR_FROM = 2000  # images: a check of fewer shows no progress


def image_key(path) -> str:
    """An image compared by its bytes: the same picture under two names is one input (a split keeps both copies
    on one side; the report counts them as duplicates; a resume compares them). A file that cannot be read is its
    path. A file unchanged since it was hashed (size and modification time) is not read again in this process."""
    import os

    import stat

    try:
        status = os.stat(path)
    except OSError:
        return str(path)
    if not stat.S_ISREG(status.st_mode):  # a pipe or device: reading it would block or never end
        return str(path)
    return _bytes_hash(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 20)  # strop's data sets are far smaller: each file hashed once
def _bytes_hash(path: str, size: int, modified_ns: int) -> str:
    import hashlib

    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def check_images(paths: list[str], labels: list[str] | None, show: bool = False) -> ImageFiles:
    """Decodes each file once; keeps those that are usable images and lists the others with the reason."""
    from strop.progress import progress

    good, kept_labels, bad = [], [] if labels is not None else None, []
    large = len(paths) >= CHECK_BAR_FROM  # a smaller folder is checked in moments: no bar flashes by
    for i, path in enumerate(progress(paths, "checking images" if large else "", show and large, unit="image")):
        try:
            open_rgb(path)
        except BadImage as error:
            bad.append((path, str(error)))
            continue
        good.append(path)
        if labels is not None:
            kept_labels.append(labels[i])
    lost = () if labels is None else tuple(sorted(set(labels) - set(kept_labels)))
    return ImageFiles(good, kept_labels, bad, lost)


def settle_bad_images(files: ImageFiles, policy: str, what: str, where: str) -> None:
    """data.bad_images: `error` raises naming the bad files; `skip` says on stderr how many and which.

    Raises:
        StropError: policy `error` and some files are no usable images, or no usable image is left.
    """
    if not files.bad:
        return
    listed = "; ".join(f"{path} ({reason})" for path, reason in files.bad[:SHOWN])
    more = f"; and {len(files.bad) - SHOWN} more" if len(files.bad) > SHOWN else ""
    if policy == "error":
        skip = {"--input": ", or predict the others with --skip-bad-images", "--data": ""}.get(
            what, ", or set data.bad_images=skip to leave them out")
        if Path(where).is_file() and not is_table(Path(where)):  # one image file, given by itself
            raise StropError(f"{what}: {where} cannot be used as an image ({files.bad[0][1]})")
        raise StropError(f"{what}: {len(files.bad)} of the files in {where} cannot be used as images: {listed}{more}. "
                         f"Replace or remove them{skip}")
    if not files.paths:
        raise StropError(f"{what}: none of the files in {where} is a usable image: {listed}{more}")
    print(f"{what}: skipped {len(files.bad)} files that cannot be used as images (data.bad_images=skip): "
          f"{listed}{more}", file=sys.stderr)
    if files.lost_classes:
        print(f"{what}: no usable image of class(es) {', '.join(files.lost_classes)} is left: no class of the model",
              file=sys.stderr)


def is_table(path: Path) -> bool:
    return path.is_file() and any(path.name.lower().endswith(s) for s in TABLE_SUFFIXES)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in ("Thumbs.db", "desktop.ini")


def visible_files(folder: Path, within: Path | None = None) -> list[Path]:
    """The files under `folder`, at any depth, sorted, that the image readers list: none hidden or in a hidden
    folder, no Thumbs.db or desktop.ini. A link to a folder outside `within` (the data set's root; by default
    `folder`) is followed, once; a link to a folder inside it is not: its pictures are there already (or belong to
    another class, or the link leads back up). A link that leads nowhere is listed (reported, not passed over)."""
    import os

    root = os.path.realpath(within or folder)

    def followed(top: str, name: str) -> bool:
        path = os.path.join(top, name)
        if not _visible(Path(name)):
            return False
        real = os.path.realpath(path)
        return not os.path.islink(path) or not (real == root or real.startswith(root + os.sep))

    files, walked = [], set()
    for top, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in walked:  # outside the data set, a folder reached twice: a loop, or the same pictures twice
            folders[:] = []
            continue
        walked.add(real)
        folders[:] = sorted(name for name in folders if followed(top, name))
        files += [Path(top) / name for name in names if _visible(Path(name))]
    return sorted(files)


# files strop reads as data (tables, CoNLL, texts), compressed or not: a folder of them is no image folder
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".conll", ".conllu", ".txt", ".gz", ".bz2", ".xz")


def refuse_folder_of_data_files(root: Path, what: str) -> None:
    """Raises StropError where `root`, a folder, holds data files and no folder: the folder of a table given where
    the table was meant (a folder as data.train reads as an image data set, which would then ask for an image
    model or class folders)."""
    if any(p.is_dir() and _visible(p) for p in root.iterdir()):
        return
    data_files = sorted(p.name for p in root.iterdir() if p.is_file() and _visible(p)
                        and p.suffix.lower() in DATA_FILE_SUFFIXES)
    if data_files:
        raise StropError(f"{what}: {root} is a folder, and holds data files ({', '.join(data_files[:3])}"
                         f"{', ...' if len(data_files) > 3 else ''}), not class folders of images: name the file, "
                         f"e.g. {what}={root / data_files[0]}")


def class_folders(root: Path, what: str) -> tuple[list[str], list[str]]:
    """Every file under `root/<class>/` (any depth) and its class, sorted by path. Non-image files are kept,
    so that they are reported as such rather than silently passed over.

    Raises:
        StropError: no class folders, or images lying directly in `root` (they have no class).
    """
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and is_image_file(p))
    if loose:
        raise StropError(f"{what}: {root} holds images directly ({loose[0]}, ...), outside any class folder; an "
                         f"image folder holds one folder per class: {root}/<class>/<image>")
    if not folders:
        refuse_folder_of_data_files(root, what)
        raise StropError(f"{what}: {root} has no class folders; an image folder holds one folder per class "
                         f"({root}/<class>/<image>), or give a table with data.path_column and data.label_column")
    splits = [f.name for f in folders if f.name.lower() in SPLIT_NAMES and any(p.is_dir() for p in f.iterdir())]
    if splits and len(splits) == len(folders):  # photos/ given for photos/train: a train-versus-val classifier
        raise StropError(f"{what}: the class folders of {root} are {', '.join(splits)}, which hold folders of their "
                         f"own: a data set's splits, not its classes; give data.train={root / splits[0]}"
                         + (f" and data.validation={root / splits[1]}" if len(splits) > 1 else ""))
    paths, labels, empty = [], [], []
    for folder in folders:
        files = visible_files(folder, within=root)
        empty += [folder.name] if not files else []
        for file in files:
            paths.append(str(file))
            labels.append(folder.name)
    if not paths:
        raise StropError(f"{what}: the class folders of {root} hold no files")
    from strop.data.inputs import say_look_alikes
    from strop.data.tables import say_note

    if empty:
        say_note(f"{what}: the class folder(s) {', '.join(empty)} of {root} hold no files: no class of the model")
    say_look_alikes([folder.name for folder in folders], f"the class folders of {root}", what)
    return paths, labels


def all_images(root: Path, what: str) -> list[str]:
    """Every image file under `root`, at any depth, sorted by path (inputs to predict, without classes)."""
    paths = [str(p) for p in visible_files(root) if is_image_file(p)]  # the files a fit on the folder would read
    if not paths:
        raise StropError(f"{what}: {root} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def table_paths(path: Path, data_cfg, what: str, with_targets: bool) -> tuple[list[str], list[str] | None, object]:
    """The image paths (relative ones from the table's folder) and labels of a table, and the frame."""
    from strop.data.inputs import clean_strings, refuse_missing, require_column
    from strop.data.tables import read_table

    frame = read_table(path, what)
    column = data_cfg.path_column
    require_column(frame, column, path, what, "path_column")
    names = clean_strings(frame[column], path, what)
    refuse_missing(names, "image path", path, what)
    paths = [str(Path(name) if Path(name).is_absolute() else path.parent / name) for name in names]
    from_here = next((name for name, full in zip(names, paths) if not Path(full).exists() and Path(name).exists()),
                     None)
    if from_here is not None:  # written relative to the working directory, where the table is read from its folder
        raise StropError(f"{what}: the image paths of {path.name} are read from its folder ({path.parent}), and "
                         f"'{from_here}' is not there (it is relative to the working directory): write the paths "
                         "relative to the table's folder, or absolute")
    return paths, None, frame


def read_image_files(path: str | Path, data_cfg, what: str, with_targets: bool, read_labels) -> ImageFiles:
    """The images of `path` (a class-folder tree, a table of paths, a plain folder or one image file when
    there are no targets), checked, with data.bad_images applied.

    read_labels(frame, path, data_cfg, what): the labels of a table (the task's own reading of them).

    Raises:
        StropError: the path does not exist or holds no images; bad images where data.bad_images=error.
    """
    source = Path(path)
    if not source.exists():
        raise StropError(f"{what}: {source} does not exist; give " + (
            "a folder of class folders (<folder>/<class>/<image>) or a table of image paths and labels" if with_targets
            else "an image file, a folder of images or a table of image paths"))
    if source.is_dir():
        if with_targets:
            paths, labels = class_folders(source, what)
        else:
            paths, labels = all_images(source, what), None
    elif is_table(source):
        paths, labels, frame = table_paths(source, data_cfg, what, with_targets)
        if with_targets:
            labels = read_labels(frame, source, data_cfg, what)
    elif not with_targets:
        paths, labels = [str(source)], None  # one image file
    else:
        raise StropError(f"{what}: {source} is neither a folder of class folders nor a table of image paths "
                         f"({', '.join(TABLE_SUFFIXES[:6])}); a single image has no label")
    files = check_images(paths, labels, show=True)
    settle_bad_images(files, data_cfg.bad_images, what, str(source))
    return files

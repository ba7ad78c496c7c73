"""A saved strop image run's model scored at other test sizes and centre crops, in plain timm: which
`data.test_image_size` and `data.crop_pct` to choose (docs/images.md, "Testing at a larger size").

python bench/test_sizes.py RUN_DIR --data ../shared/data/images/cifar10/val --sizes 160,176,192 --crops 0.875,1.0

Each image is scored alone and with its mirror image (logits averaged, as strop's data.tta=flip averages
features before its linear head). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a strop run folder (its model/ is loaded)")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "images" / "cifar10" / "val"),
                        help="class folders of the images to score")
    parser.add_argument("--sizes", default="160,176,192")
    parser.add_argument("--crops", default="0.875,1.0")
    parser.add_argument("--batch-size", type=int, default=100)
    return parser.parse_args(argv)


def main(args) -> None:
    import timm
    import torch
    from PIL import Image

    model = timm.create_model(f"local-dir:{Path(args.run) / 'model'}", pretrained=True).eval()
    model = model.to(memory_format=torch.channels_last)
    names = list(model.pretrained_cfg["label_names"])
    files = [(path, names.index(folder.name)) for folder in sorted(Path(args.data).iterdir()) if folder.is_dir()
             for path in sorted(folder.iterdir())]
    images = [Image.open(path).convert("RGB") for path, _ in files]
    targets = torch.tensor([label for _, label in files])
    base = timm.data.resolve_data_config({}, model=model)
    print("| test size | crop_pct | accuracy, image and mirror | image alone | seconds |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for crop in (float(c) for c in args.crops.split(",")):
            transform = timm.data.create_transform(**{**base, "input_size": (3, size, size), "crop_pct": crop})
            started, mirrored, alone = time.perf_counter(), 0, 0
            with torch.no_grad():
                for start in range(0, len(images), args.batch_size):
                    batch = torch.stack([transform(im) for im in images[start:start + args.batch_size]])
                    batch = batch.contiguous(memory_format=torch.channels_last)
                    truth = targets[start:start + args.batch_size]
                    logits = model(batch)
                    alone += (logits.argmax(-1) == truth).sum().item()
                    mirrored += (((logits + model(batch.flip(3))) / 2).argmax(-1) == truth).sum().item()
            print(f"| {size} | {crop} | {mirrored / len(images):.3f} | {alone / len(images):.3f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main(parse_args())

"""Image benchmark: the bundled EfficientNet-Lite0 on CIFAR-10 class folders, strop against the peers a user
would otherwise write.

Rows (each in this one process, one after the other, so their ratios compare like with like):
  strop-frozen   strop fit of examples/cifar10_vgg16_style.yaml: the frozen base runs once over the images
                 (cached features), a dense softmax layer trains with Adam, batches of 64
  logreg         the same frozen features at the same size, extracted with plain timm, and scikit-learn's
                 logistic regression (the frozen-features baseline)
  strop-full     strop fit, full fine-tuning (light augmentation), on --train-per-class images a class
  torch-loop     a plain PyTorch loop with the same model, data, size, optimizer, rate, batch and epochs
  strop-lpft     linear probe, then fine-tune (Kumar et al. 2022): strop fit, full fine-tuning starting from the
                 strop-frozen run (--start, default this invocation's), on its training images

python bench/images.py                                         # every row
python bench/images.py --rows strop-frozen,logreg              # the frozen rows only
python bench/images.py --rows strop-full,torch-loop --train-per-class 100 --epochs 3
python bench/images.py --rows strop-full --set data.augment=none --set optim.warmup=0.05   # another recipe

Writes <out>/images-<UTC stamp>.json (every row's accuracy, wall seconds, images/s) and prints a Markdown table.
The machine's load average is recorded before and after: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = ["strop-frozen", "logreg", "strop-full", "torch-loop", "strop-lpft"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "images" / "cifar10"))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--size", type=int, default=128, help="image size (pixels a side)")
    parser.add_argument("--train-per-class", type=int, default=100, help="fine-tuned rows: training images a class")
    parser.add_argument("--frozen-per-class", type=int, default=0,
                        help="frozen rows: training images a class (0: all)")
    parser.add_argument("--val-per-class", type=int, default=0, help="every row: validation images a class (0: all)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuned rows: epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuned rows: the head's rate (the body: a 20th)")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuned rows")
    parser.add_argument("--start", help="strop-lpft: the linear-probe run to start from (default: this invocation's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="strop-full, strop-lpft: a config override on top of the row's own (repeatable)")
    parser.add_argument("--out", default=str(HERE / "results"))
    return parser.parse_args(argv)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def subset(data: Path, split: str, per_class: int, out: Path) -> str:
    """The class folders of `split`, or (per_class > 0) a table of the first `per_class` images of each class
    (sorted, so every row takes the same images)."""
    if per_class <= 0:
        return str(data / split)
    rows = []
    for folder in sorted(p for p in (data / split).iterdir() if p.is_dir()):
        rows += [f"{path.resolve()},{folder.name}" for path in sorted(folder.glob("*.jpg"))[:per_class]]
    table = out / f"{split}-{per_class}-per-class.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    return str(table)


def items(data: Path, split: str, per_class: int) -> list[tuple[str, int]]:
    """(path, class id) of the images `subset` takes."""
    taken, counts = [], {}
    for path, label in _folder(data / split):
        if per_class <= 0 or counts.get(label, 0) < per_class:
            taken.append((path, label))
            counts[label] = counts.get(label, 0) + 1
    return taken


def strop_frozen(args, out: Path) -> dict:
    import strop

    started = time.perf_counter()
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        run = strop.fit(str(HERE.parent / "examples" / "cifar10_vgg16_style.yaml"),
                        [f"data.train={subset(Path(args.data), 'train', args.frozen_per_class, out)}",
                         f"data.validation={subset(Path(args.data), 'val', args.val_per_class, out)}",
                         f"data.image_size={args.size}", f"output_dir={out / 'strop-frozen'}"])
    wall = time.perf_counter() - started
    summary = json.loads((run / "summary.json").read_text())
    cached = re.search(r"frozen body run once over (\d+) \+ (\d+) examples \(([\d.]+)s\)", said.getvalue())
    images, seconds = int(cached[1]) + int(cached[2]), float(cached[3])
    return {"accuracy": summary["validation"]["accuracy"], "wall_s": round(wall, 1),
            "feature_images_per_s": round(images / seconds, 1), "feature_pass_s": seconds,
            "epochs": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "train_examples": summary["train_examples"], **_inference(run, args)}


def _inference(run: Path, args) -> dict:
    """Images a second of strop.load(run).predict on the validation images (decode, preprocess, forward)."""
    import strop

    predictor = strop.load(run, device="cpu")
    files = [path for path, _ in items(Path(args.data), "val", args.val_per_class)][:300]
    started = time.perf_counter()
    predictor.predict(files)
    return {"inference_images_per_s": round(len(files) / (time.perf_counter() - started), 1)}


def _timm_model_and_transform(size: int):
    import timm

    from strop.backbones.image import efficientnet_lite0

    model, config = efficientnet_lite0()
    config = {**config, "input_size": (3, size, size)}
    return model, timm.data.create_transform(**config, is_training=False), config


def _folder(root: Path) -> list[tuple[str, int]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [(str(f), i) for i, c in enumerate(classes) for f in sorted((root / c).glob("*.jpg"))]


def logreg(args, out: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    model, transform, _ = _timm_model_and_transform(args.size)
    model.reset_classifier(0)
    model.eval()

    def features(items):
        rows = []
        with torch.no_grad():
            for i in range(0, len(items), 64):
                batch = torch.stack([transform(Image.open(f).convert("RGB")) for f, _ in items[i:i + 64]])
                rows.append(model(batch).numpy())
        return np.concatenate(rows), np.array([y for _, y in items])

    extract = time.perf_counter()
    x_train, y_train = features(items(Path(args.data), "train", args.frozen_per_class))
    x_val, y_val = features(items(Path(args.data), "val", args.val_per_class))
    extract = time.perf_counter() - extract
    classifier = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {"accuracy": round(float((classifier.predict(x_val) == y_val).mean()), 4),
            "wall_s": round(time.perf_counter() - started, 1), "feature_pass_s": round(extract, 1),
            "feature_images_per_s": round((len(y_train) + len(y_val)) / extract, 1), "train_examples": len(y_train)}


def strop_full(args, out: Path) -> dict:
    import strop

    started = time.perf_counter()
    data = Path(args.data)
    run = strop.fit(None, ["task.name=image_classification", "model.name=efficientnet-lite0",
                           f"data.train={subset(data, 'train', args.train_per_class, out)}",
                           f"data.validation={subset(data, 'val', args.val_per_class, out)}", f"data.image_size={args.size}",
                           f"output_dir={out / 'strop-full'}", f"train.epochs={args.epochs}", "train.patience=0",
                           f"train.batch_size={args.batch_size}", "optim.name=adamw",
                           f"optim.lr={args.lr / 20}", "train.quiet=true", *args.set])
    return _trained_row(run, time.perf_counter() - started, args)



def _trained_row(run: Path, wall: float, args) -> dict:
    """A fine-tuned row's figures from its run directory: accuracy, times, rates, precision and inference."""
    summary = json.loads((run / "summary.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = (run / "config.yaml").read_text()
    return {"accuracy": summary["validation"]["accuracy"], "wall_s": round(wall, 1),
            "train_images_per_s": round(sum(r["train_samples_per_s"] for r in history) / len(history), 1),
            "train_s": summary["train_seconds"], "epochs": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "train_examples": summary["train_examples"],
            "precision": re.search(r"mixed_precision: '?(\w+)", config)[1], **_inference(run, args)}

def strop_lpft(args, out: Path) -> dict:
    import strop

    start = Path(args.start) if args.start else out / "strop-frozen"
    data = Path(args.data)
    started = time.perf_counter()
    run = strop.fit(None, ["task.name=image_classification", f"model.name={start}",
                           f"data.train={subset(data, 'train', args.frozen_per_class, out)}",
                           f"data.validation={subset(data, 'val', args.val_per_class, out)}",
                           f"data.image_size={args.size}", f"output_dir={out / 'strop-lpft'}",
                           f"train.epochs={args.epochs}", "train.patience=0", f"train.batch_size={args.batch_size}",
                           "optim.name=adamw", f"optim.lr={args.lr / 10}", "train.quiet=true", *args.set])
    return {**_trained_row(run, time.perf_counter() - started, args), "start": str(start)}


def torch_loop(args, out: Path) -> dict:
    """What a user writes without strop: timm's model and transforms, an ImageFolder-like dataset, AdamW with the
    head at 20 times the body's rate (as strop does), a linear warmup and decay, the same batch and epochs."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    torch.manual_seed(1)
    started = time.perf_counter()
    model, eval_transform, config = _timm_model_and_transform(args.size)
    model.reset_classifier(10)
    train_transform = timm.data.create_transform(input_size=config["input_size"], is_training=True,
                                                 scale=(0.35, 1.0), hflip=0.5, color_jitter=None,
                                                 interpolation=config["interpolation"], mean=config["mean"],
                                                 std=config["std"])

    class Images(Dataset):
        def __init__(self, items, transform):
            self.items, self.transform = items, transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            return self.transform(Image.open(path).convert("RGB")), label

    train_items = items(Path(args.data), "train", args.train_per_class)
    train = DataLoader(Images(train_items, train_transform), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(Images(items(Path(args.data), "val", args.val_per_class), eval_transform), batch_size=64)
    head = set(id(p) for p in model.get_classifier().parameters())
    optimizer = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if id(p) not in head], "lr": args.lr / 20},
        {"params": [p for p in model.parameters() if id(p) in head], "lr": args.lr}], weight_decay=0.01)
    total = len(train) * args.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, 0.1 * total), max(0.0, (total - s) / max(1, 0.9 * total))))
    speeds, best = [], 0.0
    for _ in range(args.epochs):
        model.train()
        epoch_started, seen = time.perf_counter(), 0
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            seen += len(y)
        speeds.append(seen / (time.perf_counter() - epoch_started))
        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in val:
                right += int((model(x).argmax(-1) == y).sum())
        best = max(best, right / len(val.dataset))
    return {"accuracy": round(best, 4), "wall_s": round(time.perf_counter() - started, 1),
            "train_images_per_s": round(float(np.mean(speeds)), 1), "epochs": args.epochs,
            "train_examples": len(train_items), "precision": "no"}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / f"images-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    result = {"stamp": stamp, "args": vars(args), "cpus": os.cpu_count(), "load_before": load(), "rows": {}}
    for row in rows:
        before = load()
        measured = {"strop-frozen": strop_frozen, "logreg": logreg, "strop-full": strop_full,
                    "torch-loop": torch_loop, "strop-lpft": strop_lpft}[row](args, out)
        result["rows"][row] = {**measured, "load_before": before, "load_after": load()}
        print(row, json.dumps(result["rows"][row]), flush=True)
        (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    result["load_after"] = load()
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n| row | train images | accuracy | wall s | images/s (train or feature pass) | inference images/s | load |")
    print("|---|---|---|---|---|---|---|")
    for row, r in result["rows"].items():
        speed = r.get("train_images_per_s", r.get("feature_images_per_s"))
        print(f"| {row} | {r['train_examples']} | {r['accuracy']:.4f} | {r['wall_s']} | {speed} | "
              f"{r.get('inference_images_per_s', '')} | {r['load_before'][0]}-{r['load_after'][0]} |")
    print(f"\nwritten: {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

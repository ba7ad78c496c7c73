"""The `strop` command: a thin map from subcommands to the Python API.

  strop fit [CONFIG.yaml] [key=value ...]
  strop predict RUN_DIR --text "..." | --input FILE [--output FILE]
  strop evaluate RUN_DIR --data FILE [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from strop.errors import StropError


def cmd_fit(args: argparse.Namespace) -> int:
    from strop.fit import fit

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config] + overrides  # `strop fit key=value ...` without a YAML file
    if args.quiet:
        overrides.append("train.quiet=true")
    fit(config, overrides)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from strop.data.tables import read_table
    from strop.predict import load

    if (args.text is None) == (args.input is None):
        raise StropError("give either --text \"...\" (repeatable) or --input FILE")
    if args.output is not None:
        _check_output(Path(args.output))
    predictor = load(args.run_dir)
    if args.text is not None:
        texts = args.text
    else:
        column = args.text_column or predictor.info["text_column"]
        table = read_table(args.input, "--input")
        if column not in table.columns:
            raise StropError(f"--input: column '{column}' not found; columns found: "
                             f"{', '.join(map(str, table.columns))}. Name it with --text-column")
        texts = ["" if v is None or v != v else str(v) for v in table[column].tolist()]
    probabilities = predictor.predict_proba(texts)
    rows = [{"text": text, "label": predictor.labels[int(p.argmax())], "score": round(float(p.max()), 6),
             "probabilities": {name: round(float(v), 6) for name, v in zip(predictor.labels, p)}}
            for text, p in zip(texts, probabilities)]
    _write_predictions(rows, args.output)
    return 0


def _check_output(output: Path) -> None:
    """Before any prediction is made, so that a typo does not cost the whole run."""
    if output.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise StropError(f"--output: use a .jsonl, .csv or .tsv file; got '{output}'")
    if not output.parent.is_dir():
        raise StropError(f"--output: the folder {output.parent} does not exist; create it or write elsewhere")


def _write_predictions(rows: list[dict], output: str | None) -> None:
    """JSON lines to stdout or a .jsonl file; a .csv/.tsv file gets text, label, score and one column per class."""
    from strop.runs import atomic_write_text

    suffix = None if output is None else Path(output).suffix.lower()
    if suffix in (None, ".jsonl"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:  # .csv or .tsv (checked by _check_output)
        import pandas as pd

        flat = [{"text": r["text"], "label": r["label"], "score": r["score"],
                 **{f"p_{k}": v for k, v in r["probabilities"].items()}} for r in rows]
        text = pd.DataFrame(flat).to_csv(index=False, sep="\t" if suffix == ".tsv" else ",")
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(Path(output), text, "the predictions",
                          fix="Check that its folder exists and can be written, and that the disk has space")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from strop.evaluate.scoring import evaluate_file
    from strop.predict import load

    metrics = evaluate_file(load(args.run_dir), args.data, args.text_column, args.label_column)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"n {metrics['n']}  accuracy {metrics['accuracy']:.4f}  macro_f1 {metrics['macro_f1']:.4f}  "
          f"loss {metrics['loss']:.4f}")
    width = max(len(name) for name in metrics["labels"])
    print(f"{'':{width}}  precision  recall  f1      support")
    for name, s in metrics["per_class"].items():
        print(f"{name:{width}}  {s['precision']:.4f}     {s['recall']:.4f}  {s['f1']:.4f}  {s['support']}")
    print("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        print(f"{name:{width}}  " + " ".join(f"{v:5d}" for v in row))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strop", description="Fine-tune pretrained models on small data sets.")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fine-tune a model; writes a run directory",
                              description="Fine-tune a model as CONFIG.yaml says, with key=value overrides "
                                          "(dotted keys: data.train=reviews.csv optim.lr=3e-5 output_dir=runs/a).")
    fit.add_argument("config", nargs="?", help="YAML config file (optional)")
    fit.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    fit.set_defaults(func=cmd_fit)

    predict = commands.add_parser("predict", help="predict labels with a trained run",
                                  description="Predict labels; prints JSON lines unless --output is given.")
    predict.add_argument("run_dir", help="run directory written by strop fit")
    predict.add_argument("--text", action="append", help="a text to classify (repeatable)")
    predict.add_argument("--input", help="CSV/TSV/JSONL/Parquet file with a text column")
    predict.add_argument("--output", help="write predictions to a .jsonl, .csv or .tsv file")
    predict.add_argument("--text-column", help="text column of --input (default: the one trained on)")
    predict.set_defaults(func=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="score a trained run on a labelled file")
    evaluate.add_argument("run_dir", help="run directory written by strop fit")
    evaluate.add_argument("--data", required=True, help="labelled CSV/TSV/JSONL/Parquet file")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--text-column", help="default: the one trained on")
    evaluate.add_argument("--label-column", help="default: the one trained on")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StropError as error:
        print(f"strop {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"strop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `strop` command: a thin map from subcommands to the Python API.

  strop fit [CONFIG.yaml] [key=value ...]
  strop predict RUN_DIR --text "..." | --input FILE [--output FILE]
  strop evaluate RUN_DIR --data FILE [--json]
  strop report RUN_DIR|SEARCH_DIR|CV_DIR|CURVE_DIR
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
from pathlib import Path

from strop.errors import StropError
from strop.progress import quiet_progress
from strop.runs import check_folder_path, to_json
from strop.tasks.base import score_text


def config_and_overrides(args: argparse.Namespace, quiet_override: bool = False) -> tuple[str | None, list[str]]:
    """The config file and key=value overrides of a command that reads a config: `strop fit key=value ...` may
    leave out the YAML file (its first argument is then an override). quiet_override: --quiet becomes
    train.quiet=true."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config] + overrides
    if quiet_override and args.quiet:
        overrides.append("train.quiet=true")
    return config, overrides


def cmd_fit(args: argparse.Namespace) -> int:
    from strop.fit import fit

    config, overrides = config_and_overrides(args, quiet_override=True)
    fit(config, overrides)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from strop.fit import lr_find

    config, overrides = config_and_overrides(args, quiet_override=True)
    lr_find(config, overrides, args.output, args.steps)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from strop.predict import load

    if (args.text is None) == (args.input is None):
        raise StropError("give either --text \"...\" (repeatable) or --input FILE")
    if args.output is not None:
        _check_output(Path(args.output))
    predictor = load(args.run_dir)
    _check_pair_column(args, predictor)
    inputs = _command_line_inputs(args, predictor) if args.text is not None else _file_inputs(args, predictor)
    records = predictor.records(inputs, show=None if args.quiet else f"predicting {len(inputs)} inputs")
    if args.input is not None:
        records = _with_other_columns(records, args.input, predictor, text_column=args.text_column,
                                      text_pair_column=args.text_pair_column)
    _write_predictions(records, args.output)
    return 0


def _command_line_inputs(args: argparse.Namespace, predictor) -> list:
    """--text values (with --text-pair values for pair models), refused where blank, as fit refuses them."""
    if predictor.model.body.kind == "image":
        raise StropError("this model reads images: give an image file, a folder of images or a table of image paths "
                         "with --input")
    if predictor.model.body.kind != "text":
        raise StropError("this model reads numeric vectors: give them in a file with --input FILE")
    blank = [i + 1 for i, text in enumerate(args.text) if not text.strip()]
    if blank:
        raise StropError(f"--text number {blank[0]} is empty: give a text to predict")
    if not predictor.reads_pairs:
        if args.text_pair:
            raise StropError("--text-pair: this model reads single texts, not pairs")
        return list(args.text)
    pairs = args.text_pair or []
    if len(pairs) != len(args.text) or any(not p.strip() for p in pairs):
        raise StropError(f"this model reads text pairs: give one non-empty --text-pair for each --text "
                         f"(got {len(args.text)} --text and {len(pairs)} --text-pair)")
    return list(zip(args.text, pairs))


def _check_pair_column(args: argparse.Namespace, predictor) -> None:
    """Refuses --text-pair-column for a model that reads single texts (it would be given pairs)."""
    if args.text_pair_column is not None and not predictor.reads_pairs:
        raise StropError("--text-pair-column: this model reads single texts, not pairs; leave it out")


CONLL_TAG = re.compile(r"O|[BIESLU]-\S+")


def _looks_like_conll(lines: list[str]) -> bool:
    """Whether nearly every line is a word with a tag last (O, B-PER, ...): a CoNLL file under another name."""
    rows = [line.split() for line in lines if line.strip()]
    tagged = sum(len(fields) >= 2 and CONLL_TAG.fullmatch(fields[-1]) is not None for fields in rows)
    return len(rows) >= 3 and tagged >= 0.9 * len(rows)


def _file_inputs(args: argparse.Namespace, predictor) -> list:
    """The inputs of --input, read as the model's task reads them (the columns it was trained with)."""
    from strop.evaluate.scoring import saved_columns
    from strop.tasks import CONLL_SUFFIXES

    task = predictor.task
    columns = saved_columns(predictor.info, text_column=args.text_column, text_pair_column=args.text_pair_column,
                            bad_images="skip" if args.skip_bad_images else None)
    if Path(args.input).suffix.lower() == ".txt":  # one text per line, as data.unlabeled and --unlabeled take
        from strop.data.tables import read_text, split_lines
        from strop.selftrain import read_unlabeled

        if predictor.reads_pairs:
            second = columns.text_pair_column or "text_pair"
            raise StropError(f"--input {args.input}: a .txt file holds one text per line, and this model reads pairs "
                             f"of texts: give a table (CSV, TSV, JSONL or Parquet) with the columns "
                             f"{columns.text_column} and {second}")

        texts = read_unlabeled(args.input, columns, type(task), predictor.model.body.kind, "--input")[1]
        lines = split_lines(read_text(Path(args.input), "--input"))  # numbered as read_unlabeled reads them
        if task.level == "token" and _looks_like_conll(lines):
            raise StropError(f"--input {args.input}: its lines look like CoNLL (a word and its tags on each), where a "
                             ".txt file holds one raw text a line: name it .conll to have it read as words")
        blank = [str(number) for number, line in enumerate(lines, 1) if not line.strip()]
        if blank:  # said, so that nobody lines the predictions up with the file's lines
            print(f"note: --input {args.input}: {len(blank)} blank line{'s' if len(blank) > 1 else ''} skipped ("
                  f"{', '.join(blank[:5])}{', ...' if len(blank) > 5 else ''}); one prediction for each of its "
                  f"{len(texts)} other lines, in order", file=sys.stderr)
        return texts
    if task.level == "token" and Path(args.input).suffix.lower() not in CONLL_SUFFIXES + (".jsonl",):
        # raw texts in a table column: split into words, entities with character offsets
        from strop.data.inputs import clean_strings, refuse_missing, require_column
        from strop.data.tables import read_table

        table = read_table(args.input, "--input")
        require_column(table, columns.text_column, args.input, "--input", "text_column")
        texts = clean_strings(table[columns.text_column], args.input, "--input")
        refuse_missing(texts, "text", args.input, "--input")
        return texts
    return type(task).read(args.input, columns, predictor.model.body.kind, "--input", with_targets=False).inputs


def _with_other_columns(records: list[dict], path: str, predictor, **columns_read: str | None) -> list[dict]:
    """Each prediction after the --input table's columns that the model does not read (an id, a source), so
    that the output joins back to the input; a column named like a prediction key (a labelled file's `label`)
    is kept as input_<name> (input_input_<name> where the table has an input_<name> too: an earlier prediction's
    output). Inputs that are not a table (lines of text, CoNLL, a folder of images) have none.
    columns_read: the --text-column and --text-pair-column given, which the model reads."""
    from strop.data.tables import READERS, notes_said, read_table, table_suffix
    from strop.evaluate.scoring import saved_columns

    if Path(path).is_dir() or table_suffix(Path(path)) not in READERS:
        return records
    columns = saved_columns(predictor.info, **columns_read)
    pair_column = predictor.task.pair_column(columns)
    read = {columns.text_column, pair_column, columns.path_column, *columns.feature_columns}
    if predictor.task.level == "token" and columns.text_column == "text":
        read.add("tokens")  # a tagged JSONL's words, under the key the task reads (each prediction has the text)
    with notes_said():  # read a second time: its notes were said with its inputs
        table = read_table(path, "--input")
    table = table[[c for c in table.columns if c not in read]]
    if table.empty or len(table) != len(records):  # every reader keeps every row or refuses the file
        return records
    if table_suffix(Path(path)) == ".parquet":
        table = _parquet_integers_kept(table, path)
    # the keys of a prediction and of its table row (p_<label>), so that neither output loses an input column
    keys = set().union(*(r.keys() for r in records), *(_flat(r).keys() for r in records[:1]))
    names = [str(c) for c in table.columns]
    taken = keys | set(names)  # a new name that another column holds would make two columns, one of them lost
    for i, name in enumerate(names):
        if name in keys:
            while name in taken:
                name = f"input_{name}"
            names[i] = name
            taken.add(name)
    table.columns = names
    rows = [{name: _json_cell(value) for name, value in row.items()} for row in table.to_dict("records")]
    return [row | record for row, record in zip(rows, records)]


def _parquet_integers_kept(table, path: str):
    """The table with its integer columns as the Parquet file holds them: pandas reads an integer column with a
    null as floats (an id 7 came out as 7.0); read again with pandas' nullable types, such a column keeps its
    integers and its nulls."""
    import pandas as pd

    floats = [c for c in table.columns if table[c].dtype.kind == "f"]
    if not floats:
        return table
    exact = pd.read_parquet(path, columns=floats, dtype_backend="numpy_nullable")
    for column in floats:
        if pd.api.types.is_integer_dtype(exact[column].dtype):
            table[column] = exact[column].astype(object).where(exact[column].notna(), None)
    return table


def _json_cell(value):
    """A table cell as JSON can hold it, for the prediction it is carried into: Parquet's arrays become lists,
    structs objects, dates and times ISO 8601 text, decimals their exact text, bytes their UTF-8 text (else
    base64), a missing value null. (A timestamp column crashed the JSON writer; a list of one became its item.)"""
    import base64
    import datetime
    import decimal

    import numpy as np
    import pandas as pd

    if isinstance(value, np.ndarray):  # dates and durations as pandas' (tolist gives datetime64's nanoseconds)
        value = pd.Series(value).tolist() if value.dtype.kind in "mM" else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_cell(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or pd.isna(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):  # pandas' Timestamp is a datetime
        return value.isoformat()
    if isinstance(value, datetime.timedelta):  # pandas' Timedelta too
        return pd.Timedelta(value).isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _check_output(output: Path) -> None:
    """Before any prediction is made, so that a typo does not cost the whole run."""
    if output.suffix.lower() not in (".jsonl", ".csv", ".tsv"):
        raise StropError(f"--output: use a .jsonl, .csv or .tsv file; got '{output}'")
    if not output.parent.is_dir():
        check_folder_path(output, "--output")  # a file in the way is said as such
        raise StropError(f"--output: the folder {output.parent} does not exist; create it or write elsewhere")


def _flat(record: dict) -> dict:
    """A prediction as one table row: probabilities as p_<label> columns, other mappings as <key>_<name>
    columns, lists (labels, entities) as JSON."""
    row = {}
    for key, value in record.items():
        if isinstance(value, dict):
            prefix = "p" if key == "probabilities" else key
            row.update({f"{prefix}_{k}": v for k, v in value.items()})
        elif isinstance(value, list):
            row[key] = to_json(value, ensure_ascii=False)
        else:
            row[key] = value
    return row


def _write_predictions(rows: list[dict], output: str | None) -> None:
    """JSON lines to stdout or a .jsonl file; a .csv/.tsv file gets one flat row per prediction."""
    from strop.runs import atomic_write_text

    suffix = None if output is None else Path(output).suffix.lower()
    if suffix in (None, ".jsonl"):
        text = "".join(to_json(r, ensure_ascii=False) + "\n" for r in rows)
    else:  # .csv or .tsv (checked by _check_output)
        import pandas as pd

        # object columns: each value written as it is (an integer id column with a gap became 1.0, , 3.0)
        text = pd.DataFrame([_flat(r) for r in rows], dtype=object).to_csv(index=False,
                                                                         sep="\t" if suffix == ".tsv" else ",")
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(Path(output), text, "the predictions",
                          fix="Check that its folder exists and can be written, and that the disk has space")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from strop.evaluate.scoring import evaluate_file
    from strop.predict import load

    predictor = load(args.run_dir)
    _check_pair_column(args, predictor)
    metrics = evaluate_file(predictor, args.data, args.text_column, args.label_column, args.text_pair_column,
                            show=None if args.quiet else f"scoring {args.data}")
    if args.json:
        print(to_json(metrics))
        return 0
    print("  ".join([f"n {metrics['n']}"] + [f"{name} {score_text(metrics[name])}"
                                              for name in predictor.task.metric_names]))
    table = metrics.get("per_class") or metrics.get("per_type") or metrics.get("per_target")
    if table:
        columns = list(next(iter(table.values())))
        width = max(len(str(name)) for name in table)
        print(f"{'':{width}}  " + "  ".join(f"{c:9}" for c in columns))
        for name, scores in table.items():
            print(f"{name:{width}}  " + "  ".join(f"{v:<9.4f}" if isinstance(v, float) else f"{v:<9}"
                                                for v in scores.values()))
    if "confusion_matrix" in metrics:
        width = max(len(name) for name in metrics["labels"])
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
            print(f"{name:{width}}  " + " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from strop.cv import cross_validate

    config, overrides = config_and_overrides(args)
    cross_validate(config, overrides, args.folds, args.seeds, args.output, args.keep_runs, args.quiet)
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from strop.curve import DEFAULT_FRACTIONS, learning_curve, refit

    if args.refit is not None:
        # what only a curve that trains reads: silently ignored, a --output would leave the user looking elsewhere
        training = [name for name, given in (("--fractions", args.fractions is not None),
                                             ("--seeds", args.seeds is not None), ("--output", args.output is not None),
                                             ("--keep-runs", args.keep_runs)) if given]
        if args.config is not None or args.overrides or training:
            what = ", ".join(training) if training else "a config or overrides"
            raise StropError(f"--refit fits a finished curve again to the points it measured, in its own folder: it "
                             f"takes --metric and --target, not {what}")
        refit(args.refit, args.metric, args.target, args.quiet)
        return 0
    config, overrides = config_and_overrides(args)
    text = args.fractions if args.fractions is not None else ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)
    try:
        fractions = tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise StropError(f"--fractions must be numbers separated by commas, e.g. 0.1,0.3,1; got {args.fractions}") from None
    learning_curve(config, overrides, fractions, 3 if args.seeds is None else args.seeds, args.target, args.metric,
                   args.output, args.keep_runs, args.quiet)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from strop.pretrain import pretrain

    config, overrides = config_and_overrides(args, quiet_override=True)
    pretrain(config, overrides, args.data, args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from strop.report import report

    report(args.run_dir, quiet=args.quiet)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from strop.search import SearchOptions, search

    config, overrides = config_and_overrides(args)
    search(config, overrides, SearchOptions(trials=args.trials, storage=args.storage, study_name=args.study_name,
                                            seed=args.seed, pruner=args.pruner, keep_weights=args.keep_weights,
                                            quiet=args.quiet))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from strop.export import export

    path = export(args.run_dir, args.format, args.output)
    print(f"exported {args.run_dir} as {args.format} to {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from strop.index import runs_command

    print(runs_command(args.words, args.dir, args.filter or [], args.sort, args.reverse, args.limit, args.columns,
                       args.json))
    return 0


def add_column_options(parser: argparse.ArgumentParser, of: str = "") -> None:
    """The columns of a labelled file, where they are not those the model was trained on (evaluate, compress,
    soup: the file to score)."""
    parser.add_argument("--text-column", help=f"text column{of} (default: the one trained on)")
    parser.add_argument("--label-column", help=f"label column{of} (default: the one trained on)")
    parser.add_argument("--text-pair-column", help=f"a pair model's second text column{of} (default: the one "
                                                   "trained on)")


def columns_given(args: argparse.Namespace) -> dict[str, str]:
    given = {key: getattr(args, key) for key in ("text_column", "label_column", "text_pair_column")
             if getattr(args, key) is not None}
    if given and args.data is None:
        option = "--" + next(iter(given)).replace("_", "-")
        raise StropError(f"{option} names a column of --data, and no --data is given: give --data FILE, or leave "
                         f"{option} out (the run's validation data is read with the columns it was trained on)")
    return given


def cmd_compress(args: argparse.Namespace) -> int:
    from strop.compress import compress

    forms = None if args.forms is None else tuple(f.strip() for f in args.forms.split(",") if f.strip())
    compress(args.run_dir, forms, args.data, columns=columns_given(args))
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    from strop.soup import soup

    if args.ensemble:
        from strop.soup import ensemble

        if args.uniform:
            raise StropError("--uniform is for a soup (averaged weights); an ensemble averages every member's "
                             "predictions: drop one of the two")

        ensemble(args.runs, args.output, data=args.data, columns=columns_given(args))
    else:
        soup(args.runs, args.output, uniform=args.uniform, data=args.data, columns=columns_given(args))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from strop.distill import distill

    overrides = list(args.overrides) + (["train.quiet=true"] if args.quiet else [])
    run = distill(args.teacher, overrides, layers=args.layers, temperature=args.temperature, alpha=args.alpha,
                  unlabeled=args.unlabeled)
    if args.quiet:
        print(run)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from strop.prune import prune

    run = prune(args.run_dir, args.sparsity, list(args.overrides) + (["train.quiet=true"] if args.quiet else []),
                structure=args.structure)
    if args.quiet:  # the new run's folder, for a script (as strop distill --quiet)
        print(run)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from strop.serve import ServeOptions, require_serve, serve

    require_serve()
    limits = {name: getattr(args, name) for name in ("max_batch", "max_wait_ms", "queue_size", "max_request_bytes",
                                                     "max_texts_per_request", "max_concurrency", "max_image_pixels",
                                                     "body_timeout_s", "threads")}
    serve(args.run_dir, host=args.host, port=args.port, int8=args.int8,
          options=ServeOptions(**{name: value for name, value in limits.items() if value is not None}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from strop import __version__

    parser = argparse.ArgumentParser(prog="strop", description="Fine-tune pretrained models on small data sets.")
    parser.add_argument("--version", action="version", version=f"strop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fine-tune a model; writes a run directory",
                              description="Fine-tune a model as CONFIG.yaml says, with key=value overrides "
                                          "(dotted keys: data.train=reviews.csv optim.lr=3e-5 output_dir=runs/a).")
    fit.add_argument("config", nargs="?", help="YAML config file (optional)")
    fit.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    fit.set_defaults(func=cmd_fit)

    finder = commands.add_parser("lr-find", help="learning-rate range test: suggests optim.lr, trains nothing for keeps",
                                 description="Train briefly at an exponentially growing rate (1e-7 to 1) and "
                                             "suggest the rate where the loss falls fastest; writes "
                                             "lr_find.json and lr_find.png. The model and any run stay as they are.")
    finder.add_argument("config", nargs="?", help="YAML config file (optional)")
    finder.add_argument("overrides", nargs="*", help="key=value overrides, as for fit")
    finder.add_argument("--output", help="folder for lr_find.json and lr_find.png (default: lr-find)")
    finder.add_argument("--steps", type=int, default=100, help="optimizer steps of the test (default 100, at least 20)")
    finder.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    finder.set_defaults(func=cmd_lr_find)

    predict = commands.add_parser("predict", help="predict labels with a trained run",
                                  description="Predict with a trained run; prints JSON lines unless --output "
                                              "is given.")
    predict.add_argument("run_dir", help="run directory written by strop fit")
    predict.add_argument("--text", action="append", help="a text to predict for (repeatable)")
    predict.add_argument("--text-pair", action="append", help="pair models: the second text of each --text")
    predict.add_argument("--input", help="CSV/TSV/JSONL/Parquet file with the model's input columns "
                                         "(token models: also CoNLL; image models: an image, a folder or a table "
                                         "of image paths)")
    predict.add_argument("--output", help="write predictions to a .jsonl, .csv or .tsv file")
    predict.add_argument("--text-column", help="text column of --input (default: the one trained on)")
    predict.add_argument("--text-pair-column", help="a pair model's second text column of --input (default: the "
                                                    "one trained on)")
    predict.add_argument("--skip-bad-images", action="store_true", help="images: leave unreadable files of --input "
                         "out (named on stderr) instead of stopping")
    predict.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    predict.set_defaults(func=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="score a trained run on a labelled file")
    evaluate.add_argument("run_dir", help="run directory written by strop fit")
    evaluate.add_argument("--data", required=True, help="labelled CSV/TSV/JSONL/Parquet file (token models: CoNLL)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_column_options(evaluate)
    evaluate.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    evaluate.set_defaults(func=cmd_evaluate)

    serve = commands.add_parser("serve", help="serve a trained run over HTTP (a JSON API)",
                                description="Serve a trained run: POST /predict, GET /health, GET /info and the "
                                            "OpenAPI schema (/openapi.json, /docs). Needs "
                                            "pip install \"strop[serve]\".")
    serve.add_argument("run_dir", help="run directory written by strop fit, or an ONNX file written by strop export")
    serve.add_argument("--int8", action="store_true",
                       help="serve the model with dynamic int8 linear layers (CPU; strop compress RUN measures "
                            "what it costs in accuracy)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    serve.add_argument("--max-batch", type=int, help="inputs per micro-batch (default 64; 1: no batching)")
    serve.add_argument("--max-wait-ms", type=float, help="longest wait for a micro-batch to fill (default 10)")
    serve.add_argument("--queue-size", type=int, help="inputs waiting at most; beyond, 503 (default 512)")
    serve.add_argument("--max-request-bytes", type=int, help="largest request body; beyond, 413 (default 1048576)")
    serve.add_argument("--max-texts-per-request", type=int, help="inputs per request at most (default 256)")
    serve.add_argument("--max-concurrency", type=int, help="requests in progress at most; beyond, 503 (default 256)")
    serve.add_argument("--max-image-pixels", type=int,
                       help="image models: largest image (width x height) taken; beyond, 422 (default 40000000)")
    serve.add_argument("--body-timeout-s", type=float,
                       help="seconds a request body may take to arrive; beyond, 408 (default 30)")
    serve.add_argument("--threads", type=int, help="torch threads (default: the CPUs this process may use, less one)")
    serve.set_defaults(func=cmd_serve)

    export = commands.add_parser("export", help="write a trained run as a merged model folder or an ONNX file",
                                 description="--format merged: an adapter run (lora, ia3) folded into its base, as an "
                                             "ordinary model folder. --format onnx: one .onnx file (dynamic batch "
                                             "and sequence axes, inputs named as the tokenizer's outputs, first "
                                             "output the logits), checked against PyTorch with onnxruntime; needs "
                                             "pip install \"strop[export]\".")
    export.add_argument("run_dir", help="run directory written by strop fit")
    export.add_argument("--format", required=True, choices=("merged", "onnx"), help="merged or onnx")
    export.add_argument("--output", required=True, help="a new folder (merged) or FILE.onnx (onnx)")
    export.set_defaults(func=cmd_export)

    compress = commands.add_parser("compress", help="measure the model and its int8 and ONNX forms (one table)",
                                   description="Size on disk, parameters, latency per example at batch 1 and 32, "
                                               "and the task's metrics on the run's validation data (or --data), "
                                               "for the model as trained and each compressed form: dynamic int8 "
                                               "linear layers (PyTorch) and ONNX (onnxruntime; needs strop[export]). "
                                               "Prints the table and saves compress.json and compress.md in the run.")
    compress.add_argument("run_dir", help="run directory written by strop fit")
    compress.add_argument("--forms", default=None, help="compressed forms, comma-separated (default int8,onnx; "
                          "an image model: int8, as ONNX export takes text and vector models)")
    compress.add_argument("--data", help="labelled file to score on (default: the run's validation data)")
    add_column_options(compress, " of --data")
    compress.set_defaults(func=cmd_compress)

    soup = commands.add_parser("soup", help="average the weights of several runs of one base model (a model soup)",
                               description="Greedy soup: the runs ranked by their score on the first run's "
                                           "validation data (or --data); each joins the average only where the "
                                           "score does not fall. --uniform averages all. Writes an ordinary model "
                                           "folder.")
    soup.add_argument("runs", nargs="+", help="run directories fine-tuned from the same base model, same labels")
    soup.add_argument("--output", required=True, help="a new folder for the averaged model")
    soup.add_argument("--uniform", action="store_true", help="average every run (default: greedy)")
    soup.add_argument("--ensemble", action="store_true", help="an ensemble of the runs' predictions instead (any "
                                                             "architectures of one task; costs all of them to run)")
    soup.add_argument("--data", help="labelled file to rank and check on (default: the first run's validation data)")
    add_column_options(soup, " of --data")
    soup.set_defaults(func=cmd_soup)

    distill = commands.add_parser("distill", help="train a smaller student on a fine-tuned run's soft targets",
                                  description="Knowledge distillation: a student (the teacher with --layers of its "
                                              "blocks, initialised from them; or model.name=ANY) trained on the "
                                              "teacher's data with alpha * T^2 * KL(teacher || student at "
                                              "temperature T) + (1 - alpha) * the task's loss. A normal run "
                                              "directory results. Text and pair classification.")
    distill.add_argument("teacher", help="the teacher's run directory (its data and config are used)")
    distill.add_argument("overrides", nargs="*", help="key=value overrides of the teacher's config, e.g. output_dir=")
    distill.add_argument("--layers", type=int, default=3, help="transformer blocks the student keeps (default 3)")
    distill.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (default 2)")
    distill.add_argument("--alpha", type=float, default=0.5, help="weight of the soft targets (default 0.5)")
    distill.add_argument("--unlabeled", help="unlabelled texts to train on with the teacher's soft targets alone: a "
                                             ".txt file (one text per line) or a table with the run's text column")
    distill.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    distill.set_defaults(func=cmd_distill)

    prune = commands.add_parser("prune", help="prune a run's model (weights, channels or heads) and fine-tune it to "
                                              "recover",
                                description="--structure weights (the default): zeros the smallest --sparsity share "
                                            "of every linear layer's weights in the body, then fine-tunes on the "
                                            "run's data keeping them at zero. --structure channels: removes the "
                                            "--sparsity share of feed-forward channels from every transformer "
                                            "block (a smaller, faster model, still a plain transformers one), or "
                                            "of a CNN's convolution channels. "
                                            "--structure heads: removes the --sparsity share of attention heads "
                                            "from every block (strop rebuilds the shape on loading). Both then "
                                            "fine-tune the whole model. train.epochs=2 unless overridden; a normal "
                                            "run directory results, with prune.json: what was removed and the "
                                            "score before and after recovery.")
    prune.add_argument("run_dir", help="run directory written by strop fit")
    prune.add_argument("overrides", nargs="*", help="key=value overrides of the run's config, e.g. output_dir=")
    prune.add_argument("--sparsity", type=float, default=0.5,
                       help="share of weights set to zero, or of channels or heads removed (default 0.5)")
    prune.add_argument("--structure", choices=("weights", "channels", "heads"), default="weights",
                       help="weights: unstructured zeros (default); channels: feed-forward (or CNN) channels removed; heads: "
                            "attention heads removed")
    prune.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    prune.set_defaults(func=cmd_prune)

    search = commands.add_parser("search", help="hyperparameter search (Optuna) over the config's search: section",
                                 description="Run --trials fits (trials) with settings drawn from the config's "
                                             "search: section, each a run directory under output_dir, pruning "
                                             "those that fall behind; writes best.yaml and keeps the best run. "
                                             "Run the same command again to continue; workers given one --storage "
                                             "share the study. Needs pip install \"strop[search]\".")
    search.add_argument("config", nargs="?", help="YAML config file with a search: section")
    search.add_argument("overrides", nargs="*", help="key=value overrides, as for fit (output_dir: the search folder)")
    search.add_argument("--trials", type=int, required=True, help="trials of the study in all (earlier ones count)")
    search.add_argument("--storage", help="database URL of the study, e.g. postgresql://user:pass@host/db "
                                          "(default: SQLite in the search folder)")
    search.add_argument("--study-name", help="default: the search folder's name")
    search.add_argument("--seed", type=int, help="the sampler's seed (a single worker's search is then repeatable)")
    search.add_argument("--pruner", choices=("median", "none"), default="median",
                        help="median: stop a trial below the median of earlier trials at the same epoch (default)")
    search.add_argument("--keep-weights", action="store_true", help="keep every trial's weights, not only the best's")
    search.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    search.set_defaults(func=cmd_search)

    cv = commands.add_parser("cv", help="k-fold cross-validation and repeated seeds: every metric as mean ± std",
                             description="Train on K-1 folds and score on the held-out fold (stratified by class), "
                                         "for each of N seeds; every metric as mean ± std with a 95% interval. "
                                         "--folds 1: no folds, N seeds on the config's own split. Writes "
                                         "cv.json (and the fold files) to --output.")
    cv.add_argument("config", nargs="?", help="YAML config file (optional)")
    cv.add_argument("overrides", nargs="*", help="key=value overrides, as for fit")
    cv.add_argument("--folds", type=int, default=5, help="folds (default 5; 1: the config's split, seeds only)")
    cv.add_argument("--seeds", type=int, default=1, help="seeds from train.seed on, each with its own folds (default 1)")
    cv.add_argument("--output", help="folder for cv.json, the fold files and kept runs (default cv/<UTC time>)")
    cv.add_argument("--keep-runs", action="store_true", help="keep each fold's run directory (default: deleted "
                                                             "once scored)")
    cv.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    cv.set_defaults(func=cmd_cv)

    curve = commands.add_parser("curve", help="learning curve: how many labels to reach a score, what twice the "
                                              "data would give",
                                description="Train on growing fractions of the training data (several seeds each), "
                                            "score each run on one validation set, fit score(n) = a - b n^-c and "
                                            "answer how many labelled examples reach --target and what twice the "
                                            "data would give, with 95% bootstrap intervals. Writes curve.json and "
                                            "curve.png to --output.")
    curve.add_argument("config", nargs="?", help="YAML config file (optional)")
    curve.add_argument("overrides", nargs="*", help="key=value overrides, as for fit")
    curve.add_argument("--fractions",
                       help="shares of the training data, comma-separated (default 0.1,0.2,0.3,0.5,0.7,1)")
    curve.add_argument("--seeds", type=int, help="seeds per fraction (default 3)")
    curve.add_argument("--target", type=float, help="a score to reach: how many labelled examples it needs")
    curve.add_argument("--metric", help="the metric to fit (default: the task's lead metric, e.g. accuracy)")
    curve.add_argument("--output", help="folder for curve.json, curve.png and the subsets (default curve/<UTC time>)")
    curve.add_argument("--keep-runs", action="store_true", help="keep each run directory (default: deleted once scored)")
    curve.add_argument("--refit", metavar="FOLDER", help="fit a finished curve (its --output folder) again, for "
                                                         "another --metric or --target, without training; "
                                                         "rewrites its curve.json, curve.png and report")
    curve.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    curve.set_defaults(func=cmd_curve)

    pre = commands.add_parser("pretrain", help="continue masked-language-model pretraining on unlabelled domain text "
                                               "(or train an MLP autoencoder on unlabelled vectors)",
                              description="Masked-language-model training of model.name on the lines of --data "
                                          "(train.* and optim.* apply); with model.name=mlp, an autoencoder (MSE "
                                          "reconstruction) on the rows of a table of numeric columns. Writes a run "
                                          "whose model/ folder strop fit model.name=<output>/model starts from.")
    pre.add_argument("config", nargs="?", help="YAML config file (optional)")
    pre.add_argument("overrides", nargs="*", help="key=value overrides, as for fit (model.name, train.epochs, ...)")
    pre.add_argument("--data", required=True, help="text: a UTF-8 file of one text per line, or a table (CSV, TSV, "
                                                   "JSONL, Parquet) whose data.text_column holds them; model.name=mlp: "
                                                   "a table of numeric columns")
    pre.add_argument("--output", help="the run directory (default: output_dir, else runs/<UTC time>)")
    pre.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    pre.set_defaults(func=cmd_pretrain)

    runs = commands.add_parser("runs", help="list, show and compare the runs of a runs folder (its index)",
                               description="strop runs [FOLDER]: a table of the runs (and search trials) in FOLDER "
                                           "(default runs); strop runs show NAME: one run's status, metrics and "
                                           "config; strop runs diff A B: their config differences and metric "
                                           "changes. NAME is as listed (search/trial-0003) or a run directory.")
    runs.add_argument("words", nargs="*", help="[FOLDER] | show NAME | diff A B")
    runs.add_argument("--dir", default="runs", help="the runs folder (default runs)")
    runs.add_argument("--filter", action="append", help="KEY=VALUE, KEY!=VALUE, KEY>X, KEY<X (>=, <=), KEY~TEXT; KEY "
                                                        "is status, task, model, method, kind, a metric or a config "
                                                        "key (optim.lr); repeatable")
    runs.add_argument("--sort", help="a metric (best first) or any key (ascending)")
    runs.add_argument("--reverse", action="store_true", help="reverse the order of --sort")
    runs.add_argument("--limit", type=int, help="show the first N runs")
    runs.add_argument("--columns", help="comma-separated columns (default: name, status, task, model, method, "
                                        "metrics, epochs, seconds)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(func=cmd_runs)

    report = commands.add_parser("report", help="rebuild the report.html of a run, a search, a cv or a curve",
                                 description="Write RUN_DIR/report.html again: one self-contained page with the data "
                                             "summary, curves, confusion matrix, per-class scores, calibration, the "
                                             "worst errors and a diagnosis. Given the output folder of strop search, "
                                             "strop cv or strop curve, its report instead: the trials and parameter "
                                             "importances; the folds' scores; the learning curve and its answers.")
    report.add_argument("run_dir", help="run directory written by strop fit, or a strop search/cv/curve folder")
    report.add_argument("--quiet", "-q", action="store_true", help="do not print the report's path")
    report.set_defaults(func=cmd_report)
    return parser


class ClosedPipeTolerant:
    """Standard output that, once its reader has gone (`strop fit ... | head`), drops what is written instead of
    raising BrokenPipeError in the middle of the work: the run still finishes and saves its model."""

    def __init__(self, stream):
        self.stream, self.closed_reader = stream, False

    def write(self, text: str) -> int:
        if not self.closed_reader:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self.closed_reader = True
        return len(text)

    def flush(self) -> None:
        if not self.closed_reader:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.closed_reader = True

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def unrecognized(parser: argparse.ArgumentParser, command: str | None, rest: list[str]) -> None:
    """Exits 2 with the command's own usage (not strop's list of commands), and where an unknown option names a
    config key (`--epochs 3`), the override that sets it (`train.epochs=3`)."""
    import dataclasses

    from strop.config import Config

    keys: dict[str, list[str]] = {"output_dir": ["output_dir"]}  # a key's last part -> the keys (model.name, ...)
    for section in (f.name for f in dataclasses.fields(Config) if f.name != "output_dir"):
        for f in dataclasses.fields(getattr(Config(), section)):
            keys.setdefault(f.name, []).append(f"{section}.{f.name}")
    full = {key for named in keys.values() for key in named}
    given = [r[2:].split("=", 1)[0].replace("-", "_") for r in rest if r.startswith("--")]
    known = [key for name in given for key in ([name] if name in full else keys.get(name, []))]
    commands = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
    sub = commands.get(command, parser)
    takes_overrides = any(action.dest == "overrides" for action in sub._actions)
    hint = (f" (config keys are set as key=value: {', '.join(f'{key}=...' for key in known)})"
            if known and takes_overrides else "")
    sub.error(f"unrecognized arguments: {' '.join(rest)}{hint}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Options and key=value overrides mix in any order: `strop fit --quiet data.train=x.csv` leaves the
    # overrides after the option unparsed, as argparse fills a positional list only once.
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides = list(args.overrides) + rest
    elif rest:
        unrecognized(parser, getattr(args, "command", None), rest)
    try:
        with quiet_progress(getattr(args, "quiet", False)):  # --quiet: no bar of any part of the command
            return args.func(args)
    except StropError as error:
        print(f"strop {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"strop {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `strop` command and `python -m strop`: main(), then the exit, without the interpreter's last garbage
    collections. At exit the interpreter collects several times over every object that torch, transformers and
    their imports made (over half a million after a few-shot run; 1.4 s of a 14.6 s run on a 2-core CPU), and
    they free nothing that the end of the process does not. Frozen objects are skipped. Not in main(), which
    tests and scripts call in a process that goes on."""
    if not isinstance(sys.stdout, ClosedPipeTolerant):  # the command's own process: a script calling main() keeps
        sys.stdout = ClosedPipeTolerant(sys.stdout)      # its stdout as it was
    try:
        sys.exit(main())
    finally:  # also after argparse's exit (--help) and a traceback
        gc.freeze()


if __name__ == "__main__":
    run()

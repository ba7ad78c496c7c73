"""report.html's page: plain HTML with its style inline and its charts as PNG data URIs (matplotlib), so the
file opens anywhere, offline, and can be mailed as it is. No script: nothing runs when it is opened."""

from __future__ import annotations

import base64
import io
import warnings
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from strop.tasks.base import score_text

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:2px solid #dde2ea;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}
.sub{color:#5b6576;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#5b6576;font-size:13px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:14px}
th,td{border:1px solid #dde2ea;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.cm td{text-align:right;min-width:34px;font-variant-numeric:tabular-nums}
.finding{background:#fff;border-left:5px solid #d9822b;border-radius:6px;padding:10px 16px;margin:10px 0}
.finding h3{margin:0 0 4px}.finding ul{margin:6px 0 2px 0;padding-left:22px}
.healthy{background:#fff;border-left:5px solid #2f9e62;border-radius:6px;padding:10px 16px}
img{max-width:100%;height:auto;background:#fff;border:1px solid #dde2ea;border-radius:6px}
pre{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:10px 14px;overflow:auto;font-size:13px}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b47}.muted{color:#5b6576}
nav a{margin-right:12px;color:#2458b3;text-decoration:none}
"""


def render(analysis: dict[str, Any]) -> str:
    """The whole page for `strop.report.analyse`'s data."""
    kind = analysis.get("kind")
    parts = [_header(analysis), _diagnosis(analysis), _data(analysis), _curves(analysis)]
    if kind == "regression":
        parts += [_residuals(analysis), _per_target(analysis)]
    elif kind in ("classes", "multilabel", "tokens"):
        parts += [_confusion(analysis), _per_class(analysis), _calibration(analysis)]
    parts += [_worst(analysis), _configuration(analysis)]
    return page(f"strop report: {analysis['name']}", [p for p in parts if p], _NAV)


def page(title: str, sections: list[str], navigation: list[tuple[str, str]]) -> str:
    """A whole document: the first section (the header), a menu of the navigation entries (anchor, title)
    that some section holds, then the other sections."""
    nav = " ".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in navigation
                   if any(f'id="{anchor}"' in part for part in sections))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><main>"
            + sections[0] + f"<nav>{nav}</nav>" + "".join(sections[1:]) + "</main></body></html>\n")


_NAV = [("diagnosis", "Diagnosis"), ("data", "Data"), ("curves", "Curves"), ("confusion", "Confusion"),
        ("residuals", "Residuals"), ("scores", "Scores"), ("calibration", "Calibration"), ("worst", "Worst errors"),
        ("config", "Configuration")]


# --- pieces ----------------------------------------------------------------------------------------

def fmt(value, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1e5:
            return f"{value:.4g}"
        # four decimals as the terminal shows a score: a tiny one (an rmse of 3.2e-06) in 3 digits, not as 0.0000
        return score_text(value) if digits == 4 else f"{value:.{digits}f}"
    return escape(str(value))


def html_table(header: list[str], rows: list[list], numeric_from: int = 1, cls: str = "", digits: int = 4) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{fmt(v, digits)}</td>' if i >= numeric_from and not isinstance(v, str)
                                    else f"<td>{escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<table{f" class={cls!r}" if cls else ""}><tr>{head}</tr>{body}</table>'


def png_image(figure, alt: str) -> str:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # labels in scripts the bundled font lacks (CJK, Cyrillic in some fonts) draw as boxes in a chart, with a
        # warning per glyph on stderr; the page's tables show them as written
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return png_bytes_image(buffer.getvalue(), alt)


def png_bytes_image(data: bytes, alt: str) -> str:
    """An <img> holding a PNG file's bytes (a data URI: the page needs no other file)."""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def cards_html(cards: list[tuple[str, str]]) -> str:
    """The row of cards at a page's top: (value, what it is) each."""
    return "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards)


def new_figure(width: float = 6.4, height: float = 3.6, columns: int = 1, rows: int = 1):
    """A figure and its axes (one Axes, or an array of them for a grid)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(rows, columns)
    return figure, axes


def _header(a: dict[str, Any]) -> str:
    summary, info, data = a["summary"], a["info"], a["data"]
    metrics = summary.get("validation") or {}
    cards = [(score_text(v) if isinstance(v, float) else str(v), f"validation {k}") for k, v in metrics.items()]
    cards += [(str(summary.get("best_epoch", "?")), f"best of {summary.get('epochs_run', '?')} epochs"),
              (f"{summary.get('train_examples', data.get('train_examples', '?'))}", "training examples"),
              (f"{summary.get('validation_examples', data.get('validation_examples', '?'))}", "validation examples")]
    if summary.get("train_seconds") is not None:
        cards.append((duration(summary["train_seconds"]), "training time"))
    card_html = cards_html(cards)
    model = info.get("base_model") or (a["config"].get("model") or {}).get("name", "?")
    return (f"<h1>{escape(a['name'])}</h1><p class=\"sub\">{escape(a['task'])} · model {escape(str(model))} · "
            f"method {escape(str(info.get('method', '?')))} · {escape(a['run'])}</p><div class=\"cards\">{card_html}</div>")


def _diagnosis(a: dict[str, Any]) -> str:
    body = findings_html(a.get("findings") or [], healthy_text(a.get("checked") or list(HEALTHY), a.get("kind")))
    seeds = a.get("seeds") or {}
    if seeds:
        metric = a["summary"].get("metric", "")
        body += f"<h3>Other seeds of this config (validation {escape(metric)})</h3>" + html_table(
            ["seed", metric], [[seed, value] for seed, value in seeds.items()])
    return body


# what each check of the diagnosis found where it found nothing (report.checks_made: those made)
HEALTHY = {"overfitting": "the validation loss did not rise while the training loss fell",
           "underfitting": "training learned well beyond the label frequencies",
           "classes": "every class has enough examples", "confidence": "few errors are confident",
           "overlap": "validation shares no inputs with training"}
# a regression's checks compare with predicting the mean, and its errors with its RMSE
HEALTHY_REGRESSION = {**HEALTHY, "underfitting": "training learned well beyond predicting the mean",
                      "confidence": "few errors lie beyond three times the RMSE"}


def healthy_text(checked: list[str], kind: str | None = None) -> str:
    """The sentence of a run none of whose checks found anything, naming only the checks made."""
    words = HEALTHY_REGRESSION if kind == "regression" else HEALTHY
    parts = [words[name] for name in checked if name in words]
    said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return said[0].upper() + said[1:] + "."


# how report._key compares inputs for the overlap, by the kind of input
COMPARED = {"text": "compared by their words, ignoring case", "vector": "compared by their values",
            "image": "compared by their paths"}


def duration(seconds: float) -> str:
    """Seconds for a card: whole seconds, a tenth under 10 s (a short run is not "0 s")."""
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def findings_html(findings: list, healthy: str, title: str = "Diagnosis") -> str:
    """The section (anchor "diagnosis") of the findings, each with its evidence and fixes; `healthy` says
    what was checked when there is none."""
    if not findings:
        body = f'<div class="healthy"><b>No problem found.</b> {escape(healthy)}</div>'
    else:
        body = "".join(f'<div class="finding" data-finding="{escape(f.name)}"><h3>{escape(f.title)}</h3>'
                       f"<p>{escape(f.evidence)}</p><b>What to try</b><ul>"
                       + "".join(f"<li>{escape(fix)}</li>" for fix in f.fixes) + "</ul></div>" for f in findings)
    return f'<h2 id="diagnosis">{escape(title)}</h2>{body}'


def _data(a: dict[str, Any]) -> str:
    data = a["data"]
    if not data:
        return ""
    parts = [f"<p>{fmt(data.get('train_examples'))} training and {fmt(data.get('validation_examples'))} "
             f"validation examples; inputs: {escape(data.get('input', '?'))}"
             + (f" of {data['features']} numeric features" if "features" in data else "")
             + (f"; {data['labels_per_example']} labels per example on average" if "labels_per_example" in data else "")
             + "</p>"]
    classes = data.get("classes")
    if classes:
        kind = data.get("class_kind") or "class"
        train_counts = [c["train"] for c in classes.values()]
        positive = [c for c in train_counts if c > 0]
        ratio = max(positive) / min(positive) if positive else None
        parts.append(f"<h3>{escape(kind.capitalize())} counts</h3>")
        if ratio is not None:
            parts.append(f"<p>Imbalance: the most frequent {escape(kind)} has {ratio:.1f} times the training examples "
                         f"of the least.</p>")
        rows = [[name, c["train"], c["train"] / max(sum(train_counts), 1), c["validation"]] for name, c in classes.items()]
        parts.append(html_table([kind, "train", "share", "validation"], rows))
        if len(classes) <= 40:
            parts.append(_class_chart(classes, kind))
    for column, stats in (data.get("targets") or {}).items():
        parts.append(f"<h3>Target {escape(column)}</h3>" + html_table(
            ["split", "mean", "std", "min", "max"],
            [[split, *(stats[split].get(k) for k in ("mean", "std", "min", "max"))] for split in ("train", "validation")]))
        parts.append(_histogram(stats["histogram"], f"target {column}"))
    lengths = data.get("lengths")
    if lengths:
        parts.append("<h3>Lengths (words per example)</h3>" + html_table(
            ["split", "min", "median", "mean", "95%", "max"],
            [[split, *(lengths[split].get(k) for k in ("min", "median", "mean", "p95", "max"))]
             for split in ("train", "validation") if lengths.get(split)], digits=1))
        parts.append(_histogram(lengths["histogram"], "words per example"))
    duplicates, overlap = data.get("duplicates") or {}, data.get("overlap") or {}
    parts.append("<h3>Duplicates and overlap</h3>"
                 f"<p>{fmt(duplicates.get('train', 0))} training examples repeat another training input "
                 f"({fmt(duplicates.get('distinct', 0))} distinct inputs), "
                 f"<span class=\"{'bad' if duplicates.get('conflicting') else 'ok'}\">{fmt(duplicates.get('conflicting', 0))} "
                 f"with different labels</span>; <span class=\"{'bad' if overlap.get('count') else 'ok'}\">"
                 f"{fmt(overlap.get('count', 0))} validation inputs also occur in training</span> ("
                 f"{COMPARED.get(data.get('input') or 'text', 'compared as they are')}).</p>")
    if duplicates.get("examples"):
        parts.append(html_table(["repeated input", "copies", "labels"],
                            [[d["input"], d["copies"], " | ".join(d["targets"])] for d in duplicates["examples"]]))
    if overlap.get("examples"):
        parts.append(html_table(["validation input also in training"], [[x] for x in overlap["examples"]]))
    return '<h2 id="data">Data</h2>' + "".join(parts)


def _class_chart(classes: dict, kind: str) -> str:
    figure, axes = new_figure(max(4.0, min(10.0, 0.45 * len(classes) + 2)), 3.0)
    names = list(classes)
    x = np.arange(len(names))
    axes.bar(x - 0.2, [classes[n]["train"] for n in names], 0.4, label="train", color="#4c72b0")
    axes.bar(x + 0.2, [classes[n]["validation"] for n in names], 0.4, label="validation", color="#dd8452")
    axes.set_xticks(x, [str(n)[:18] for n in names], rotation=45 if len(names) > 6 else 0,
                    ha="right" if len(names) > 6 else "center")
    axes.set_ylabel("examples")
    axes.set_ylim(0, 1.25 * max(1, *(max(c["train"], c["validation"]) for c in classes.values())))  # the legend's room
    axes.legend(ncols=2, loc="upper center", fontsize=8)
    axes.set_title(f"{kind} counts")
    return png_image(figure, f"{kind} counts in training and validation")


def _histogram(histogram: dict, what: str) -> str:
    edges = np.asarray(histogram["edges"], dtype=np.float64)
    figure, axes = new_figure(6.4, 2.8)
    widths = np.diff(edges)
    for split, color in (("train", "#4c72b0"), ("validation", "#dd8452")):
        counts = np.asarray(histogram[split], dtype=np.float64)
        share = counts / max(counts.sum(), 1)
        axes.bar(edges[:-1], share, widths, align="edge", alpha=0.55, label=split, color=color)
    axes.set_xlabel(what)
    axes.set_ylabel("share of examples")
    axes.legend()
    return png_image(figure, f"histogram of {what}")


def _curves(a: dict[str, Any]) -> str:
    history = a["history"]
    if not history:
        return '<h2 id="curves">Training and validation curves</h2><p class="muted">metrics.jsonl is empty.</p>'
    epochs = [r["epoch"] for r in history]
    best = a["summary"].get("best_epoch")
    figure, (loss_axes, metric_axes) = new_figure(10.0, 3.6, 2)
    for key, label, color in (("train_loss", "training loss", "#4c72b0"), ("val_loss", "validation loss", "#dd8452")):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            loss_axes.plot(epochs, [np.nan if v is None else v for v in values], "o-", label=label, color=color)
    metric_keys = [k for k in history[0] if k.startswith("val_") and k != "val_loss"]
    for key in metric_keys:
        metric_axes.plot(epochs, [np.nan if r.get(key) is None else r[key] for r in history], "o-", label=key[4:])
    for axes, title in ((loss_axes, "loss"), (metric_axes, "validation metrics")):
        if best:
            axes.axvline(best, color="#888", linestyle="--", linewidth=1, label=f"best epoch {best}")
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.legend(fontsize=8)
        axes.xaxis.get_major_locator().set_params(integer=True)
    rows = [[r["epoch"], r.get("train_loss"), *[r.get(k) for k in ["val_loss"] + metric_keys], r.get("lr"),
             "best" if r["epoch"] == best else ""] for r in history]  # metrics.jsonl's flag: best so far
    table = html_table(["epoch", "train loss", "val loss", *[k[4:] for k in metric_keys], "lr", ""], rows)
    return (f'<h2 id="curves">Training and validation curves</h2>{png_image(figure, "training and validation curves")}'
            f"{table}{_contrastive(a.get('contrastive') or [])}{_self_training(a)}")


def _contrastive(history: list[dict]) -> str:
    """Few-shot's contrastive stage (contrastive/metrics.jsonl): the body tuned on pairs, epoch by epoch, before
    the head's epochs above, which train on its frozen output."""
    if not history:
        return ""
    keys = ["train_loss", "val_loss", "val_pair_accuracy", "val_pair_auc"]
    # a pair score is null where the validation pairs were of one kind only (no two examples of a class)
    rows = [[r["epoch"], r.get("step"), *["n/a" if r.get(k) is None else r[k] for k in keys], r.get("epoch_seconds")]
            for r in history]
    return ("<h3>Contrastive stage (method.name=fewshot)</h3><p>The body tuned on pairs of the labelled examples "
            "(same class: similar; different: apart) before the head's epochs above, which train on its frozen "
            "output; scored on pairs of the validation examples.</p>"
            + html_table(["epoch", "steps", "train loss", "val loss", "pair accuracy", "pair AUC", "seconds"], rows))


def _self_training(a: dict[str, Any]) -> str:
    """A self-training round's page: every round so far (data.unlabeled), what it pseudo-labelled and how it
    validated, so that a round whose pseudo-labels hurt shows beside the ones before it."""
    rounds = a.get("self_training") or []
    if not rounds:
        return ""
    metric = a["summary"].get("metric") or "loss"
    this = a["name"]
    rows = [[r["round"], r.get("pseudo_labels", 0),
             ", ".join(f"{name} {n}" for name, n in (r.get("per_class") or {}).items()) or "",
             "n/a" if r.get("pseudo_label_accuracy") is None else r["pseudo_label_accuracy"],
             (r.get("validation") or {}).get(metric), "this page" if Path(r["run"]).name == this else ""]
            for r in rounds]
    return ("<h3>Self-training rounds (data.unlabeled)</h3><p>Round 0 trains on the labelled data; each round "
            "after it, from the pretrained model again, on those and the pool's confident pseudo-labels of the round "
            "before. The last round's model is the self-training's.</p>"
            + html_table(["round", "pseudo-labels", "per class", "their accuracy (where the pool has labels)",
                          f"validation {metric}", ""], rows))


def _confusion(a: dict[str, Any]) -> str:
    kind, metrics = a["kind"], a.get("metrics") or {}
    if kind == "multilabel":
        counts = a["label_counts"]
        rows = [[name, c["tp"], c["fp"], c["fn"], c["tn"]] for name, c in counts.items()]
        return ('<h2 id="confusion">Confusion per label</h2><p>Each label is a yes/no decision at its tuned threshold '
                "(true positives, false positives, false negatives, true negatives on validation).</p>"
                + html_table(["label", "TP", "FP", "FN", "TN"], rows))
    labels = metrics.get("labels") if kind == "classes" else a.get("labels")
    matrix = metrics.get("confusion_matrix") if kind == "classes" else a.get("confusion_matrix")
    if not labels or matrix is None:
        return ""
    matrix = np.asarray(matrix)
    unit = "words" if kind == "tokens" else "examples"
    intro = f"<p>Rows: the true {'tag' if kind == 'tokens' else 'label'}; columns: the predicted one ({unit} of validation).</p>"
    if len(labels) > 25:  # a table too wide to read: the pairs most often confused instead
        pairs = [(int(matrix[i, j]), labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
                 if i != j and matrix[i, j] > 0]
        rows = [[t, p, n] for n, t, p in sorted(pairs, reverse=True)[:30]]
        return ('<h2 id="confusion">Confusion</h2><p>Too many classes for a full matrix: the pairs most often '
                "confused.</p>" + html_table(["true", "predicted", unit], rows, numeric_from=2))
    row_totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{escape(str(n))}</th>" for n in labels) + "</tr>"
    body = ""
    for i, name in enumerate(labels):
        cells = ""
        for j in range(len(labels)):
            share = matrix[i, j] / row_totals[i, 0]
            color = (f"rgba(46,125,50,{0.15 + 0.6 * share:.2f})" if i == j else f"rgba(198,40,40,{min(0.85, 1.5 * share):.2f})"
                     if matrix[i, j] else "#fff")
            cells += f'<td style="background:{color}">{matrix[i, j]}</td>'
        body += f"<tr><th>{escape(str(name))}</th>{cells}</tr>"
    return f'<h2 id="confusion">Confusion matrix</h2>{intro}<table class="cm">{head}{body}</table>'


def _per_class(a: dict[str, Any]) -> str:
    metrics = a.get("metrics") or {}
    table = metrics.get("per_class") or metrics.get("per_type")
    if not table:
        return ""
    what = "entity type" if "per_type" in metrics else "label" if a["kind"] == "multilabel" else "class"
    rows = [[name, s["precision"], s["recall"], s["f1"], s["support"]] for name, s in table.items()]
    scalars = "  ·  ".join(f"{k} {metrics[k]:.4f}" for k in ("accuracy", "macro_f1", "micro_f1", "f1", "exact_match")
                           if isinstance(metrics.get(k), float))
    return (f'<h2 id="scores">Precision, recall and F1 per {what}</h2><p>{escape(scalars)}</p>'
            + html_table([what, "precision", "recall", "F1", "support"], rows))


def _per_target(a: dict[str, Any]) -> str:
    metrics = a.get("metrics") or {}
    table = metrics.get("per_target") or {}
    rows = [[name, s["rmse"], s["mae"], s["r2"], s["spearman"]] for name, s in table.items()]
    return '<h2 id="scores">Scores per target</h2>' + html_table(["target", "RMSE", "MAE", "R²", "Spearman"], rows)


def _residuals(a: dict[str, Any]) -> str:
    parts = []
    for column, points in a["points"].items():
        true, predicted = np.asarray(points["true"]), np.asarray(points["predicted"])
        figure, (scatter, residual) = new_figure(10.0, 3.8, 2)
        low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        scatter.scatter(true, predicted, s=12, alpha=0.6, color="#4c72b0")
        scatter.plot([low, high], [low, high], color="#888", linestyle="--", linewidth=1, label="perfect")
        scatter.set_xlabel(f"true {column}")
        scatter.set_ylabel(f"predicted {column}")
        scatter.legend(fontsize=8)
        residual.scatter(predicted, predicted - true, s=12, alpha=0.6, color="#dd8452")
        residual.axhline(0, color="#888", linestyle="--", linewidth=1)
        residual.set_xlabel(f"predicted {column}")
        residual.set_ylabel("residual (predicted - true)")
        parts.append(f"<h3>{escape(column)}</h3>" + png_image(figure, f"residual plot of {column}"))
    return ('<h2 id="residuals">Residuals</h2><p>Predicted against true values on validation, and the residuals: '
            "a funnel or a curve in the right-hand plot means errors that depend on the value.</p>" + "".join(parts))


def _calibration(a: dict[str, Any]) -> str:
    calibration = a.get("calibration")
    if not calibration or not calibration["decisions"]:
        return ""
    bins = calibration["bins"]
    figure, (diagram, counts) = new_figure(10.0, 3.6, 2)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    diagram.bar(centres, [b["accuracy"] or 0 for b in bins], width=0.09, color="#4c72b0", label="accuracy")
    diagram.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1, label="perfect calibration")
    diagram.set_xlim(0, 1)
    diagram.set_ylim(0, 1)
    diagram.set_xlabel("confidence")
    diagram.set_ylabel("accuracy")
    diagram.set_title(f"reliability diagram (ECE {calibration['ece']:.3f})")
    diagram.legend(fontsize=8, loc="upper left")
    counts.bar(centres, [b["n"] for b in bins], width=0.09, color="#dd8452")
    counts.set_xlim(0, 1)
    counts.set_xlabel("confidence")
    counts.set_ylabel("decisions")
    counts.set_title("decisions per confidence bin")
    unit = {"multilabel": "each (example, label) decision", "tokens": "each word's tag"}.get(a["kind"], "each example's predicted class")
    return (f'<h2 id="calibration">Calibration</h2><p>Confidence of {unit} against how often it is right. Expected '
            f"calibration error: <b>{calibration['ece']:.4f}</b> over {fmt(calibration['decisions'])} decisions "
            f"(0 is perfect; bars under the diagonal are overconfident).</p>"
            + png_image(figure, "reliability diagram"))


def _worst(a: dict[str, Any]) -> str:
    worst, kind = a.get("worst"), a.get("kind")
    if worst is None:
        return ""
    if not worst:
        return '<h2 id="worst">Worst misclassified examples</h2><p class="ok">No validation example is wrong.</p>'
    if kind == "classes" and (a.get("data") or {}).get("input") == "image":
        rows = "".join(f"<tr><td>{_thumbnail(w['input'])}<br><span class=\"muted\">{escape(w['input'])}</span></td>"
                       f"<td>{escape(w['target'])}</td><td>{escape(w['predicted'])}</td>"
                       f"<td class=\"num\">{w['confidence']:.4f}</td><td class=\"num\">{w['p_target']:.4f}</td></tr>"
                       for w in worst)
        body = ("<table><tr><th>image</th><th>label</th><th>predicted</th><th>confidence</th><th>p(label)</th></tr>"
                f"{rows}</table>")
        intro = "The validation images the model gets wrong most confidently (a wrong label, or a case the model cannot read)."
    elif kind == "classes":
        body = html_table(["input", "label", "predicted", "confidence", "p(label)"],
                      [[w["input"], w["target"], w["predicted"], w["confidence"], w["p_target"]] for w in worst],
                      numeric_from=3)
        intro = "The validation examples the model gets wrong most confidently (a wrong label, or a case the model cannot read)."
    elif kind == "multilabel":
        body = html_table(["input", "given labels", "label", "given", "predicted", "confidence"],
                      [[w["input"], w["given"], w["label"], w["target"], w["predicted"], w["confidence"]] for w in worst],
                      numeric_from=5)
        intro = "The label decisions the model gets wrong most confidently."
    elif kind == "regression":
        body = html_table(["input", "true", "predicted", "error"],
                      [[w["input"], w["target"], w["predicted"], w["error"]] for w in worst], numeric_from=9)
        intro = ("The validation examples with the largest errors (predicted minus true, in the target's units; "
                 "ranked by the error in standard deviations of each target, so that targets of other scales "
                 "compare).")
    else:
        rows = []
        for w in worst:
            words = " ".join(escape(x["word"]) if x["target"] == x["predicted"] else
                             f'<span class="bad">{escape(x["word"])} [{escape(x["target"])}→{escape(x["predicted"])}]</span>'
                             for x in w["words"])
            rows.append(f"<tr><td>{words}</td><td class=\"num\">{w['confidence']:.4f}</td></tr>")
        body = f"<table><tr><th>sentence (wrong tags as [true→predicted])</th><th>confidence</th></tr>{''.join(rows)}</table>"
        intro = "The validation sentences with the most confident wrong tags."
    title = "Largest errors" if kind == "regression" else "Worst misclassified examples"
    return f'<h2 id="worst">{title}</h2><p>{intro}</p>{body}'


def _thumbnail(path: str, size: int = 96) -> str:
    """An image file as a small inline PNG, or nothing where it cannot be read (moved since the run)."""
    try:
        from strop.data.images import open_rgb

        image = open_rgb(path)  # as the model saw it: upright, 16-bit scaled
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    except Exception:  # noqa: BLE001 - a missing or unreadable file only loses its thumbnail
        return ""
    return f'<img alt="{escape(path)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _configuration(a: dict[str, Any]) -> str:
    provenance = a.get("provenance") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (provenance.get("versions") or {}).items())
    extra = (f"<p class=\"muted\">device {escape(str(provenance.get('device', '?')))}, precision "
             f"{escape(str(provenance.get('precision', '?')))}; {escape(versions)}</p>" if provenance else "")
    choice = provenance.get("method_choice")
    if choice:  # method.name=auto
        extra += (f"<p>method.name=auto chose <b>{escape(str(choice.get('chosen')))}</b>: "
                  f"{escape(str(choice.get('why')))}</p>")
    return (f'<h2 id="config">Configuration</h2><p>config.yaml as the run resolved it; re-run it with '
            f"<code>strop fit {escape(a['run'])}/config.yaml output_dir=...</code></p>{extra}"
            f"<pre>{escape(a['config_text'])}</pre>")

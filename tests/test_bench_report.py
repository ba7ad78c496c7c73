"""The benchmark's published record: a run's rows replace the same rows of earlier runs, others stay."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import report  # noqa: E402

ROWS = ["sst2-1k", "trec", "sst2-fs64"]
MACHINE = {"peak": {"model": "CPU", "cores": 2, "device": "cpu", "line": "peak = ..."}, "platform": "Linux",
           "versions": {"strop": "0.1.0"}}


def _result(date: str, rows: list[str], accuracy: float) -> dict:
    runs = [{"row": row, "tool": tool, "seed": 1, "accuracy": accuracy if tool == "strop" else 0.5,
             "wall_seconds": 10.0, "train_seconds": 5.0, "samples_per_s": 100.0, "peak_rss_mb": 1000.0,
             "load_before": 0.1} for row in rows for tool in ("strop", "trainer")]
    table = report.aggregate(runs)
    return {"date": date, "command": f"python bench/run.py --rows {','.join(rows)}", "commit": "abc1234",
            "machine": MACHINE, "rows": rows, "seeds": {row: 1 for row in rows}, "epochs": 5,
            "data": {row: {"train": 10, "score": 5, "classes": 2} for row in rows}, "runs": runs,
            "table": table, "ratios": report.ratios(table, runs)}


def test_a_run_replaces_its_rows_and_keeps_the_others():
    record = report.merge(None, _result("day-1", ["sst2-fs64", "sst2-1k"], 0.6), ROWS)
    record = report.merge(record, _result("day-2", ["sst2-fs64", "trec"], 0.9), ROWS)

    strop = {e["row"]: e["accuracy_mean"] for e in record["table"] if e["tool"] == "strop"}
    assert strop == {"sst2-1k": 0.6, "trec": 0.9, "sst2-fs64": 0.9}
    assert [e["row"] for e in record["table"]][::2] == ROWS  # in the canonical row order
    assert {r["row"]: r["accuracy_mean"] for r in record["ratios"]} == {"sst2-1k": 1.2, "trec": 1.8,
                                                                        "sst2-fs64": 1.8}
    # each invocation lists the rows it still holds, so every row is one invocation's
    assert [(inv["date"], inv["rows"], list(inv["seeds"])) for inv in record["invocations"]] == [
        ("day-1", ["sst2-1k"], ["sst2-1k"]), ("day-2", ["sst2-fs64", "trec"], ["sst2-fs64", "trec"])]


def test_an_invocation_left_without_rows_is_dropped_and_the_document_names_each_command():
    record = report.merge(None, _result("day-1", ["trec"], 0.6), ROWS)
    record = report.merge(record, _result("day-2", ["trec", "sst2-1k"], 0.9), ROWS)
    assert [inv["date"] for inv in record["invocations"]] == ["day-2"]

    document = report.document(record)
    assert "### day-2: trec, sst2-1k" in document and "day-1" not in document
    assert "`python bench/run.py --rows trec,sst2-1k` at commit `abc1234`" in document
    assert "| trec | strop | 1 | accuracy | 0.9000 ± — |" in document


def test_the_accuracy_gap_is_paired_by_seed_and_unpaired_seeds_are_left_out():
    accuracies = {("strop", 1): 0.80, ("trainer", 1): 0.70, ("strop", 2): 0.90, ("trainer", 2): 0.70,
                  ("trainer", 3): 0.99}  # strop failed on seed 3: the Trainer's seed 3 has no pair
    runs = [{"row": "trec", "tool": tool, "seed": seed, "accuracy": acc} for (tool, seed), acc in
            reversed(accuracies.items())]
    runs.append({"row": "trec", "tool": "strop", "seed": 3, "error": "exit 1"})
    gap = report.paired_difference(runs, "trec", "trainer")
    assert abs(gap["accuracy_diff"] - 0.15) < 1e-9
    # t(0.975, 1 degree of freedom) = 12.706; stdev of (0.10, 0.20) = 0.0707; over sqrt(2)
    assert abs(gap["accuracy_diff_ci95"] - 12.706 * 0.070711 / 2 ** 0.5) < 1e-3
    assert report.paired_difference(runs[:2], "trec", "trainer")["accuracy_diff_ci95"] is None  # one pair


def test_the_ratio_table_shows_the_paired_gap():
    result = _result("day-1", ["trec"], 0.6)
    text = report.markdown(result["table"], result["ratios"], [])
    assert "| trec | trainer | accuracy | 1.2 | +0.1000 |" in text


def test_a_stopped_run_is_published_with_the_seeds_every_tool_completed(tmp_path, monkeypatch):
    import run

    result = _result("day-1", ["trec", "sst2-1k"], 0.6)
    result["seeds"] = {"trec": 3, "sst2-1k": 2}
    # trec: seed 1 both tools, seed 2 strop only (stopped there); sst2-1k never started
    result["runs"] = [r for r in result["runs"] if r["row"] == "trec"]
    result["runs"].append({**result["runs"][0], "seed": 2, "accuracy": 0.7})
    del result["table"], result["ratios"]
    cut = report.completed_seeds(result)
    assert (cut["rows"], cut["seeds"], cut["stopped"]) == (["trec"], {"trec": 1}, {"trec": "1 of 3 planned seeds"})
    assert {(r["tool"], r["seed"]) for r in cut["runs"]} == {("strop", 1), ("trainer", 1)}

    monkeypatch.setattr(run, "DOCS", tmp_path / "benchmarks.md")
    monkeypatch.setattr(run, "DOCS_RECORD", tmp_path / "benchmarks.json")
    run.publish(result)
    document = (tmp_path / "benchmarks.md").read_text()
    assert "- seeds: trec 1; epochs: 5" in document
    assert "stopped by hand before its end; the tables hold the seeds every tool completed: trec 1 of 3" in document
    assert "| trec | strop | 1 | accuracy | 0.6000 ± — |" in document and "| sst2-1k |" not in document
    record = report.merge(report.merge(None, {**cut, "table": report.aggregate(cut["runs"]),
                                              "ratios": []}, ROWS), _result("day-2", ["sst2-1k"], 0.9), ROWS)
    assert record["invocations"][0]["stopped"] == {"trec": "1 of 3 planned seeds"}


def test_mfu_is_taken_against_the_peak_of_the_precision_the_run_trained_in():
    peak = {"peak_flops": 100e9, "bf16_peak_flops": 200e9}
    run = {"train_seconds": 10.0, "sentences": 1000, "tokens": 20_000, "n_params": 10_000_000}
    fp32 = report.derive({**run, "precision": "fp32"}, peak)
    bf16 = report.derive({**run, "precision": "bf16"}, peak)
    assert fp32["train_flops"] == bf16["train_flops"] == 6 * 10_000_000 * 20_000
    assert fp32["mfu"] == 6 * 10_000_000 * 20_000 / 10.0 / 100e9
    assert bf16["mfu"] == fp32["mfu"] / 2
    assert report.derive(dict(run), peak)["mfu"] == fp32["mfu"]  # the peers train in fp32
    assert report.derive({**run, "precision": "bf16"}, {"peak_flops": 100e9})["mfu"] == fp32["mfu"]  # no bf16 peak known


def test_writing_the_docs_keeps_the_hand_written_sections_after_the_generated_ones():
    record = report.merge(None, _result("day-1", ["trec"], 0.6), ROWS)
    hand = "## What runs\n\nEach run is a process.\n\n## A study\n\n| a | b |\n"
    first = report.document(record, hand)
    assert first.endswith(hand) and report.hand_sections(first) == hand
    again = report.document(report.merge(record, _result("day-2", ["trec"], 0.9), ROWS), report.hand_sections(first))
    assert again.endswith(hand) and "0.9000" in again and "0.6000" not in again
    assert report.hand_sections("# Benchmarks\n\nno sections\n") == ""

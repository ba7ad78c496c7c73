"""Load test of `strop serve`: requests/s and p50/p99 latency at several concurrency levels, with micro-batching
(--max-batch 64) and without (--max-batch 1), against the same model predicting one text at a time in-process.

    python bench/load_test.py RUN_DIR                       # 200 requests per level, concurrency 1, 4, 16
    python bench/load_test.py RUN_DIR --requests 100 --concurrency 1,8 --out /tmp/serving.json
    python bench/load_test.py                               # no run: fits examples/demo.yaml first (minutes)

Loopback only: the server is `strop serve RUN_DIR --host 127.0.0.1 --port 0` in a subprocess, stopped at the end.
Each request carries one text (the review texts of examples/data/reviews_dev.csv, in turn). Every level is bounded
by --requests and --time-limit seconds. Prints a Markdown table and writes the numbers as JSON (default
bench/results/serving-<UTC time>.json). The client runs on the same machine as the server: on a small machine
it takes CPU from the server, in every mode alike.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEXTS = ROOT / "examples" / "data" / "reviews_dev.csv"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a run of strop fit (default: fit examples/demo.yaml first)")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (default 200)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per level at most (default 120)")
    parser.add_argument("--max-batch", type=int, default=64, help="the micro-batching mode's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=10, help="the micro-batching mode's --max-wait-ms")
    parser.add_argument("--threads", type=int, help="torch threads, server and baseline (default: the server's, "
                                                    "the CPUs less one)")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/serving-<UTC time>.json)")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.requests < 1 or not args.levels or min(args.levels) < 1 or args.time_limit <= 0:
        parser.error("--requests, --concurrency levels and --time-limit must be positive")
    return args


def read_texts() -> list[str]:
    with TEXTS.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f) if row["text"].strip()]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(latencies: list[float], elapsed: float, errors: int) -> dict:
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 2) if elapsed > 0 else None,
            "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1)}


# --- the baseline: the same model, one text at a time, in this process --------------------------------------------

def baseline(run_dir: str, texts: list[str], n: int, time_limit: float, threads: int | None) -> dict:
    import torch

    import strop
    from strop.serve import default_threads

    torch.set_num_threads(threads or default_threads())  # as the server sets them
    predictor = strop.load(run_dir, device="cpu")
    for text in texts[:5]:
        predictor.records([text])  # warm-up
    latencies, start = [], time.perf_counter()
    for i in range(n):
        if time.perf_counter() - start > time_limit:
            break
        t = time.perf_counter()
        predictor.records([texts[i % len(texts)]])
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - start, 0)


# --- the server -----------------------------------------------------------------------------------------------------

class Server:
    """`strop serve` in a subprocess on 127.0.0.1 and a free port; stopped (SIGINT, then kill) on exit."""

    def __init__(self, run_dir: str, max_batch: int, max_wait_ms: float, threads: int | None):
        command = [sys.executable, "-m", "strop.cli", "serve", run_dir, "--host", "127.0.0.1", "--port", "0",
                   "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
        if threads:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.url, self.log = None, []
        deadline = time.monotonic() + 300
        while self.url is None:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("strop serve did not start:\n" + "".join(self.log[-20:]))
            self.log.append(line)
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            self.url = found.group() if found else None
        # keep reading its output so that the pipe never fills
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def stop(self) -> None:
        """Ctrl-C (a graceful stop), then, after 60 s (a starved machine), SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                print("strop serve did not stop within 60 s of SIGINT: killed", file=sys.stderr)
                self.process.kill()
                self.process.wait()

    def peak_rss_mb(self) -> float | None:
        """The server process's peak resident memory so far (Linux), MB."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return round(int(found.group(1)) / 1024, 1) if found else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


async def load(url: str, texts: list[str], n: int, concurrency: int, time_limit: float) -> dict:
    """n requests of one text each, `concurrency` at a time, for at most time_limit seconds."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(60):  # ready?
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(1)
        for text in texts[:5]:  # warm-up, not measured
            (await client.post("/predict", json={"texts": [text]})).raise_for_status()
        before = (await client.get("/health")).json()
        latencies, errors, counter = [], 0, iter(range(n))
        start = time.perf_counter()
        deadline = start + time_limit

        async def worker():
            nonlocal errors
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                try:
                    response = await client.post("/predict", json={"texts": [texts[i % len(texts)]]})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        after = (await client.get("/health")).json()
    result = summary(latencies, elapsed, errors)
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = round((after["predicted"] - before["predicted"]) / batches, 2) if batches else None
    return result


# --- the report -----------------------------------------------------------------------------------------------------

def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import torch

    return {"cpu": model, "cpus": len(os.sched_getaffinity(0)), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__}


def table(rows: list[dict]) -> str:
    lines = ["| concurrency | mode | requests/s | p50 ms | p99 ms | mean batch | errors | server peak RSS MB | "
             "load (1 min) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        batch = "—" if r.get("mean_batch") is None else f"{r['mean_batch']:.1f}"
        rss = "—" if r.get("server_peak_rss_mb") is None else f"{r['server_peak_rss_mb']:.0f}"
        lines.append(f"| {r['concurrency']} | {r['mode']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {batch} | {r['errors']} | {rss} | {r['load_1m']:.1f} |")
    return "\n".join(lines)


def fit_demo() -> str:
    run_dir = tempfile.mkdtemp(prefix="strop-serve-bench-")
    print(f"no run given: fitting examples/demo.yaml into {run_dir} (minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "strop.cli", "fit", str(ROOT / "examples" / "demo.yaml"),
                    f"output_dir={run_dir}/run", "train.keep_checkpoint=false", "--quiet"], check=True, cwd=ROOT)
    return f"{run_dir}/run"


def main(argv=None) -> int:
    args = parse_args(argv)
    run_dir = args.run_dir or fit_demo()
    texts = read_texts()
    started = datetime.now(timezone.utc)
    from strop.serve import default_threads

    info = {"run_dir": str(run_dir), "requests_per_level": args.requests, "time_limit_s": args.time_limit,
            "threads": args.threads or default_threads(),
            "max_wait_ms": args.max_wait_ms, "started": started.isoformat(timespec="seconds"),
            "machine_before": machine()}
    rows = []
    out = args.out or HERE / "results" / f"serving-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every level: what was measured survives a crash
        info["rows"] = sorted(rows, key=lambda r: (r["concurrency"], r["mode"]))
        out.write_text(json.dumps(info, indent=1) + "\n")

    print(f"baseline: {args.requests} texts one at a time in-process", file=sys.stderr)
    rows.append({"concurrency": 1, "mode": "in-process, one at a time",
                 **baseline(run_dir, texts, args.requests, args.time_limit, args.threads),
                 "load_1m": round(os.getloadavg()[0], 2)})
    save()
    batching = f"server, micro-batching (max-batch {args.max_batch}, max-wait {args.max_wait_ms:g} ms)"
    for mode, max_batch in ((batching, args.max_batch), ("server, no batching (max-batch 1)", 1)):
        with Server(run_dir, max_batch, args.max_wait_ms, args.threads) as server:
            for level in args.levels:
                print(f"{mode}: concurrency {level}", file=sys.stderr)
                result = asyncio.run(load(server.url, texts, args.requests, level, args.time_limit))
                rows.append({"concurrency": level, "mode": mode, **result, "load_1m": round(os.getloadavg()[0], 2),
                             "server_peak_rss_mb": server.peak_rss_mb()})
                save()
    info["machine_after"] = machine()
    save()
    print(table(info["rows"]))
    print(f"\nload average before {info['machine_before']['load_average']}, after "
          f"{info['machine_after']['load_average']} on {info['machine_before']['cpus']} CPUs "
          f"({info['machine_before']['cpu']}); JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Crash safety, shown by a campaign: `strop fit` is killed with SIGKILL at random moments, resumed each time,
and must end with the weights and metrics of a run that was never interrupted.

    nice -n 10 python bench/crash_campaign.py --kills 20 --text-kills 3 --targeted all --out bench/results/crash.json
    python bench/crash_campaign.py --kills 3 --text-kills 0        # the CI form (tests/test_crash.py)

For each scenario (an MLP on generated numeric data, which trains in a fraction of a second per epoch; and a
tiny random BERT on generated texts) the campaign

1. runs the fit once without interruption;
2. then, `--kills` times, starts it in a second run directory (with train.resume=true once that directory holds a
   run) and sends SIGKILL after a seeded random delay: with probability 0.15 a delay from the start (imports,
   data, model, the run directory's first files, the first epoch), otherwise a random share of the remaining
   epochs after the process enters the training loop (remaining / kills left on average, never past the last
   epoch, so the kills spread over the whole run and each attempt ends in a kill): a training step,
   evaluation, the metrics line, checkpoint writing or publishing, as the time falls;
3. after every kill checks that `checkpoints/last` (or the `.last.old` folder that `recover_dir` restores) is
   absent or a whole checkpoint: every file present and matching its sha256 in checksums.json;
4. resumes the run to completion, and compares model/model.safetensors and checkpoints/last/model.safetensors
   tensor by tensor, model/strop.json, metrics.jsonl and summary.json with the uninterrupted run, leaving out the
   fields that measure time (epoch_seconds, train_samples_per_s, train_tokens_per_s, time; train_seconds and
   wall_seconds_this_session). It also checks that no temporary file or staging folder is left behind.

`--targeted` adds kills at chosen points instead of random times (each on a fresh run, then one resume), for
points too brief to be hit by chance: `evaluation:2` (entering epoch 2's validation), `checkpoint:1` (epoch 1's
metrics line written, its checkpoint not yet), `checkpoint-file:3` (inside a checkpoint's staging folder),
`publish-aside:1` (between the two renames that replace checkpoints/last), `published:2` (new checkpoint in place,
the old one not yet deleted), `final-model:1` (writing the final model), `training:1` (config and provenance
written, no checkpoint yet).

Every fit runs `strop.cli.main(["fit", ...])` in a process of its own, with hooks that only record which phase it
is in (and, for targeted kills, SIGKILL it at a point). `--launch fork` (default) forks it from this process, which
has imported strop, torch and transformers once; `--launch exec` starts a fresh interpreter for every fit, imports
included (seconds more per fit). OMP_NUM_THREADS=1 for every fit: the same arithmetic in each, and no thread
oversubscription on a shared machine.

Prints one line per kill and a summary; writes everything to --out (JSON). Exit code 0 when every scenario ended
equal to its uninterrupted run with every checkpoint whole, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import csv
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in every fit
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no tokenizer threads across fork

TIMING = ("epoch_seconds", "train_samples_per_s", "train_tokens_per_s", "time")
SUMMARY_TIMING = ("train_seconds", "wall_seconds_this_session")
STARTUP_SHARE = 0.15  # of random kills, those timed from the start of the process rather than of training
TARGETS = ("evaluation:2", "checkpoint:1", "checkpoint-file:3", "publish-aside:1", "published:2", "final-model:1",
           "training:1")
# What the last recorded hook says the process was doing when it was killed.
PHASES = {"startup": "startup", "training": "training step", "evaluation": "evaluation",
          "after-evaluation": "metrics line", "checkpoint": "checkpoint write", "checkpoint-file": "checkpoint write",
          "publish-aside": "checkpoint publish", "published": "checkpoint publish", "final": "final validation",
          "final-model": "final model save", "model-published": "final model save",
          "metrics-rewritten": "training step",  # a resumed run's metrics.jsonl rewritten, its first epoch begun
          "summary-written": "complete", "exit": "complete"}

POSITIVE = ["good", "great", "fine", "happy", "love", "best", "nice", "excellent", "fun", "wonderful"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "worst", "boring", "terrible", "dull", "ugly"]
NEUTRAL = ["the", "film", "was", "a", "movie", "this", "very", "story", "it", "and", "plot", "really"]

TINY_BERT = """
import sys, torch
from transformers import AutoTokenizer, BertConfig, BertModel
from strop.backbones.bundled import BUNDLED
torch.manual_seed(0)
config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128)
BertModel(config).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(BUNDLED.get("minilm-l6")()).save_pretrained(sys.argv[1])
"""


# --- the fit process ----------------------------------------------------------------------------------------


def install_hooks(trace: Path, kill_at: str | None) -> None:
    """Wraps strop's functions so that the process appends `<time> <phase> <count>` to `trace` as it moves from
    phase to phase, and kills itself (SIGKILL) on reaching `kill_at` ("phase:count"). Records only: what the
    wrapped functions do is unchanged."""
    import strop.fit  # noqa: F401  (the module, for sys.modules)
    import strop.train.checkpoint as checkpoint
    import strop.train.loop as loop

    fit = sys.modules["strop.fit"]  # the module: `strop.fit` the attribute is the function

    fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    counts = collections.Counter()

    def mark(phase: str) -> None:
        counts[phase] += 1
        os.write(fd, f"{time.time():.6f} {phase} {counts[phase]}\n".encode())
        if kill_at == f"{phase}:{counts[phase]}":
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(module, name, before=None, after=None):
        real = getattr(module, name)

        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            if before:
                mark(before)
            result = real(*args, **kwargs)
            if after:
                mark(after)
            return result

        setattr(module, name, wrapper)

    wrap(loop, "train", "training", "final")
    wrap(loop, "evaluate", "evaluation", "after-evaluation")
    wrap(loop, "save_checkpoint", "checkpoint", "training")  # entered once the epoch's metrics line is written
    wrap(checkpoint, "save_file", None, "checkpoint-file")  # a weights file written into the staging folder
    wrap(fit, "save_model", "final-model")
    renamed = {"last": "published", ".last.old": "publish-aside", "model": "model-published",
               "summary.json": "summary-written", "metrics.jsonl": "metrics-rewritten"}
    real_replace = os.replace

    def replace(src, dst, **kwargs):  # strop.runs renames through os.replace
        real_replace(src, dst, **kwargs)
        if Path(dst).name in renamed:
            mark(renamed[Path(dst).name])

    os.replace = replace
    mark("startup")


def fit_in_this_process(args: list[str], trace: Path, kill_at: str | None, modules: Path | None = None) -> int:
    """One `strop fit` with the hooks installed; modules: where to list the modules it imported."""
    import torch

    before = set(sys.modules)
    torch.set_num_threads(1)
    install_hooks(trace, kill_at)
    from strop.cli import main

    code = main(["fit", *args])
    with Path(trace).open("a") as file:
        file.write(f"{time.time():.6f} exit 1\n")
    if modules is not None:
        modules.write_text("\n".join(sorted(set(sys.modules) - before)) + "\n")
    return code


@dataclass
class Fit:
    """A running fit: its process, and when it started."""

    pid: int
    started: float
    process: subprocess.Popen | None = None
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.process is not None:
                self.returncode = self.process.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> int:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait()

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise TimeoutError
            time.sleep(0.005)
        return self.returncode


def start_fit(args: list[str], trace: Path, log: Path, launch: str, kill_at: str | None = None,
              modules: Path | None = None) -> Fit:
    trace.unlink(missing_ok=True)
    started = time.time()
    if launch == "exec":
        command = [sys.executable, __file__, "--child", str(trace), kill_at or "-", *args]
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        return Fit(process.pid, started, process)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the fit
        code = 70
        try:
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            code = fit_in_this_process(args, trace, kill_at, modules)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return Fit(pid, started)


def warm_up(args: list[str], work: Path, name: str, timeout: float) -> None:
    """--launch fork: one short fit in a child that lists the modules it imported (torch's optimizer and
    dynamo machinery, the hub client, metrics, ...); importing them here, without running anything, lets every
    later fork start as a warm process, so that the kills fall into strop's work rather than into imports."""
    import importlib

    modules = work / f"{name}-warmup.modules"
    fit = start_fit(args + ["train.epochs=1", f"output_dir={work / (name + '-warmup')}"], work / f"{name}-warmup.trace",
                    work / f"{name}-warmup.log", "fork", modules=modules)
    if fit.wait(timeout) != 0:
        raise SystemExit(f"{name}: the warm-up fit failed (exit {fit.returncode}); see {work / (name + '-warmup.log')}")
    for module in modules.read_text().split():
        try:
            importlib.import_module(module)
        except Exception:  # e.g. a module made on the fly, that only exists in the process that made it
            pass


def read_trace(trace: Path) -> list[tuple[float, str, int]]:
    try:
        lines = trace.read_text().splitlines()
    except FileNotFoundError:
        return []
    marks = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:  # a line cut by the kill is not a mark
            marks.append((float(parts[0]), parts[1], int(parts[2])))
    return marks


# --- what a run directory holds ------------------------------------------------------------------------------


def inspect_checkpoint(run: Path) -> dict:
    """What a resume would find: checkpoints/last, or the .last.old that recover_dir would restore, verified
    against its checksums (read-only)."""
    from strop.errors import StropError
    from strop.train.checkpoint import verify_checkpoint

    checkpoints = run / "checkpoints"
    found = next((p for p in (checkpoints / "last", checkpoints / ".last.old") if p.exists()), None)
    metrics = run / "metrics.jsonl"
    report = {"checkpoint": "absent", "checkpoint_epoch": None, "metrics_lines": None,
              "staging_left": sorted(p.name for p in checkpoints.glob(".last.tmp-*")) if checkpoints.is_dir() else []}
    if metrics.is_file():
        report["metrics_lines"] = len(metrics.read_text().splitlines())
    if found is not None:
        try:
            state = verify_checkpoint(found)
        except StropError as error:
            report["checkpoint"] = f"DAMAGED: {error}"
        else:
            report["checkpoint"] = "whole" if found.name == "last" else "whole (.last.old, restored on resume)"
            report["checkpoint_epoch"] = state.epoch
    return report


def untimed_history(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed_summary(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in SUMMARY_TIMING}
    summary["best"] = {k: v for k, v in summary["best"].items() if k not in TIMING}
    return summary


def tensors(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as file:
        return {name: file.get_tensor(name) for name in file.keys()}


def compare_runs(straight: Path, resumed: Path) -> list[str]:
    """Where the resumed run differs from the uninterrupted one; empty when they are the same."""
    differences = []
    if not (resumed / "summary.json").is_file():
        return ["the resumed run is not complete (no summary.json)"]
    for weights in ("model/model.safetensors", "checkpoints/last/model.safetensors"):
        a, b = tensors(straight / weights), tensors(resumed / weights)
        if a.keys() != b.keys():
            differences.append(f"{weights}: tensors {sorted(a.keys() ^ b.keys())} in one run only")
        for name in sorted(a.keys() & b.keys()):
            x, y = a[name], b[name]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():  # bit for bit
                differences.append(f"{weights}: tensor {name} differs")
    info = [json.loads((run / "model" / "strop.json").read_text()) for run in (straight, resumed)]
    if info[0] != info[1]:
        differences.append("model/strop.json differs")
    a, b = untimed_history(straight), untimed_history(resumed)
    if a != b:
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        differences.append(f"metrics.jsonl differs: {len(a)} records uninterrupted, {len(b)} resumed; first "
                           f"difference at record {first + 1}")
    if untimed_summary(straight) != untimed_summary(resumed):
        differences.append("summary.json differs")
    left = sorted(str(p.relative_to(resumed)) for p in resumed.rglob("*") if ".tmp-" in p.name)
    if left:
        differences.append(f"temporaries left behind: {', '.join(left)}")
    return differences


# --- the campaign ------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    overrides: list[str]
    kills: int
    attempts: list[dict] = field(default_factory=list)
    kills_done: int = 0
    resumes: int = 0
    finished_before_kill: int = 0
    damaged: int = 0
    straight_seconds: float = 0.0
    equal: bool = False
    differences: list[str] = field(default_factory=list)
    metrics_without_checkpoint: int = 0


def run_to_end(args: list[str], work: Path, name: str, launch: str, timeout: float) -> tuple[int, list, Fit]:
    fit = start_fit(args, work / f"{name}.trace", work / f"{name}.log", launch)
    try:
        code = fit.wait(timeout)
    except TimeoutError:
        fit.kill()
        raise SystemExit(f"{name}: no end after {timeout:.0f}s (a hang?); see {work / f'{name}.log'}")
    return code, read_trace(work / f"{name}.trace"), fit


def resume_args(run: Path) -> list[str]:
    """train.resume=true once the run directory holds a run to continue (its config.yaml), as a user would."""
    return ["train.resume=true"] if (run / "config.yaml").is_file() else []


def random_campaign(scenario: Scenario, work: Path, rng: random.Random, launch: str, timeout: float) -> None:
    straight = work / f"{scenario.name}-straight"
    code, marks, fit = run_to_end(scenario.overrides + [f"output_dir={straight}"], work,
                                  f"{scenario.name}-straight", launch, timeout)
    if code != 0:
        raise SystemExit(f"{scenario.name}: the uninterrupted run failed (exit {code}); see its log in {work}")
    scenario.straight_seconds = round(time.time() - fit.started, 3)
    training = next(t for t, phase, _ in marks if phase == "training")
    validations = [t for t, phase, _ in marks if phase == "evaluation"]
    epochs = sum(phase == "checkpoint" for _, phase, _ in marks)
    epoch = sorted(b - a for a, b in zip(validations, validations[1:]))[(len(validations) - 2) // 2]  # median
    warmup = max(validations[0] - training - epoch, 0.0)  # what the first epoch of a process takes beyond an epoch
    startup = max(training - fit.started, 0.05)  # imports (--launch exec), data, model, the run's first files
    run = work / f"{scenario.name}-killed"
    attempt, done = 0, 0
    while scenario.kills_done < scenario.kills:
        attempt += 1
        resume = resume_args(run)
        scenario.resumes += bool(resume)
        name = f"{scenario.name}-attempt{attempt}"
        trace = work / f"{name}.trace"
        fit = start_fit(scenario.overrides + [f"output_dir={run}"] + resume, trace, work / f"{name}.log", launch)
        from_start = rng.random() < STARTUP_SHARE
        if from_start:
            delay = rng.uniform(0, startup + warmup + epoch)
        else:
            # Into the remaining epochs, by a random number of them: remaining / kills left on average, so that
            # the kills spread over the run, and never past its last epoch, so that each attempt ends in a kill
            # rather than in a complete run.
            remaining, kills_left = epochs - done, scenario.kills - scenario.kills_done
            reach = min(2 * remaining / kills_left, max(remaining - 1, 0) + 0.9)
            delay = warmup + rng.uniform(0, reach) * epoch
        anchor = fit.started
        if not from_start:  # wait for the training loop
            deadline = time.time() + timeout
            while fit.poll() is None and time.time() < deadline:
                entered = next((t for t, phase, _ in read_trace(trace) if phase == "training"), None)
                if entered is not None:
                    anchor = entered
                    break
                time.sleep(0.005)
        while fit.poll() is None and time.time() < anchor + delay:
            time.sleep(0.002)
        record = {"attempt": attempt, "resume": bool(resume), "timed_from": "start" if from_start else "training",
                  "delay_s": round(delay, 4)}
        if fit.poll() is not None:
            record.update(outcome=f"ended by itself (exit {fit.returncode}) before the kill")
            if fit.returncode == 0:
                scenario.finished_before_kill += 1
                scenario.attempts.append(record)
                print(f"  {scenario.name} attempt {attempt}: finished before its kill "
                      f"({scenario.kills_done} kills so far)")
                break
            scenario.attempts.append(record)  # a fit that fails by itself is a finding: stop and show it
            raise SystemExit(f"{name}: exit {fit.returncode}; see {work / f'{name}.log'}")
        fit.kill()
        scenario.kills_done += 1
        marks = read_trace(trace)
        last = marks[-1][1] if marks else "startup"
        record.update(outcome="killed", phase=PHASES.get(last, last),
                      last_mark=f"{last}:{marks[-1][2]}" if marks else None,
                      seconds_after_start=round(time.time() - fit.started, 3))
        record.update(inspect_checkpoint(run))
        if record["checkpoint"].startswith("DAMAGED"):
            scenario.damaged += 1
        if record["checkpoint"] == "absent" and record["metrics_lines"]:
            # Epoch 1's metrics line written, its checkpoint not: the resume must start afresh and drop the line.
            record["window"] = "metrics line without a checkpoint"
            scenario.metrics_without_checkpoint += 1
        scenario.attempts.append(record)
        done = record["checkpoint_epoch"] or 0
        found = record["checkpoint"] + ("" if record["checkpoint_epoch"] is None
                                        else f", epoch {record['checkpoint_epoch']}")
        print(f"  {scenario.name} kill {scenario.kills_done}/{scenario.kills}: {record['phase']:<18} "
              f"{record['seconds_after_start']:6.2f}s after start  checkpoint {found}"
              f"{'  (a resume)' if resume else ''}")
    if not (run / "summary.json").is_file():
        code, _, _ = run_to_end(scenario.overrides + [f"output_dir={run}"] + resume_args(run), work,
                                f"{scenario.name}-final", launch, timeout)
        scenario.resumes += 1
        if code != 0:
            scenario.differences.append(f"the final resume failed (exit {code}); see {work}")
    if not scenario.differences:
        scenario.differences = compare_runs(straight, run)
    if scenario.damaged:
        scenario.differences.append(f"{scenario.damaged} kills left a damaged checkpoint")
    if scenario.kills_done < scenario.kills:
        scenario.differences.append(f"only {scenario.kills_done} of {scenario.kills} kills: the run finished first")
    scenario.equal = not scenario.differences


def targeted_kills(overrides: list[str], targets: list[str], work: Path, launch: str, timeout: float) -> list[dict]:
    straight = work / "targeted-straight"
    code, _, _ = run_to_end(overrides + [f"output_dir={straight}"], work, "targeted-straight", launch, timeout)
    if code != 0:
        raise SystemExit(f"the uninterrupted run for targeted kills failed (exit {code}); see its log in {work}")
    results = []
    for target in targets:
        slug = target.replace(":", "-")
        run = work / f"targeted-{slug}"
        fit = start_fit(overrides + [f"output_dir={run}"], work / f"targeted-{slug}.trace",
                        work / f"targeted-{slug}.log", launch, kill_at=target)
        code = fit.wait(timeout)
        result = {"kill_at": target, "killed": code == -signal.SIGKILL}
        result.update(inspect_checkpoint(run))
        code, _, _ = run_to_end(overrides + [f"output_dir={run}"] + resume_args(run), work,
                                f"targeted-{slug}-resume", launch, timeout)
        result["differences"] = compare_runs(straight, run) if code == 0 else [f"the resume failed (exit {code})"]
        if not result["killed"]:
            result["differences"].insert(0, f"the fit was not killed at {target} (exit {fit.returncode})")
        if result["checkpoint"].startswith("DAMAGED"):
            result["differences"].insert(0, result["checkpoint"])
        result["equal"] = not result["differences"]
        print(f"  targeted kill at {target:<18} checkpoint {result['checkpoint']:<6} "
              f"{'equal' if result['equal'] else 'DIFFERENT: ' + '; '.join(result['differences'])}")
        results.append(result)
    return results


def make_vectors(folder: Path, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    paths = []
    for name, n in (("train", 320), ("dev", 80)):
        path = folder / f"vectors-{name}.csv"
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow([f"x{i}" for i in range(8)] + ["label"])
            for _ in range(n):
                x = [rng.gauss(0, 1) for _ in range(8)]
                score = x[0] + 0.5 * x[1] - 0.25 * x[2] + rng.gauss(0, 0.3)
                writer.writerow([f"{v:.5f}" for v in x] + ["high" if score > 0 else "low"])
        paths.append(path)
    return paths[0], paths[1]


def make_texts(folder: Path, seed: int) -> tuple[Path, Path]:
    paths = []
    for name, n, offset in (("train", 160, 1), ("dev", 60, 2)):
        rng = random.Random(seed * 100 + offset)
        path = folder / f"texts-{name}.csv"
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            for i in range(n):
                label = "positive" if i % 2 == 0 else "negative"
                words = rng.sample(NEUTRAL, rng.randint(2, 8)) + rng.sample(POSITIVE if i % 2 == 0 else NEGATIVE, 2)
                rng.shuffle(words)
                writer.writerow([" ".join(words), label])
        paths.append(path)
    return paths[0], paths[1]


def mlp_overrides(train: Path, dev: Path, epochs: int) -> list[str]:
    return ["model.name=mlp", f"data.train={train}", f"data.validation={dev}", f"train.epochs={epochs}",
            "train.patience=0", "train.mixed_precision=no", "train.device=cpu", "train.batch_size=16",
            "model.hidden=[32,32]", "train.quiet=true"]


def text_overrides(model: Path, train: Path, dev: Path, epochs: int) -> list[str]:
    return [f"model.name={model}", f"data.train={train}", f"data.validation={dev}", f"train.epochs={epochs}",
            "optim.lr=1e-3", "train.patience=0", "model.max_length=32", "train.batch_size=8",
            "train.mixed_precision=no", "train.device=cpu", "train.quiet=true"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # --launch exec: one fit in this fresh interpreter
        trace, kill_at, *args = argv[1:]
        return fit_in_this_process(args, Path(trace), None if kill_at == "-" else kill_at)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="random kills of the MLP run (default 20)")
    parser.add_argument("--text-kills", type=int, default=3,
                        help="random kills of the tiny BERT run (default 3; 0: none)")
    parser.add_argument("--targeted", default="", help=f"'all' or comma-separated points: {', '.join(TARGETS)}")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times and the generated data")
    parser.add_argument("--launch", choices=("fork", "exec"), default="fork")
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one fit may take before it counts as hung")
    args = parser.parse_args(argv)
    targets = list(TARGETS) if args.targeted == "all" else [t for t in args.targeted.split(",") if t]
    unknown = [t for t in targets if t.partition(":")[0] not in PHASES or not t.partition(":")[2].isdigit()]
    if unknown:
        parser.error(f"--targeted: unknown points {', '.join(unknown)}; known: {', '.join(TARGETS)}")

    started = time.time()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="strop-crash-") as scratch:
        work = Path(args.workdir or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        import strop.cli  # noqa: F401  # imported once here, so that forked fits start at once
        import strop.fit  # noqa: F401
        import strop.train.loop  # noqa: F401

        train, dev = make_vectors(work, args.seed)
        scenarios = [Scenario("mlp", mlp_overrides(train, dev, epochs=max(12, 2 * args.kills)), args.kills)]
        if args.text_kills:
            model = work / "tiny-bert"
            subprocess.run([sys.executable, "-c", TINY_BERT, str(model)], check=True, capture_output=True)
            text_train, text_dev = make_texts(work, args.seed)
            scenarios.append(Scenario("text", text_overrides(model, text_train, text_dev, max(4, 2 * args.text_kills)),
                                      args.text_kills))
        if args.launch == "fork":
            for scenario in scenarios:
                if scenario.kills or (scenario.name == "mlp" and targets):
                    warm_up(scenario.overrides, work, scenario.name, args.timeout)
        for scenario in scenarios:
            if scenario.kills:
                print(f"{scenario.name}: {scenario.kills} random kills")
                random_campaign(scenario, work, rng, args.launch, args.timeout)
        targeted = []
        if targets:
            print(f"targeted kills: {len(targets)}")
            targeted = targeted_kills(mlp_overrides(train, dev, epochs=4), targets, work, args.launch, args.timeout)

    equal = all(s.equal for s in scenarios if s.kills) and all(t["equal"] for t in targeted)
    result = {"command": "python bench/crash_campaign.py " + " ".join(argv), "seed": args.seed, "launch": args.launch,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "duration_s": round(time.time() - started, 1), "equal": equal,
              "scenarios": [asdict(s) for s in scenarios if s.kills], "targeted": targeted}
    print("summary:")
    for s in scenarios:
        if not s.kills:
            continue
        phases = collections.Counter(a["phase"] for a in s.attempts if a.get("outcome") == "killed")
        print(f"  {s.name}: {s.kills_done} kills ({', '.join(f'{n} {p}' for p, n in phases.most_common())}), "
              f"{s.resumes} resumes, {s.damaged} damaged checkpoints, "
              f"{'EQUAL to' if s.equal else 'DIFFERENT from'} the uninterrupted run"
              + ("" if s.equal else ": " + "; ".join(s.differences)))
    if targeted:
        print(f"  targeted: {sum(t['equal'] for t in targeted)} of {len(targeted)} equal")
    print(f"  {'all equal' if equal else 'NOT all equal'}, {result['duration_s']}s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

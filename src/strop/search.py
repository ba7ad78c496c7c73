"""`strop search`: hyperparameter search on Optuna over the space a config's `search:` section declares.

    search:
      optim.lr: {log_uniform: [1.0e-5, 1.0e-3]}
      train.batch_size: {choice: [8, 16, 32]}

Each trial is one `strop fit` (`strop.fit.fit`, the same code path) into its own run directory under the
search folder (`output_dir`): trial-0000, trial-0001, ... After each epoch the trial's validation score goes
to Optuna's pruner, which stops trials that fall behind the others at the same epoch. The study lives in
SQLite in the search folder (study.sqlite) unless --storage names another database, e.g. PostgreSQL, which
workers on several machines share.

Resuming is running the same command again: the study continues up to --trials trials in all. A trial whose
worker died (killed, a lost machine) is marked failed and queued again with the same parameters; the retry
continues the dead trial's run directory from its last checkpoint, so no trial is lost or run twice.
Workers notice a dead worker of their own machine at once (its lock file is no longer held), and one of
another machine when Optuna's heartbeat has been silent for HEARTBEAT_GRACE seconds. Asking for a trial,
counting the trials and requeueing dead ones happen under one lock per study (a file lock beside a SQLite
database, an advisory lock in PostgreSQL), so two workers never take the same trial or one trial too many.

Trial attributes (Optuna user attrs) strop keeps:
    strop:run_dir   the trial's run directory, relative to the search folder
    strop:attempt   1 for a trial, n + 1 for the retry of an attempt n
    strop:retry_of  the number of the dead trial this one continues
    strop:worker    the lock file of the worker that runs it (free once that worker is gone)
    strop:error     why the trial failed (a StropError: e.g. its loss diverged); such a trial is not retried
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from strop.errors import StropError
from strop.progress import duration
from strop.tasks.base import score_text

KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
# Keys a search cannot vary, and why.
NOT_SEARCHABLE = {
    "output_dir": "each trial has its own run directory under the search's output_dir",
    "data.train": "trials are compared on the same data",
    "data.validation": "trials are compared on the same validation data",
    "data.validation_fraction": "trials are compared on the same validation data",
    "train.metric": "it is what the search compares trials by",
    "train.resume": "the search resumes trials itself",
    "train.quiet": "it changes nothing learned",
    "train.keep_checkpoint": "the search keeps or drops trials' weights itself (--keep-weights)",
}
MAX_ATTEMPTS = 3  # a trial whose worker died this many times is left failed (it may be what kills them)
HEARTBEAT_INTERVAL = 20  # seconds between a running trial's heartbeats in the study
HEARTBEAT_GRACE = 120  # a running trial silent this long is taken for dead by workers of other machines
STUDY_FILE = "study.sqlite"


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a config key and the distribution its values are drawn from."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    def distribution(self):
        import optuna.distributions as d

        if self.kind in ("log_uniform", "uniform"):
            return d.FloatDistribution(self.low, self.high, log=self.kind == "log_uniform")
        if self.kind in ("int", "log_int"):
            return d.IntDistribution(self.low, self.high, log=self.kind == "log_int")
        return d.CategoricalDistribution([_choice_label(c) for c in self.choices])

    def suggest(self, trial) -> Any:
        """The trial's value: drawn by the sampler, or the one fixed for it (a retry)."""
        dist = self.distribution()
        if self.kind in ("log_uniform", "uniform"):
            return trial.suggest_float(self.key, dist.low, dist.high, log=dist.log)
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, dist.low, dist.high, log=dist.log)
        return trial.suggest_categorical(self.key, dist.choices)

    def override(self, value: Any) -> str:
        """The `key=value` override that sets `value` in a trial's config."""
        if isinstance(value, float):
            return f"{self.key}={value!r}"
        if value is None:
            return f"{self.key}=null"
        return f"{self.key}={value}"


def _choice_label(value: Any) -> Any:
    """A choice as Optuna stores it: numbers, strings, booleans and null as they are; a list (e.g. layer sizes
    [128, 64]) as its YAML text, which the config reads back as the list."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def parse_space(raw: Any) -> tuple[Param, ...]:
    """The `search:` section of a config, checked: a mapping of config keys (dotted, e.g. optim.lr) to one
    distribution each: {log_uniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]},
    {log_int: [low, high]} or {choice: [a, b, ...]}.

    Raises:
        StropError: a section that is not such a mapping, an unknown or unsearchable key, an unknown
            distribution, bounds that are not numbers with low < high (low > 0 for the log ones), an empty
            list of choices or one that repeats itself.
    """
    example = "e.g. search: {optim.lr: {log_uniform: [1.0e-5, 1.0e-3]}, train.batch_size: {choice: [8, 16, 32]}}"
    if not isinstance(raw, dict) or not raw:
        raise StropError(f"search must map config keys to distributions, {example}; got {raw!r}")
    return tuple(_parse_param(str(key), spec) for key, spec in raw.items())


def _parse_param(key: str, spec: Any) -> Param:
    where = f"search: {key}"
    _check_key(key)
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise StropError(f"{where} must be one distribution, one of {', '.join(f'{{{k}: ...}}' for k in KINDS)}; "
                         f"e.g. {key}: {{choice: [a, b]}}; got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind != "choice" and isinstance(values, list):
        values = [_yaml_number(v) for v in values]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise StropError(f"{where}: choice needs a list of one or more values, e.g. {{choice: [8, 16, 32]}}; "
                             f"got {values!r}")
        labels = [_choice_label(v) for v in values]
        if len(set(map(repr, labels))) != len(labels):
            raise StropError(f"{where}: choice lists a value twice: {values!r}")
        return Param(key, kind, choices=tuple(values))
    integer = kind in ("int", "log_int")
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            or (integer and not all(float(v).is_integer() for v in values))):
        number = "whole numbers" if integer else "numbers"
        raise StropError(f"{where}: {kind} needs [low, high], two {number}, e.g. {{{kind}: "
                         f"{'[1, 4]' if integer else '[1.0e-5, 1.0e-3]'}}}; got {values!r}")
    low, high = (int(v) for v in values) if integer else (float(v) for v in values)
    if not low < high:
        raise StropError(f"{where}: {kind} needs low < high; got [{values[0]}, {values[1]}]")
    if kind.startswith("log") and low <= 0:
        raise StropError(f"{where}: {kind} needs low > 0 (a log scale); got {values[0]}")
    return Param(key, kind, low, high)


def _yaml_number(value: Any) -> Any:
    """A bound YAML read as text for want of a dot (YAML 1.1 reads 1e-5 as a string, 1.0e-5 as a number)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_key(key: str) -> None:
    """Refuses a key that is not a config setting (naming the section's keys), or one a search cannot vary."""
    from strop.config import Config

    if key in NOT_SEARCHABLE:
        raise StropError(f"search: {key} cannot be searched: {NOT_SEARCHABLE[key]}")
    kind = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(kind)}
        if part not in fields:
            section = ".".join(parts[:depth]) or "the config"
            raise StropError(f"search: unknown key '{key}'; known keys in {section}: {', '.join(fields)}")
        kind = _field_type(kind, part)
        if dataclasses.is_dataclass(kind) != (depth < len(parts) - 1):
            raise StropError(f"search: '{key}' is {'a section' if dataclasses.is_dataclass(kind) else 'a value'}; "
                             f"name one setting, e.g. optim.lr")


def _field_type(cls: type, name: str):
    import typing

    return typing.get_type_hints(cls)[name]


def check_space(space: tuple[Param, ...], config, overrides: list[str]) -> None:
    """Checks that every bound and choice of the space makes a valid config with the others' settings.

    Raises:
        StropError: the value and the config's own message, e.g. "search: optim.warmup: uniform high 1.5: ...".
    """
    from strop.config import load_config

    for param in space:
        values = [param.low, param.high] if param.kind != "choice" else list(param.choices)
        for value in values:
            try:
                load_config(config, [*overrides, param.override(_choice_label(value))])
            except StropError as error:
                raise StropError(f"search: {param.key}: the value {value!r} is refused: {error}") from None


def check_scarce_settings(space: tuple[Param, ...], base) -> None:
    """Refuses what a search cannot compare: self-training (data.unlabeled: its rounds are runs of their own,
    whose epochs the pruner would judge as one run's) and a searched train.seed where validation is a share
    of data.train (the seed draws the share: trials would be scored on different examples).

    Raises:
        StropError: naming the setting and the fix.
    """
    if base.data.unlabeled is not None:
        raise StropError("search: data.unlabeled: self-training trains a run per round, which a trial of a search "
                         "cannot compare or prune as one run; search without it on the labelled data, then "
                         "self-train with the best trial's config: strop fit SEARCH/best.yaml data.unlabeled=FILE")
    if base.data.validation is None and any(param.key == "train.seed" for param in space):
        raise StropError("search: train.seed with no validation file: the seed draws the validation share of "
                         "data.train, so trials would be scored on different examples; give data.validation=FILE, "
                         "or leave train.seed out of the search")


def read_space(config) -> tuple[Param, ...]:
    """The `search:` section of a config file (or dict).

    Raises:
        StropError: the config has no search section, or a malformed one.
    """
    from strop.config import _read_yaml

    raw = config if isinstance(config, dict) else _read_yaml(Path(config)) if config is not None else {}
    if "search" not in raw:
        where = f"config file {config}" if not isinstance(config, dict) and config is not None else "the config"
        raise StropError(f"{where} has no search section: declare the space to search, e.g.\n"
                         "search:\n  optim.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n  train.batch_size: {choice: [8, 16, 32]}")
    return parse_space(raw["search"])


@dataclass(frozen=True)
class SearchOptions:
    trials: int  # the study's trials in all, those of earlier sessions and other workers included
    storage: str | None = None  # database URL; default: SQLite in the search folder
    study_name: str | None = None  # default: the search folder's name
    seed: int | None = None  # the sampler's seed: a single worker's search is then repeatable
    pruner: str = "median"  # median or none
    keep_weights: bool = False  # keep every trial's model and checkpoint, not only the best run's
    quiet: bool = False


def search(config=None, overrides: list[str] = (), options: SearchOptions | None = None) -> dict:
    """Runs (or continues) a search and returns its summary (what search.json holds). The caller's random
    generators are given back as they were (each trial seeds them).

    Raises:
        StropError: no or a bad search section, bad config or data (checked before any trial runs), a storage
            that cannot be opened, or a study of that name searching another space or metric, or training its
            trials with other settings.
    """
    from strop.train.checkpoint import keeps_callers_random_state

    return keeps_callers_random_state(_search)(config, overrides, options)


def _search(config, overrides: list[str], options: SearchOptions | None) -> dict:
    from strop.config import check_seeds, load_config
    from strop.fit import prepare
    from strop.runs import refuse_several_processes

    options = options or SearchOptions(trials=20)
    if options.trials < 1:
        raise StropError(f"--trials must be >= 1; got {options.trials}")
    if options.seed is not None:  # each session's sampler is seeded with it plus the trials before
        check_seeds("--seed", options.seed, options.trials)
    if options.pruner not in ("median", "none"):
        raise StropError(f"--pruner must be median or none; got {options.pruner}")
    space = read_space(config)
    if load_config(config, overrides).train.quiet:  # train.quiet in the config or an override, as --quiet
        options = dataclasses.replace(options, quiet=True)
    overrides = [o for o in overrides if not o.startswith("train.quiet=")]  # each trial's fit is quiet anyway
    base = load_config(config, overrides)
    if base.train.resume:
        raise StropError("train.resume: a search continues by itself when run again (its interrupted trials "
                         "from their checkpoints); leave train.resume out")
    if options.storage is not None and base.output_dir is None and options.study_name is None:
        raise StropError("--storage: give output_dir=... (the search folder, whose name names the study) or "
                         "--study-name, the same for every worker, so that the workers share one study")
    check_space(space, config, overrides)
    refuse_several_processes("strop search", "to search with several processes or machines, start several "
                             "strop search workers that share --storage (each a plain process)")
    check_scarce_settings(space, base)
    optuna = _import_optuna()
    folder = Path(base.output_dir) if base.output_dir else _default_folder()
    if base.output_dir is None and not options.quiet:
        print(f"no output_dir: the search goes to {folder}; continue it with output_dir={folder}")
    # Data, model and settings are checked once, before anything is written: a bad file fails here, not
    # in every trial.
    prepared = prepare(base)
    task, metric = prepared.task, _metric(prepared)
    direction = "minimize" if metric in task.minimised else "maximize"
    del prepared
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    url = _storage_url(options.storage, folder)
    name = options.study_name or folder.resolve().name
    try:
        storage = _open_storage(optuna, url)
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                    pruner=_pruner(optuna, options))
        _check_same_search(study, space, metric, direction, base)
    except BaseException:
        if created:  # nothing of a search that could not start is left behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    # Seeded by the seed and the trials the study has: a continued search draws new values, not the first
    # session's again.
    seed = None if options.seed is None else options.seed + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    return _Search(optuna, study, storage, space, config, overrides, folder, metric, options, url).run()


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise StropError("strop search needs Optuna: pip install \"strop[search]\"") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # strop prints one line per trial itself
    return optuna


def _default_folder() -> Path:
    from strop.runs import default_run_name

    return Path(default_run_name().replace("runs/", "runs/search-", 1))


def _metric(prepared) -> str:
    from strop.train.loop import resolve_metric

    return resolve_metric(prepared.cfg, prepared.task)


def _pruner(optuna, options: SearchOptions):
    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    # A trial is compared with the median of the earlier trials at the same epoch, from its second epoch on
    # (the first epoch's score of a small data set says little), once three trials have finished.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def _storage_url(storage: str | None, folder: Path) -> str:
    if storage is None:
        return f"sqlite:///{(folder / STUDY_FILE).resolve()}"
    if storage.startswith("postgresql://"):
        # psycopg (3) where it is installed: SQLAlchemy 2.0 would pick psycopg2 for a plain postgresql:// URL.
        try:
            import psycopg  # noqa: F401

            return "postgresql+psycopg://" + storage[len("postgresql://"):]
        except ImportError:
            pass
    return storage


def _open_storage(optuna, url: str, attempts: int = 3):
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_INTERVAL,
                                                  grace_period=HEARTBEAT_GRACE)
        except ImportError:
            raise StropError(f"--storage {_shown(url)}: its database driver is not installed; for PostgreSQL: "
                             "pip install \"strop[search]\" (psycopg)") from None
        except Exception as error:  # SQLAlchemy's: a server that does not answer, a wrong password, ...
            if attempt == attempts:
                raise StropError(f"--storage {_shown(url)} cannot be opened: "
                                 f"{str(error).splitlines()[0][:300]}") from None
            # Workers starting together on a new database race to create its tables: the loser tries again.
            time.sleep(attempt)


def _shown(url: str) -> str:
    """A storage URL without its password, for messages and search.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# Settings a worker may have of its own without changing what a trial trains: its files' paths (the same data
# elsewhere), its output folder, its device and how much it prints.
WORKER_KEYS = ("output_dir", "data.train", "data.validation", "data.test", "data.unlabeled", "train.device",
               "train.quiet", "train.resume", "train.keep_checkpoint", "train.trackers", "model.trust_remote_code")


def _shared_settings(base, space: tuple[Param, ...]) -> dict:
    """The settings every trial of the study trains with, besides the searched keys."""
    from strop.index import flatten

    searched = {p.key for p in space}
    return {key: value for key, value in flatten(base.to_dict()).items()
            if key not in searched and key not in WORKER_KEYS}


def _check_same_search(study, space: tuple[Param, ...], metric: str, direction: str, base) -> None:
    """A study continued must search the same space for the same metric, its trials trained with the same other
    settings (trials of 4 epochs and of 2 would be ranked together); the first worker records them."""
    described = {"space": {p.key: _describe(p) for p in space}, "metric": metric, "direction": direction}
    shared = json.loads(json.dumps(_shared_settings(base, space), default=str))  # as the study stores it
    saved = study.user_attrs.get("strop:search")
    if saved is None:
        study.set_user_attr("strop:search", described)
        study.set_user_attr("strop:settings", shared)
        return
    if saved != described:
        raise StropError(f"the study '{study.study_name}' searches {json.dumps(saved)}, not "
                         f"{json.dumps(described)}: continue it with its own search section, or start another "
                         "study (another output_dir, or --study-name)")
    recorded = study.user_attrs.get("strop:settings")  # None: a study begun before settings were recorded
    changed = sorted(k for k in set(recorded or {}) | set(shared) if recorded is not None
                     and recorded.get(k) != shared.get(k))
    if changed:
        key = changed[0]
        raise StropError(f"the study '{study.study_name}' trains its trials with {key}={recorded.get(key)}, not "
                         f"{shared.get(key)}" + (f" (and {len(changed) - 1} more setting(s) differ)"
                                                 if len(changed) > 1 else "")
                         + ": its trials would not compare; continue it with its own settings, or start another "
                         "study (another output_dir, or --study-name)")


def _describe(param: Param) -> dict:
    return {param.kind: [_choice_label(c) for c in param.choices] if param.kind == "choice"
            else [param.low, param.high]}


class _Search:
    """One worker of a study: takes trials one at a time until the study has its trials."""

    def __init__(self, optuna, study, storage, space, config, overrides, folder: Path, metric: str,
                 options: SearchOptions, url: str):
        self.optuna, self.study, self.storage, self.space, self.config = optuna, study, storage, space, config
        self.overrides, self.folder, self.metric, self.options, self.url = overrides, folder, metric, options, url
        self.say = (lambda text: None) if options.quiet else (lambda text: print(text, flush=True))
        self.trial_seconds: list[float] = []  # this worker's trials, for the time left

    def run(self) -> dict:
        from optuna.trial import TrialState

        with _worker_lock(self.folder) as worker:
            self.worker = str(worker.resolve())
            self.say(f"strop search -> {self.folder}  (study '{self.study.study_name}' in {_shown(self.url)}: "
                     f"{self.options.trials} trials, {self.study.direction.name.lower()} validation {self.metric})")
            while True:
                with _study_lock(self.study, self.storage, self.url, self.folder):
                    self._requeue_dead()
                    trials = self.study.get_trials(deepcopy=False)
                    # a retry queued for the study's last place counts as taken, and has still to run
                    waiting = any(t.state == TrialState.WAITING for t in trials)
                    if self.options.trials - _counted(trials) <= 0 and not waiting:
                        break
                    with warnings.catch_warnings():  # Optuna expects its heartbeat inside Study.optimize
                        warnings.simplefilter("ignore")
                        trial = self.study.ask()
                    self._claim(trial)
                started = time.perf_counter()
                try:
                    state, value = self._run_trial(trial)
                except KeyboardInterrupt:
                    with _study_lock(self.study, self.storage, self.url, self.folder):
                        self.study.tell(trial, state=TrialState.FAIL)
                        self._queue_retry(self.study.get_trials(deepcopy=False)[trial.number], announce=False)
                    self.say(f"interrupted; trial {trial.number} is queued again and continues from its checkpoint "
                             "when the search is run again (the same command)")
                    raise
                if state == TrialState.COMPLETE:
                    self.study.tell(trial, value)
                else:
                    self.study.tell(trial, state=state)
                self._index(trial, state)
                self.trial_seconds.append(time.perf_counter() - started)
                self._after_trial(trial.number)
        summary = self._publish()
        if summary["best"] is None and summary["counts"].get("complete", 0) == 0:
            errors = [t["error"] for t in summary["trials"] if t.get("error")]
            raise StropError("no trial of the search completed" + (f"; the first error: {errors[0]}" if errors else ""))
        return summary

    # --- one trial ---------------------------------------------------------------------------------
    def _claim(self, trial) -> None:
        """Records which run directory and worker the trial has (a retry keeps its dead trial's directory)."""
        attrs = trial.user_attrs
        trial.set_user_attr("strop:run_dir", attrs.get("strop:run_dir", f"trial-{trial.number:04d}"))
        trial.set_user_attr("strop:attempt", attrs.get("strop:attempt", 1))
        trial.set_user_attr("strop:worker", self.worker)

    def _run_trial(self, trial):
        """Runs the trial's fit; its state (complete, pruned or failed) and value."""
        from optuna.trial import TrialState

        from strop.config import load_config
        from strop.fit import fit
        from strop.progress import bars_of_quiet_runs

        params = {p.key: p.suggest(trial) for p in self.space}
        run_dir = self.folder / trial.user_attrs["strop:run_dir"]
        shown = "  ".join(f"{k}={_short(v)}" for k, v in params.items())
        resume = self._prepare_run_dir(trial, run_dir)
        overrides = [*self.overrides, *(p.override(params[p.key]) for p in self.space), f"output_dir={run_dir}",
                     "train.quiet=true", *(["train.resume=true"] if resume else [])]
        started = time.perf_counter()
        try:
            if resume == "complete":  # its worker died after the fit, before telling the study
                path = run_dir
            else:
                # the trial's fit prints nothing (the study says a line a trial), but its epochs show progress
                bars = bars_of_quiet_runs(not self.options.quiet, f"trial {trial.number}")
                with _heartbeat(self.storage, trial), bars:
                    epochs = load_config(self.config, overrides).train.epochs
                    path = fit(self.config, overrides, on_epoch=self._reporter(trial, epochs))
        except self.optuna.TrialPruned as pruned:
            self.say(f"trial {trial.number}: {shown}  {pruned}")
            return TrialState.PRUNED, None
        except Exception as error:  # its settings' fault (a diverged loss, memory for a batch size) or a bug
            message = str(error) if isinstance(error, StropError) else f"{type(error).__name__}: {error}"
            trial.set_user_attr("strop:error", message)
            self.say(f"trial {trial.number}: {shown}  failed: {message}")
            return TrialState.FAIL, None
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        value = summary["validation"][self.metric]
        if value is None or not math.isfinite(value):
            trial.set_user_attr("strop:error", f"{self.metric} is not a finite number")
            self.say(f"trial {trial.number}: {shown}  failed: its {self.metric} is not a finite number")
            return TrialState.FAIL, None
        self.say(f"trial {trial.number}: {shown}  {self.metric} {score_text(value)}  ({summary['epochs_run']} epochs, "
                 f"{time.perf_counter() - started:.1f}s)")
        return TrialState.COMPLETE, value

    def _prepare_run_dir(self, trial, run_dir: Path) -> str | bool:
        """For a retry, how its dead trial's run directory continues: "complete" (the fit had finished), True
        (resumed from its checkpoint, the epochs done reported again to the pruner) or False (afresh)."""
        from strop.runs import RunDir

        if "strop:retry_of" not in trial.user_attrs or not run_dir.exists():
            return False
        run = RunDir(run_dir)
        if run.is_complete():
            self.say(f"trial {trial.number} (retry of trial {trial.user_attrs['strop:retry_of']}): its run "
                     f"{run_dir.name} was complete")
            return "complete"
        if not run.config.is_file():  # killed before it wrote anything worth keeping
            shutil.rmtree(run_dir)
            return False
        history = _checkpoint_history(run)
        for record in history:
            self._report(trial, record)
        self.say(f"trial {trial.number} (retry of trial {trial.user_attrs['strop:retry_of']}): continuing "
                 f"{run_dir.name} from its checkpoint at epoch {len(history)}")
        return True

    def _report(self, trial, record: dict) -> None:
        """Gives the pruner an epoch's validation score (a score that is not a number is left out)."""
        value = record.get(f"val_{self.metric}")
        if isinstance(value, (int, float)) and math.isfinite(value):
            trial.report(value, record["epoch"])

    def _reporter(self, trial, epochs: int):
        """The fit's on_epoch: each epoch's score to the pruner, which may stop the trial, but not after its last
        epoch, whose score is the trial's result already."""
        def report(record: dict) -> None:
            self._report(trial, record)
            if record["epoch"] < epochs and trial.should_prune():
                raise self.optuna.TrialPruned(f"pruned at epoch {record['epoch']}")
        return report

    def _index(self, trial, state) -> None:
        """Records the trial in the search folder's run index (strop runs), as a trial with its values."""
        from optuna.trial import TrialState

        from strop.index import record_run

        status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")
        record_run(self.folder / trial.user_attrs["strop:run_dir"], status, trial.user_attrs.get("strop:error"),
                   kind="trial", trial=trial.number, params=_config_values(self.space, trial.params))

    # --- dead workers ---------------------------------------------------------------------------
    def _requeue_dead(self) -> None:
        """Fails the running trials whose worker is gone (this machine's at once, others' by heartbeat), and
        queues again every failed trial that was interrupted rather than in error and has no retry yet."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _worker_gone(trial.user_attrs.get("strop:worker")):
                with contextlib.suppress(UpdateFinishedTrialError):
                    storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        with contextlib.suppress(Exception), warnings.catch_warnings():  # the heartbeat's check (experimental)
            warnings.simplefilter("ignore")
            self.optuna.storages.fail_stale_trials(self.study)
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("strop:retry_of") for t in trials}
        for trial in trials:
            if _retryable(trial) and trial.number not in retried:
                self._queue_retry(trial)

    def _queue_retry(self, trial, announce: bool = True) -> None:
        from optuna.trial import TrialState, create_trial

        if not _retryable(trial):
            return
        self.study.add_trial(create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={"strop:run_dir": trial.user_attrs.get("strop:run_dir", f"trial-{trial.number:04d}"),
                        "strop:attempt": trial.user_attrs.get("strop:attempt", 1) + 1,
                        "strop:retry_of": trial.number}))
        if announce:
            self.say(f"trial {trial.number} was interrupted: queued again with the same parameters")

    # --- results --------------------------------------------------------------------------------
    def _after_trial(self, number: int) -> None:
        summary = self._publish()
        best = summary["best"]
        if best is not None and not self.options.quiet:
            done = summary["counts"].get("finished", 0)
            # at this worker's mean time a trial (other workers sharing the study shorten it)
            mean = sum(self.trial_seconds) / len(self.trial_seconds)
            left = f"; about {duration(mean * (self.options.trials - done))} left" if done < self.options.trials else ""
            self.say(f"  best so far: trial {best['trial']}, {self.metric} {score_text(best['value'])}  "
                     f"({done}/{self.options.trials} trials done{left})")

    def _publish(self) -> dict:
        """Writes search.json, best.yaml (the best trial's config, to fit again), the `best` link and report.html, and drops
        the model weights and checkpoints of finished trials other than the best (unless --keep-weights).
        Decided from one reading of the study, under the study's lock, so two workers never drop the best run's
        weights nor write an older best over a newer one."""
        from strop.report_studies import report_after

        with _study_lock(self.study, self.storage, self.url, self.folder):
            summary = self._publish_locked()
        report_after(self.folder, "search")  # from search.json alone (another worker's newer one is as good)
        return summary

    def _publish_locked(self) -> dict:
        from optuna.trial import TrialState

        from strop.runs import atomic_write_json, atomic_write_text

        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = None
        if complete:
            pick = min if self.study.direction.name == "MINIMIZE" else max
            best = pick(complete, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    or (t.state == TrialState.FAIL and not _retryable(t))]
        if not self.options.keep_weights:
            for trial in finished:
                if trial is not best and "strop:run_dir" in trial.user_attrs:
                    _drop_weights(self.folder / trial.user_attrs["strop:run_dir"])
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        counts["finished"] = len(finished)
        summary = {
            "study": self.study.study_name, "storage": _shown(self.url), "metric": self.metric,
            "direction": self.study.direction.name.lower(), "trials_wanted": self.options.trials, "counts": counts,
            "space": {p.key: _describe(p) for p in self.space},
            "best": None if best is None else {"trial": best.number, "value": best.value,
                                               "params": _config_values(self.space, best.params),
                                               "run": best.user_attrs.get("strop:run_dir")},
            "trials": [_trial_row(t, self.space) for t in trials],
            "importances": _importances(self.optuna, self.study, len(complete)),
        }
        atomic_write_json(self.folder / "search.json", summary, "the search summary")
        if best is not None:
            run_dir = self.folder / best.user_attrs["strop:run_dir"]
            if (run_dir / "config.yaml").is_file():
                atomic_write_text(self.folder / "best.yaml", _best_yaml(run_dir, best, self.metric, len(finished)),
                                  "the best config")
                _link(self.folder / "best", best.user_attrs["strop:run_dir"])
        return summary


MIN_TRIALS_FOR_IMPORTANCES = 3  # below this, every split of the values explains the scores


def _importances(optuna, study, complete: int) -> dict | None:
    """How much of the variation of the complete trials' scores each parameter explains (fANOVA, as Optuna
    computes it, seeded): a share per parameter, summing to 1; None with too few complete trials."""
    if complete < MIN_TRIALS_FOR_IMPORTANCES:
        return None
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    try:
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):  # e.g. every complete trial has the same score
        return None
    return {"method": "fANOVA (Optuna's FanovaImportanceEvaluator, seed 0)", "complete_trials": complete,
            "shares": {key: float(value) for key, value in values.items()}}


def _counted(trials) -> int:
    """The trials that take one of the study's places: all but the interrupted ones that will be retried
    (their retry takes their place)."""
    return sum(1 for t in trials if not _retryable(t))


def _retryable(trial) -> bool:
    """Failed because its worker stopped (not because of its settings or data), and not yet retried too often."""
    from optuna.trial import TrialState

    return (trial.state == TrialState.FAIL and "strop:error" not in trial.user_attrs
            and "strop:run_dir" in trial.user_attrs and trial.user_attrs.get("strop:attempt", 1) < MAX_ATTEMPTS)


def _trial_row(trial, space) -> dict:
    row = {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
           "params": _config_values(space, trial.params), "run": trial.user_attrs.get("strop:run_dir"),
           "epochs": {str(k): v for k, v in sorted(trial.intermediate_values.items())}}
    for key in ("retry_of", "error"):
        if f"strop:{key}" in trial.user_attrs:
            row[key] = trial.user_attrs[f"strop:{key}"]
    if trial.datetime_start and trial.datetime_complete:
        row["seconds"] = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)
    return row


def _config_values(space, params: dict) -> dict:
    """Optuna's values as the config holds them (a list choice back from its text)."""
    out = {}
    for param in space:
        if param.key in params:
            value = params[param.key]
            if param.kind == "choice":
                value = next((c for c in param.choices if _choice_label(c) == value), value)
            out[param.key] = value
    return out


def _best_yaml(run_dir: Path, best, metric: str, finished: int) -> str:
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    config.pop("output_dir", None)
    for key in ("resume", "quiet"):
        config.get("train", {}).pop(key, None)
    header = (f"# The best of {finished} trials: trial {best.number}, validation {metric} {best.value:.6g} "
              f"(run {run_dir.name}).\n# Fit it again: strop fit {run_dir.parent / 'best.yaml'} output_dir=runs/NAME\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def _drop_weights(run_dir: Path) -> None:
    for name in ("model", "checkpoints"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _link(link: Path, target: str) -> None:
    """`link` -> target (a relative symbolic link), replaced atomically; skipped where links are not possible."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def _checkpoint_history(run) -> list[dict]:
    """The validations an interrupted run's checkpoint holds (those a resumed fit keeps)."""
    from strop.runs import recover_dir

    state = recover_dir(run.last_checkpoint) / "state.json"
    try:
        return json.loads(state.read_text(encoding="utf-8"))["history"]
    except (OSError, ValueError, KeyError):
        return []


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- locks and liveness ---------------------------------------------------------------------------

@contextlib.contextmanager
def _worker_lock(folder: Path) -> Iterator[Path]:
    """A lock file held for this worker's life: another worker that finds it free knows this one is gone
    (the operating system drops the lock however the process ends)."""
    workers = folder / ".workers"
    workers.mkdir(parents=True, exist_ok=True)
    path = workers / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path
    # A clean exit (none of its trials is left running) removes it; after an error it stays, free, so that
    # the other workers of this machine see at once that a trial it may have left running is orphaned.
    path.unlink(missing_ok=True)


def _worker_gone(lock_path: str | None) -> bool:
    """Whether the worker that held `lock_path` is gone: its lock file is here and free. A file that is not
    here (another machine's worker) says nothing: the heartbeat decides for those."""
    if not lock_path or not os.path.exists(lock_path):
        return False
    try:
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.unlink(lock_path)
    return True


@contextlib.contextmanager
def _study_lock(study, storage, url: str, folder: Path) -> Iterator[None]:
    """Held while a worker counts the trials, requeues dead ones and asks for one: a PostgreSQL advisory lock
    (workers on several machines), else a file lock beside the SQLite database (workers on one machine)."""
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"strop:{study.study_name}".encode()).digest()[:8], "big", signed=True)
        with storage.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    path = Path(url.split("///", 1)[1] + ".lock") if url.startswith("sqlite:///") else folder / ".study.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _heartbeat(storage, trial) -> Iterator[None]:
    """Records the trial's heartbeat in the study every HEARTBEAT_INTERVAL seconds while it runs, so that
    workers elsewhere can tell a running trial from a dead one."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat only makes the trial look older
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_INTERVAL):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

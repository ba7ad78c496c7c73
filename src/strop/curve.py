"""`strop curve`: a learning curve, and what it says about labelling more data.

Trains on growing shares of the training data (several seeds each; within a seed the subsets are nested and
stratified by class, or for label sets each holds every label), scores each run on one fixed validation set,
and fits power laws to the scores (Hestness et al. 2017, "Deep learning scaling is predictable, empirically"; Figueroa et al. 2012):

    saturating:    score(n) = a - b * n^(-c)       (a: the score the data tend to; b, c > 0)
    ceiling-free:  score(n) = 1 - b' * n^(-c')     (a score bounded by 1: its error falls as a pure power law)

For a score bounded by 1 (accuracy, F1) the forecast is the mean of the two; otherwise the saturating law
alone (a loss fitted as -loss, and shown on its own scale as loss(n) = a + b * n^(-c)). Why the mean: fitted
on up to 500 examples and checked against training at 2 to 14 times that (docs/benchmarks.md, "Learning curve
against reality"), the saturating law fell short by up to 5.7 points at the far sizes (its ceiling is set by
the flattening of a few small, noisy runs) and the ceiling-free law overshot by up to 3 points; their mean was
within 2 points at all ten checked sizes of five curves (SST-2 and TREC with two pools each, Banking77), a
rule chosen before the last three were run.

It answers "how many labelled examples to reach score X?" and "what would twice the data give?", each with a
95% interval from a bootstrap over the runs, in the terminal, in curve.json and in curve.png. An extrapolation
is a forecast: the further beyond the data, the wider its interval and the likelier that the curve's shape
changes.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np

from strop.cv import write_rows
from strop.errors import StropError
from strop.progress import StudyClock
from strop.runs import atomic_write_json, lock_study, make_output_folder
from strop.tasks.base import score_text

CURVE_FILE, PLOT_FILE = "curve.json", "curve.png"
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
BOOTSTRAP_DRAWS = 500
# A forecast that needs more training examples than this never reaches the score in practice (and beyond it,
# a law that rises very slowly, c near 0, would need sizes past what a float holds).
LARGEST_SIZE = 1e15
C_LOWEST = 1e-3  # the exponent c's lower bound in the fits (0 would be a flat line, which b * n^0 cannot tell from a)
C_NEAR_0 = 0.01  # below this, b * n^-c changes by under 7% over a thousand times the data: no levelling off seen
# how a loss's curve is described: it falls towards a (fitted as its negative, which rises)
LOSS_LAW = "a + b * n^(-c) (lower is better)"


def power_law(n, a: float, b: float, c: float):
    """a - b * n^(-c): rises towards a as n grows (b, c > 0)."""
    return a - b * np.power(np.asarray(n, dtype=np.float64), -c)


def _power_law_slopes(n, a: float, b: float, c: float) -> np.ndarray:
    """d power_law / d(a, b, c) at each n: exact slopes for the fits (scipy's finite differences cost a third of
    a fit's time, a bootstrap being hundreds of fits)."""
    fall = np.power(np.asarray(n, dtype=np.float64), -c)
    return np.stack([np.ones_like(fall), -fall, b * np.log(n) * fall], axis=1)


def _least_squares(law, slopes, n, score, start: tuple, low: list, high: list) -> tuple[float, ...]:
    """scipy's curve_fit of `law` (whose partial derivatives `slopes` gives) through the points within the
    bounds, as floats.

    Raises:
        StropError: no fit found.
    """
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    try:
        with warnings.catch_warnings():  # its covariance is not used (the intervals are bootstrapped): no warning
            warnings.simplefilter("ignore", OptimizeWarning)
            fitted, _ = curve_fit(law, n, score, p0=start, bounds=(low, high), jac=slopes, maxfev=20_000)
    except (RuntimeError, ValueError) as error:
        raise StropError(f"the power law could not be fitted to these scores ({error}); more sizes or seeds "
                         "help") from None
    return tuple(float(v) for v in fitted)


def fit_power_law(n, score, bounded: bool = False, ceiling: float = math.inf) -> tuple[float, float, float]:
    """Least-squares (a, b, c) of `power_law` through the points (n_i, score_i); `bounded`: a <= 1 (accuracy,
    F1 and the like cannot exceed 1); otherwise a <= ceiling (an error, fitted as its negative, cannot level
    off below 0: ceiling 0).

    Raises:
        StropError: fewer than three distinct sizes, or no fit found.
    """
    n, score = np.asarray(n, dtype=np.float64), np.asarray(score, dtype=np.float64)
    if len(np.unique(n)) < 3:
        raise StropError("a learning curve needs at least three different training sizes: give --fractions with "
                         "three values or more")
    top = 1.0 if bounded else ceiling
    start_a = min(score.max() + 0.05 * (np.ptp(score) + 0.01), top)
    start_c = 0.5
    start_b = max((start_a - score.min()) * n.min() ** start_c, 1e-6)
    return _least_squares(power_law, _power_law_slopes, n, score, (start_a, start_b, start_c),
                          [-np.inf, 0.0, C_LOWEST], [top, np.inf, 3.0])


def fit_ceiling_free(n, score) -> tuple[float, float]:
    """Least-squares (b, c) of 1 - b * n^(-c) (`power_law` with a = 1) through the points.

    Raises:
        StropError: no fit found.
    """
    n, score = np.asarray(n, dtype=np.float64), np.asarray(score, dtype=np.float64)
    start_c = 0.5
    start_b = max((1.0 - score.min()) * n.min() ** start_c, 1e-6)
    return _least_squares(lambda n_, b_, c_: power_law(n_, 1.0, b_, c_),
                          lambda n_, b_, c_: _power_law_slopes(n_, 1.0, b_, c_)[:, 1:], n, score, (start_b, start_c),
                          [0.0, C_LOWEST], [np.inf, 3.0])


def fit_curve(n, score, bounded: bool, ceiling: float = math.inf) -> np.ndarray:
    """The forecast's parameters: (a, b, c) of the saturating law (a <= ceiling), and where `bounded` (a score
    that cannot exceed 1) also (b', c') of the ceiling-free law, whose mean with it is the forecast
    (`forecast`)."""
    saturating = fit_power_law(n, score, bounded, ceiling)
    return np.array(saturating + (fit_ceiling_free(n, score) if bounded else ()))


def forecast(n, params) -> np.ndarray:
    """The curve at n for `fit_curve`'s parameters: the saturating law, or its mean with the ceiling-free law."""
    if len(params) == 3:
        return power_law(n, *params)
    return (power_law(n, *params[:3]) + power_law(n, 1.0, *params[3:])) / 2


def examples_for(score: float, a: float, b: float, c: float) -> float:
    """The training size at which the saturating law reaches `score`: inf where it never does (score >= a) or
    only beyond LARGEST_SIZE."""
    if score >= a:
        return math.inf
    if b <= 0:  # a flat curve, at a everywhere
        return 0.0
    log_n = (math.log(b) - math.log(a - score)) / c
    return math.exp(log_n) if log_n <= math.log(LARGEST_SIZE) else math.inf


def size_for(score: float, params) -> float:
    """The training size at which the forecast reaches `score`: inf where it never does (at or above its
    `limit`) or only beyond LARGEST_SIZE; 0 where it is there already at any size (a flat curve above it)."""
    if len(params) == 3:
        return examples_for(score, *params)
    from scipy.optimize import brentq

    if score >= limit(params):
        return math.inf
    def gap(log_n: float) -> float:  # both laws rise with n: their mean crosses the score once
        return float(forecast(math.exp(log_n), params)) - score

    low, high = -50.0, math.log(LARGEST_SIZE)  # solved in log n, where the curve is smooth
    if gap(high) < 0:  # below the limit, but a law rising this slowly gets there only past any real data set
        return math.inf
    if gap(low) >= 0:  # above the score at any size: a curve so flat that it starts there
        return 0.0
    return math.exp(brentq(gap, low, high))


def limit(params) -> float:
    """Where the forecast levels off: a; for the mean of the two laws, its value at LARGEST_SIZE examples. The
    ceiling-free law tends to 1 only without bound, and one fitted to a flat curve (c' near 0) rises so slowly
    that it is still near its measured scores at any real size: its mean with the saturating law's a is where
    the forecast gets, not (a + 1) / 2."""
    return float(params[0]) if len(params) == 3 else float(forecast(LARGEST_SIZE, params))


# The latest bootstraps by their inputs: curve.json's intervals, curve.png's band and report.html's chart are drawn
# from the same fits, and a curve command would otherwise fit them three times over.
_BOOTSTRAPS: dict[tuple, np.ndarray] = {}


def bootstrap(n, score, bounded: bool, draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
              ceiling: float = math.inf, show: bool = False) -> np.ndarray:
    """(draws, parameters) of `fit_curve`, each law refitted to its own fitted curve plus its residuals
    resampled (a residual bootstrap, the same resampled points for both laws; residuals scaled by
    sqrt(points / (points - 3)) for a law's three fitted parameters). On synthetic curves of 18 points its
    95% intervals held a saturating law's true extrapolation about 88% of the time (a case bootstrap: 82%):
    treat them as somewhat optimistic, as extrapolations are. Failed fits are left out. `show`: progress (a
    hard curve's fits can take a while). The same inputs give the same fits, from memory after the first
    time."""
    n, score = np.asarray(n, dtype=np.float64), np.asarray(score, dtype=np.float64)
    key = (n.tobytes(), score.tobytes(), bounded, draws, seed, ceiling)
    if key not in _BOOTSTRAPS:
        if len(_BOOTSTRAPS) >= 8:
            _BOOTSTRAPS.pop(next(iter(_BOOTSTRAPS)))  # the oldest
        _BOOTSTRAPS[key] = _bootstrap_fits(n, score, bounded, draws, seed, ceiling, show)
    return _BOOTSTRAPS[key].copy()


def _bootstrap_fits(n: np.ndarray, score: np.ndarray, bounded: bool, draws: int, seed: int, ceiling: float,
                    show: bool) -> np.ndarray:
    from strop.progress import progress

    params = fit_curve(n, score, bounded, ceiling)
    laws = [power_law(n, *params[:3])] + ([power_law(n, 1.0, *params[3:])] if bounded else [])
    scale = math.sqrt(len(n) / max(len(n) - 3, 1))
    rng = np.random.default_rng(seed)
    fits = []
    for _ in progress(range(draws), "fitting the curve (bootstrap)", show, unit="fit"):
        picked = rng.integers(0, len(n), len(n))
        resampled = [law + (score - law)[picked] * scale for law in laws]
        try:
            fits.append(np.array(fit_power_law(n, resampled[0], bounded, ceiling)
                                 + (fit_ceiling_free(n, resampled[1]) if bounded else ())))
        except StropError:
            continue
    return np.array(fits)


def interval(values, estimate: float | None = None) -> list[float]:
    """The central 95% of the values (2.5th and 97.5th percentiles; inf stays inf), widened to hold `estimate`
    where given: a percentile interval can miss its own estimate where the fit sits at a bound (a level of 0
    that every resampled fit exceeds), and an answer should not be printed outside its interval."""
    values = np.asarray(values, dtype=np.float64)
    # Observed values, not interpolated between two: between inf and inf, interpolation gives nan.
    low, high = (float(np.percentile(values, q, method="inverted_cdf")) for q in (2.5, 97.5))
    if estimate is not None and not math.isnan(estimate):
        low, high = min(low, float(estimate)), max(high, float(estimate))
    return [low, high]


def analyse(n, score, minimised: bool = False, bounded: bool = False, target: float | None = None,
            draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
            score_range: tuple[float, float] = (-math.inf, math.inf), show: bool = False) -> dict:
    """The fitted curve, its parameters' intervals, and the answers: the score at twice the largest size, and
    (given a target score) the size that reaches it; each with a 95% bootstrap interval. `bounded`: the score
    cannot exceed 1, and the forecast is the mean of the saturating and the ceiling-free laws. `score_range`:
    the values the metric can take; the law's level is held within it (an error's at 0 or above) and the forecast
    scores and their intervals are cut to it. `show`: the bootstrap's progress."""
    sign = -1.0 if minimised else 1.0  # a loss falls as data grow: fit its negative, which rises
    n, y = np.asarray(n, dtype=np.float64), sign * np.asarray(score, dtype=np.float64)

    def scores(values) -> float | list[float]:  # forecast values back on the metric's scale, within its range
        cut = np.clip(sign * np.asarray(values, dtype=np.float64), *score_range)
        return float(cut) if cut.ndim == 0 else sorted(float(v) for v in cut)

    ceiling = fitted_ceiling(minimised, score_range)
    params = fit_curve(n, y, bounded, ceiling)
    draws_ = bootstrap(n, y, bounded, draws, seed, ceiling, show)
    largest = float(n.max())
    now, doubled = forecast(largest, params), forecast(2 * largest, params)

    def at(size: float) -> np.ndarray:  # the forecast of every bootstrap fit
        return np.array([forecast(size, d) for d in draws_])

    limits = [limit(d) for d in draws_]
    model = ("score(n) = mean of a - b * n^(-c) and 1 - b' * n^(-c')" if bounded else
             f"score(n) = {LOSS_LAW if minimised else 'a - b * n^(-c)'}")
    # a loss's law on its own scale: -score = a - b n^-c is score = (-a) + b n^-c, its level -a
    level, levels = sign * params[0], sorted(sign * np.array(interval(draws_[:, 0], params[0])))
    result = {
        "model": model, "lower_is_better": minimised,
        # the metric's range, what the forecasts are cut to (null: unbounded on that side; JSON has no inf)
        "score_range": [None if math.isinf(v) else float(v) for v in score_range],
        "parameters": {"a": level, "b": params[1], "c": params[2]},
        "parameter_intervals": {"a": levels, "b": interval(draws_[:, 1], params[1]),
                                "c": interval(draws_[:, 2], params[2])},
        "bootstrap_draws": len(draws_),
        "bootstrap": {"asked": draws, "seed": seed},  # curve.png draws its band from the same fits
        "largest_size": largest,
        "score_at_largest": scores(now),
        "twice_the_data": {"size": 2 * largest, "score": scores(doubled),
                           "score_interval": scores(interval(at(2 * largest), doubled)),
                           "gain": sign * float(doubled - now),
                           "gain_interval": sorted(sign * np.array(interval(at(2 * largest) - at(largest),
                                                                             doubled - now)))},
        "asymptote": scores(limit(params)), "asymptote_interval": scores(interval(limits, limit(params))),
    }
    if bounded:
        result["ceiling_free"] = {"b": params[3], "c": params[4], "b_interval": interval(draws_[:, 3], params[3]),
                                  "c_interval": interval(draws_[:, 4], params[4])}
    if target is not None:
        fewest = n.min()
        measured_at_fewest = float(np.mean(y[n == fewest]))  # on the fitted scale, as sign * target is
        needed = size_for(sign * target, params)
        needed_draws = [size_for(sign * target, d) for d in draws_]
        result["target"] = {"score": target, "examples": needed, "examples_interval": interval(needed_draws, needed),
                            "reachable_share": float(np.mean(np.isfinite(needed_draws))),
                            # the runs of the fewest examples trained on reach it on average: a measurement
                            # (a fit that crosses it below them, where those runs fall short, is not one)
                            "below_measured": bool(measured_at_fewest >= sign * target),
                            # the fewest examples whose runs reach it on average: a fact the fit may disagree with
                            "measured": _measured_reach(n, y, sign, target)}
    return result


def fitted_ceiling(minimised: bool, score_range: tuple[float, float]) -> float:
    """The highest level the fitted law may tend to, on its fitted scale: the metric's best value (an error's
    0, fitted as its negative), so that no forecast levels off at a score the metric cannot take."""
    return -score_range[0] if minimised else score_range[1]


def _measured_reach(n: np.ndarray, y: np.ndarray, sign: float, target: float) -> dict | None:
    """The smallest size whose runs' mean reaches the target (y on the fitted scale), with that mean; None."""
    for size in np.unique(n):
        mean = float(np.mean(y[n == size]))
        if mean >= sign * target:
            return {"examples": float(size), "score": sign * mean}
    return None


def parameters_of(fit: dict) -> np.ndarray:
    """`fit_curve`'s parameters back from `analyse`'s result (curve.json's "fit"): for a loss, those of its
    negative (a curve.json written before losses were shown on their own scale has them so already)."""
    p = fit["parameters"]
    free = fit.get("ceiling_free")
    level = -p["a"] if LOSS_LAW in fit["model"] else p["a"]
    return np.array([level, p["b"], p["c"]] + ([free["b"], free["c"]] if free else []))


def nested_subsets(targets: list, sizes: list[int], seed: int) -> list[np.ndarray]:
    """For each size, a subset of the rows of that size; each subset contains the smaller ones. Stratified
    where every target is one label: each class keeps its share (at least one example), the classes' rows
    taken in one random order per seed; where every target is a set of labels, each subset holds every label
    (a run whose subset lacked one would be refused a validation set that has it).

    Raises:
        StropError: a size too small to hold every class or label.
    """
    rng = np.random.default_rng(seed)
    total = len(targets)
    if not all(isinstance(t, str) for t in targets):
        order = rng.permutation(total)
        if all(isinstance(t, (list, tuple)) and all(isinstance(x, str) for x in t) for t in targets):
            order = _covering_first(order, targets, min(sizes))  # label sets; not a regression's tuples of numbers
        return [np.sort(order[:size]) for size in sizes]
    classes, inverse = np.unique(np.asarray(targets), return_inverse=True)
    members = [rng.permutation(np.flatnonzero(inverse == k)) for k in range(len(classes))]
    counts = np.array([len(m) for m in members])
    taken, previous = {}, np.zeros(len(classes), dtype=int)
    for size in sorted(set(sizes)):  # from the smallest: no class gives back rows a smaller subset took
        if size < len(classes):
            raise StropError(f"a share of the data gives {size} examples, fewer than the {len(classes)} classes: "
                             "give larger --fractions")
        share = counts * size / total
        floor = np.maximum(previous, 1)
        take = np.minimum(np.maximum(floor, np.floor(share).astype(int)), counts)
        while take.sum() < size:  # the largest remainders first
            room = np.where(take < counts, share - take, -np.inf)
            take[int(np.argmax(room))] += 1
        while take.sum() > size:  # (largest remainders alone are not monotone: a class's count could fall)
            take[int(np.argmax(np.where(take > floor, take - share, -np.inf)))] -= 1
        taken[size] = previous = take
    return [np.sort(np.concatenate([m[:k] for m, k in zip(members, taken[size])])) for size in sizes]


def learning_curve(config=None, overrides: list[str] = (), fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
                   seeds: int = 3, target: float | None = None, metric: str | None = None,
                   output: str | Path | None = None, keep_runs: bool = False, quiet: bool = False) -> dict:
    """Trains on each fraction of the training data with `seeds` seeds, scores on one validation set, fits
    the curve and answers; writes curve.json and curve.png to `output` and returns the JSON's content.

    Raises:
        StropError: bad config, data, fractions, metric, or an output folder that already holds files.
    """
    from strop.config import check_seeds, load_config
    from strop.cv import (check_study, check_same_study, fit_and_score, open_study, read_training_table,
                          recorded_config, repeated_note)
    from strop.fit import all_of_note, method_for_all_of, resolve_config
    from strop.methods.auto import freeze_layers_for_all_of
    from strop.tasks import TASKS

    fractions = tuple(sorted(set(float(f) for f in fractions)))
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise StropError(f"--fractions must be shares in (0, 1], e.g. 0.1,0.3,1; got {list(fractions)}")
    if len(fractions) < 3:
        raise StropError(f"a learning curve needs at least three training sizes; --fractions gives {len(fractions)}: "
                         "give three values or more, e.g. 0.1,0.3,1")
    if seeds < 1:
        raise StropError(f"--seeds must be >= 1; got {seeds}")
    cfg = resolve_config(load_config(config, overrides))
    quiet = quiet or cfg.train.quiet  # --quiet, or train.quiet in the config
    check_study(cfg, "curve")
    task_cls = TASKS.get(cfg.task.name)
    metric = metric or task_cls.lead_metric
    if metric not in task_cls.metric_names:
        raise StropError(f"--metric {metric} is not a metric of {task_cls.name}; choose one of "
                         f"{', '.join(task_cls.metric_names)}")
    check_target(target, metric, task_cls)  # refused before the curve's runs, not after them
    out, saved, data = open_study(output, cfg, "curve", CURVE_FILE, "fit")
    frame, targets, inputs = read_training_table(cfg, "curve")
    make_output_folder(out, "--output")
    lock = lock_study(out, "curve")  # refused here, a second study into the folder removes nothing of the first's
    continuing = False  # set once a recorded study is found to be this one: until then its folder is left as it is
    try:
        pool, validation_file = _pool_and_validation(cfg, frame, targets, inputs, out)
        cfg, method_choice = method_for_all_of(cfg)  # one method at every size
        cfg, note = freeze_layers_for_all_of(cfg, len(pool))
        split_note = None if cfg.data.validation is not None else repeated_note(inputs, "side of the validation split")
        for said in (all_of_note(method_choice), note, split_note):
            if said and not quiet:
                print(said, flush=True)
        sizes = [max(1, int(round(f * len(pool)))) for f in fractions]
        distinct = len(set(sizes))
        if 3 <= distinct < len(sizes):  # fractions that round to one size would train the same run twice
            fractions, sizes = _one_fraction_a_size(fractions, sizes, quiet)
        if len(pool) < 3:  # no fractions give three sizes
            held = "" if cfg.data.validation is not None else (
                ", or give data.validation=FILE, so that no share of data.train is held out to validate on")
            raise StropError(f"a learning curve needs at least three training sizes, and {len(pool)} training "
                             f"example{'s' if len(pool) != 1 else ''} give at most {len(pool)}: add examples{held}")
        if distinct < 3:  # before any run: fractions too close for the examples there are
            raise StropError(f"--fractions {','.join(f'{f:g}' for f in fractions)} of the {len(pool)} training "
                             f"examples give {distinct} different size{'s' if distinct > 1 else ''} "
                             f"({', '.join(map(str, sizes))}); a learning curve needs at least three: give "
                             "fractions further apart")
        check_seeds("train.seed", cfg.train.seed, seeds)
        seed_values = [cfg.train.seed + i for i in range(seeds)]
        plans = {seed: nested_subsets([targets[i] for i in pool], sizes, seed) for seed in seed_values}
        result = {"config": recorded_config(cfg), "data": data, "metric": metric, "fractions": list(fractions),
                  "sizes": sizes, "seeds": seed_values, "pool_examples": len(pool), "validation": str(validation_file),
                  "keep_runs": keep_runs, "points": [],
                  # the report's advice needs it (few-shot is not for many classes)
                  "classes": len({targets[i] for i in pool}) if isinstance(targets[0], str) else None}
        check_same_study(saved, cfg, {key: result[key] for key in ("metric", "fractions", "sizes", "seeds",
                                                                    "pool_examples", "keep_runs")}, out)
        continuing = saved is not None
        if continuing:
            result["points"] = saved["points"]
            if not quiet:
                print(f"continuing the study in {out}: {len(saved['points'])} run(s) recorded", flush=True)
        done = {(p["examples"], p["seed"]) for p in result["points"]}
        clock = StudyClock([size for seed in seed_values for size in sizes if (size, seed) not in done])
        for seed in seed_values:
            for size, subset in zip(sizes, plans[seed]):
                if (size, seed) in done:
                    continue
                rows = pool[subset]
                train_file = write_rows(frame, rows, out / "data" / f"n{size}-seed{seed}.parquet")
                cfg_run = _with_validation(cfg, validation_file)
                run_dir = out / "runs" / f"n{size}-seed{seed}"
                shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run's: it trains again from its start
                scores, _ = fit_and_score(cfg_run, train_file, None, seed, run_dir, keep_runs,
                                           method_choice=method_choice,
                                           show=None if quiet else f"{size} examples, seed {seed}")
                result["points"].append({"examples": size, "seed": seed, "scores": scores})
                atomic_write_json(out / CURVE_FILE, result, "the learning curve")
                if not quiet:
                    print(f"{size} examples, seed {seed}: {metric} {score_text(scores[metric])}  {clock.lap()}",
                          flush=True)
    except BaseException as error:
        measured = (out / CURVE_FILE).is_file()
        if not measured:
            shutil.rmtree(out, ignore_errors=True)  # nothing measured: leave nothing behind
        elif not keep_runs and (saved is None or continuing):
            shutil.rmtree(out / "runs", ignore_errors=True)  # what was measured stays in curve.json
        if isinstance(error, KeyboardInterrupt):
            from strop.cv import interrupted_note

            print(interrupted_note("curve", out, len(result["points"]) if measured else 0), file=sys.stderr)
        raise
    finally:
        lock.close()  # not left to the collector: a study continued in this process takes it again
    if not keep_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)
    return _fit_and_write(result, out, task_cls, target, cfg.train.seed, quiet)


def _one_fraction_a_size(fractions: tuple[float, ...], sizes: list[int], quiet: bool) -> tuple[tuple, list]:
    """The first fraction of each size, said where others gave that size too."""
    kept = {}
    for fraction, size in zip(fractions, sizes):
        kept.setdefault(size, []).append(fraction)
    if not quiet:
        shared = [f"{' and '.join(f'{f:g}' for f in group)} give {size}" for size, group in kept.items()
                  if len(group) > 1]
        print(f"note: --fractions {'; '.join(shared)} examples: each size is measured once", flush=True)
    return tuple(group[0] for group in kept.values()), list(kept)


def _fit_and_write(result: dict, out: Path, task_cls, target: float | None, seed: int, quiet: bool) -> dict:
    """Fits the curve to the points of result["metric"], writes curve.json, curve.png and the report, and prints
    the answers (unless quiet); returns the result with its "fit"."""
    from strop.report_studies import report_after

    metric = result["metric"]
    n = [p["examples"] for p in result["points"]]
    values = [p["scores"][metric] for p in result["points"]]
    minimised = metric in task_cls.minimised
    result["fit"] = analyse(n, values, minimised=minimised, bounded=not minimised and max(values) <= 1.0,
                            target=target, seed=seed, score_range=task_cls.metric_range(metric), show=not quiet)
    plot = save_plot(result, out / PLOT_FILE)
    result["plot"] = str(plot) if plot else None
    atomic_write_json(out / CURVE_FILE, result, "the learning curve")
    report = report_after(out, "curve")
    if not quiet:
        print(describe(result) + f"\nresults in {out / CURVE_FILE}" + (f", plot in {plot}" if plot else "")
              + (f", report in {report}" if report else ""))
    return result


def check_target(target: float | None, metric: str, task_cls) -> None:
    """Raises StropError where --target is a value the metric cannot take."""
    low, high = task_cls.metric_range(metric)
    if target is not None and not low <= target <= high:
        raise StropError(f"--target {target:g} is a value {metric} cannot take (it lies in [{low:g}, {high:g}]): "
                         f"give a target in that range")


def refit(folder: str | Path, metric: str | None = None, target: float | None = None, quiet: bool = False) -> dict:
    """`strop curve --refit FOLDER`: a finished curve fitted again to the points it measured, for another
    --metric (every run recorded all of its task's metrics; by default the task's lead metric, as for a curve,
    whatever an earlier refit chose) or --target, without training anything. curve.json, curve.png and the
    report then hold this fit.

    Raises:
        StropError: no finished curve in the folder, or a metric or target the curve cannot answer for.
    """
    import json

    from strop.tasks import TASKS

    folder = Path(folder)
    path = folder / CURVE_FILE
    if not path.is_file():
        raise StropError(f"--refit {folder}: no {CURVE_FILE} there; give the --output folder of a strop curve")
    result = json.loads(path.read_text(encoding="utf-8"))
    if "fit" not in result:
        raise StropError(f"--refit {folder}: the curve there is not finished; continue it first (the same strop "
                         "curve command with train.resume=true)")
    task_cls = TASKS.get(result["config"]["task"]["name"])
    metric = metric or task_cls.lead_metric
    measured = [name for name in task_cls.metric_names if all(name in p["scores"] for p in result["points"])]
    if metric not in measured:
        raise StropError(f"--metric {metric}: the curve's runs measured {', '.join(measured)}; choose one of them")
    check_target(target, metric, task_cls)
    result["metric"] = metric
    return _fit_and_write(result, folder, task_cls, target, result["config"]["train"]["seed"], quiet)


def _covering_first(order: np.ndarray, label_sets: list, fewest: int) -> np.ndarray:
    """`order` with, first, rows that between them hold every label (in the order's own random order, a row
    taken where it brings a label not yet held), so that every prefix of at least those rows holds every label.

    Raises:
        StropError: `fewest` rows cannot hold every label.
    """
    held, first = set(), []
    for row in order:
        if set(label_sets[row]) - held:
            held |= set(label_sets[row])
            first.append(row)
    if fewest < len(first):
        raise StropError(f"the smallest share of the data gives {fewest} examples, and {len(first)} are needed to "
                         f"hold each of the {len(held)} labels once: give larger --fractions")
    taken = set(first)
    return np.array(first + [row for row in order if row not in taken], dtype=int)


def _pool_and_validation(cfg, frame, targets: list, inputs: list, out: Path) -> tuple[np.ndarray, Path]:
    """The rows to draw training subsets from, and the validation file: data.validation where given, else a
    held-out share (data.validation_fraction, stratified by class, seeded, as fit holds one out; the rows of an
    input on one side) of the training data, written once and used by every run."""
    from strop.data.splits import random_split, stratified_split
    from strop.tasks.base import Examples

    if cfg.data.validation is not None:
        return np.arange(len(frame)), Path(cfg.data.validation)
    rows = Examples(list(range(len(frame))), targets, str(cfg.data.train))
    split = stratified_split if all(isinstance(t, str) for t in targets) else random_split
    train, held_out = split(rows, cfg.data.validation_fraction, cfg.train.seed, inputs)
    if all(isinstance(t, (list, tuple)) and all(isinstance(x, str) for x in t) for t in targets):  # label sets
        trained = {label for i in train.inputs for label in targets[i]}
        missing = sorted({label for i in held_out.inputs for label in targets[i]} - trained)
        if missing:
            raise StropError(f"the validation share held out of data.train (data.validation_fraction="
                             f"{cfg.data.validation_fraction:g}) takes every example of label(s) "
                             f"{', '.join(map(str, missing[:5]))}, so no run of the curve could learn them: add "
                             "examples of them, or give data.validation=FILE")
    validation_file = write_rows(frame, np.array(held_out.inputs), out / "data" / "validation.parquet")
    return np.array(train.inputs), validation_file


def _with_validation(cfg, validation_file: Path):
    from dataclasses import replace

    return replace(cfg, data=replace(cfg.data, validation=str(validation_file)))


def scores_by_size(result: dict) -> dict[int, list[float]]:
    """The curve's metric of every run, by training size (sizes in order)."""
    return {size: [p["scores"][result["metric"]] for p in result["points"] if p["examples"] == size]
            for size in result["sizes"]}


def lower_is_better(fit: dict) -> bool:
    """Whether the curve was fitted to a metric that falls as it improves (a loss); `analyse` says so in its
    model's description, which curve.json keeps."""
    return "lower is better" in fit["model"]


def describe(result: dict) -> str:
    """The points (mean ± std over seeds per size), the fitted curve and the answers, for the terminal."""
    metric, fit = result["metric"], result["fit"]
    lines = [f"learning curve of {metric} ({len(result['seeds'])} seed(s) per size):"]
    for size, values in scores_by_size(result).items():
        spread = f" ± {shown(np.std(values, ddof=1))}" if len(values) > 1 else ""
        lines.append(f"  {size:>8} examples  {shown(np.mean(values))}{spread}")
    p, q = fit["parameters"], fit["parameter_intervals"]
    free = fit.get("ceiling_free")
    free_words = (f"; b' {free['b']:.4g}, c' {free['c']:.3f} [{free['c_interval'][0]:.3f}, "
                  f"{free['c_interval'][1]:.3f}]") if free else ""
    lines.append(f"fit: {fit['model']}: a {shown(p['a'])} [{shown(q['a'][0])}, {shown(q['a'][1])}], b {p['b']:.4g}, "
                 f"c {p['c']:.3f} [{q['c'][0]:.3f}, {q['c'][1]:.3f}]{free_words} (95% intervals, "
                 f"{fit['bootstrap_draws']} bootstrap fits)")
    twice = fit["twice_the_data"]
    lines.append(f"twice the data ({twice['size']:.0f} examples): {metric} {shown(twice['score'])} "
                 f"[{shown(twice['score_interval'][0])}, {shown(twice['score_interval'][1])}], "
                 + ("a change (lower is better) of " if fit.get("lower_is_better") else "a gain of ") +
                 f"{shown(twice['gain'], True)} [{shown(twice['gain_interval'][0], True)}, "
                 f"{shown(twice['gain_interval'][1], True)}] over {shown(fit['score_at_largest'])} at "
                 f"{fit['largest_size']:.0f}")
    ends = (f"[{shown(fit['asymptote_interval'][0])}, {shown(fit['asymptote_interval'][1])}]")
    if free:  # the mean of a law that levels off at a and one without a ceiling (1 only without bound)
        far = float(power_law(LARGEST_SIZE, 1.0, free["b"], free["c"]))
        lines.append(f"as the data grow (to {LARGEST_SIZE:.0e} examples) the forecast rises to {metric} "
                     f"{shown(fit['asymptote'])} {ends} (the saturating law levels off at {shown(p['a'])}, the "
                     f"ceiling-free one gets to {shown(far)})")
    else:
        lines.append(f"the curve levels off at {metric} {shown(fit['asymptote'])} {ends}")
    lines += [f"warning: {w}" for w in warnings_of(result)]
    if "target" in fit:
        t = fit["target"]
        low, high = t["examples_interval"]
        if t.get("below_measured"):
            lines.append(f"{metric} {t['score']}: reached already by the fewest examples measured "
                         f"({min(result['sizes']):,}); the curve says nothing below that")
        elif t["examples"] < min(result["sizes"]):  # the law crosses it below the sizes whose runs fall short
            fewest = min(result["sizes"])
            lines.append(f"{metric} {t['score']}: the fitted curve crosses it below the fewest examples measured "
                         f"({fewest:,}), but their runs average {shown(np.mean(scores_by_size(result)[fewest]))}, "
                         "short of it: the fit does not follow the smallest sizes there")
        elif math.isinf(t["examples"]):
            lower = fit.get("lower_is_better")
            within = t["score"] > fit["asymptote"] if lower else t["score"] < fit["asymptote"]
            why = (f"it tends there so slowly that it would take more than {LARGEST_SIZE:.0e} examples" if within
                   else f"it levels off at {shown(fit['asymptote'])}")
            lines.append(f"{metric} {t['score']}: not reached by the fitted curve ({why}); "
                         f"reached in {t['reachable_share']:.0%} of the bootstrap fits")
        else:
            fewest = min(result["sizes"])  # an interval reaching below the sizes measured says no more than that
            start = f"fewer than {fewest:,}" if low < fewest else f"{low:,.0f}"
            lines.append(f"{metric} {t['score']}: about {t['examples']:,.0f} labelled examples [{start}, "
                         + ("never" if math.isinf(high) else f"{high:,.0f}") + "]")
        reached = t.get("measured")
        if reached and not t.get("below_measured") and t["examples"] < min(result["sizes"]):
            lines[-1] += (f"; measured, the runs of {reached['examples']:,.0f} examples are the fewest that reach it "
                          f"(mean {shown(reached['score'])})")
        elif reached and not t.get("below_measured") and not reached["examples"] >= t["examples"]:
            lines[-1] += (f"; measured, the runs of {reached['examples']:,.0f} examples reach it already "
                          f"(mean {shown(reached['score'])}): the fitted curve misses that")
        elif reached is None and t["examples"] <= max(result["sizes"]):  # within the sizes measured, and none did
            most = max(result["sizes"])
            lines[-1] += (f"; measured, no size's runs reach it (those of {most:,} examples average "
                          f"{shown(np.mean(scores_by_size(result)[most]))}): the fitted curve runs above them")
    return "\n".join(lines)


def measured_trend(result: dict) -> tuple[str, int, int, float, float]:
    """How the measured scores move from the fewest examples to the most, beyond the seeds' spread there (a
    smaller step is noise): "better", "worse", "flat", or "one size" where only one was measured; with those
    two sizes and their mean scores."""
    by_size = scores_by_size(result)
    fewest, most = min(by_size), max(by_size)
    first, last = float(np.mean(by_size[fewest])), float(np.mean(by_size[most]))
    if len(by_size) == 1:
        return "one size", fewest, most, first, last
    spread = sum(float(np.std(by_size[size], ddof=1)) for size in (fewest, most) if len(by_size[size]) > 1)
    worse = (last - first) if lower_is_better(result["fit"]) else (first - last)
    trend = "worse" if worse > spread else "better" if worse < -spread else "flat"
    return trend, fewest, most, first, last


def fit_misses_largest(result: dict) -> tuple[int, float, float, list[float]] | None:
    """Where the fitted score at the largest size lies outside the 95% interval of the mean of the runs there
    (Student's t over the seeds, widened by 0.5% of the mean, so that seeds that agree closely do not flag a
    fit that differs from them by a share no verdict turns on): (size, fitted score, measured mean, that
    interval); None where it lies within, or one run there gives no interval. A law that misses its largest
    points forecasts from a score the runs do not have: a bounded score's forecast, half of it a law without a
    ceiling, keeps rising where the runs have levelled off."""
    from strop.cv import summarise

    by_size = scores_by_size(result)
    most = max(by_size)
    measured = summarise(by_size[most])
    if measured["ci95"] is None:
        return None
    slack = 0.005 * abs(measured["mean"])
    fitted = result["fit"]["score_at_largest"]
    if measured["ci95"][0] - slack <= fitted <= measured["ci95"][1] + slack:
        return None
    return most, fitted, measured["mean"], measured["ci95"]


def warnings_of(result: dict) -> list[str]:
    """What makes the fitted curve's answers weak: too few points, measured scores that do not change with the
    data beyond the seeds' spread, or get worse (the laws can only rise, or for a loss fall), a law that does not
    level off within its bounds."""
    fit, metric = result["fit"], result["metric"]
    found = []
    if len(result["points"]) <= 3:
        found.append(f"{len(result['points'])} points for a law of 3 parameters: no freedom is left to measure "
                     "the fit's error, so its intervals say nothing of the uncertainty; run more seeds (--seeds) or "
                     "sizes (--fractions)")
    trend, fewest, most, first, last = measured_trend(result)
    if trend == "flat":
        found.append(f"the measured {metric} at {most:,} examples ({shown(last)}) is within the seeds' spread of "
                     f"that at {fewest:,} ({shown(first)}): these points show no gain from more data, so any gain in "
                     "the forecast is the law's shape, not something measured; check the runs (a model that predicts "
                     "one class, too few epochs), or measure larger sizes")
    elif trend == "worse":
        found.append(f"the measured {metric} is worse at {most:,} examples ({shown(last)}) than at {fewest:,} "
                     f"({shown(first)}): the law, which only improves with the data, does not follow these points, "
                     "so read its forecast with care; check the runs (too few epochs, an unstable learning rate, "
                     "a validation set too small to tell the sizes apart)")
    elif fit["parameters"]["c"] < C_NEAR_0:
        found.append(f"c is {fit['parameters']['c']:.4f}, near 0: the points do not level off as a power law "
                     "does (they are flat, or move steadily on a log scale), so the law's level (a) says little; "
                     "trust the forecast near the measured sizes only, and measure larger ones")
    missed = fit_misses_largest(result)
    if missed:
        most, fitted, mean, (low, high) = missed
        found.append(f"the fitted {metric} at {most:,} examples ({shown(fitted)}) is outside the 95% interval of its "
                     f"runs' mean ({shown(mean)} [{shown(low)}, {shown(high)}]): the law does not follow the largest "
                     "sizes, so its forecast starts from a score the runs do not have (the measured scores may have "
                     "levelled off where the law keeps rising); read the points, and measure larger sizes")
    return found


def shown(value: float, signed: bool = False) -> str:
    """A score or a change for people: four decimals, or three significant digits where four decimals would
    show a nonzero value as 0.0000 (a target measured in small units)."""
    value = value + 0.0  # -0.0 (a change of nothing, negated for a loss) shows as 0.0000
    if value != 0 and abs(value) < 1e-3 and math.isfinite(value):
        return f"{value:+.3g}" if signed else f"{value:.3g}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def save_plot(result: dict, path: Path) -> Path | None:
    """curve.png: the figure `draw` makes; None without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
    except ImportError:
        return None
    figure = Figure(figsize=(6.4, 4.2))
    draw(result, figure.subplots())
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def draw(result: dict, axes) -> None:
    """The points, the fitted curve to four times the largest size and its 95% band, on matplotlib axes."""
    fit, metric = result["fit"], result["metric"]
    sign = -1.0 if lower_is_better(fit) else 1.0
    n = np.array([p["examples"] for p in result["points"]], dtype=float)
    y = np.array([p["scores"][metric] for p in result["points"]])
    grid = np.geomspace(n.min(), 4 * n.max(), 200)
    params = parameters_of(fit)
    low, high = fit.get("score_range", [None, None])  # null: unbounded on that side
    low, high = -math.inf if low is None else low, math.inf if high is None else high
    # the fits curve.json's intervals come from (an older curve.json without them: 200 of its own)
    asked = fit.get("bootstrap", {"asked": 200, "seed": 1})
    draws = bootstrap(n, sign * y, len(params) == 5, draws=asked["asked"], seed=asked["seed"],
                      ceiling=fitted_ceiling(sign < 0, (low, high)))

    def cut(values):  # on the metric's scale and within its range, as curve.json's forecasts are
        return np.clip(values, low, high)

    band = cut(sign * np.array([forecast(grid, d) for d in draws]))
    # the percentiles as `interval` takes them for curve.json (observed values, not interpolated)
    low_edge, high_edge = (np.percentile(band, q, axis=0, method="inverted_cdf") for q in (2.5, 97.5))
    axes.fill_between(grid, low_edge, high_edge, alpha=0.25, label="95% band (bootstrap)")
    if len(params) == 5:  # the two laws the forecast averages, thin
        axes.plot(grid, cut(power_law(grid, *params[:3])), linewidth=0.8, linestyle="--", label="a - b n^-c")
        axes.plot(grid, cut(power_law(grid, 1.0, *params[3:])), linewidth=0.8, linestyle="--",
                  label="1 - b' n^-c'")
    axes.plot(grid, cut(sign * forecast(grid, params)),
              label="forecast (their mean)" if len(params) == 5 else "a + b n^-c" if sign < 0 else "a - b n^-c")
    axes.scatter(n, y, s=14, color="black", label="runs")
    if "target" in fit:
        axes.axhline(fit["target"]["score"], linestyle=":", color="gray", label=f"target {fit['target']['score']}")
    axes.set_xscale("log")
    # plain numbers (100, 1,000): a log axis labels its ticks as math text (10^2), whose fonts a slim
    # matplotlib install lacks, with a warning on stderr for every tick
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel(metric)
    axes.legend(loc="best", fontsize=8)

"""The one training loop: setup, epochs of steps, validation, early stopping, checkpoints.

Built on Accelerate, so the same loop runs on CPU, one GPU, or many processes under `accelerate launch`
(device placement, mixed precision, gradient accumulation, gathering of predictions).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from functools import partial

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from strop.config import Config
from strop.errors import StropError
from strop.methods import Method
from strop.progress import progress
from strop.runs import RunDir, atomic_write_text, reporting_write_errors, to_json
from strop import trackers
from strop.tasks import Task
from strop.tasks.base import score_text
from strop.train.average import WeightAverage
from strop.train.cache import cache_body_outputs, example_length
from strop.train.checkpoint import (LoopState, cpu_state, has_checkpoint, load_checkpoint, load_weights,
                                    never_trained, rng_states, save_checkpoint)
from strop.train.optim import (AUTO_LR, AUTO_LR_STEPS, build_optimizer, build_scheduler, faster_parameters,
                               l1_penalty, layer_rate_multiples, optimizer_steps, resolve_lr)
from strop.train.mixing import mixed_loss, mixing_for
from strop.train.sampler import BatchSampler


def refuse_missing_gpu(cfg: Config) -> None:
    """Raises StropError where train.device=cuda and PyTorch sees no CUDA GPU: Accelerate would quietly train
    on the CPU while the run's config said cuda."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise StropError(f"train.device=cuda: PyTorch sees no CUDA GPU here (torch {torch.__version__}, {build}); "
                         "use train.device=auto (a GPU where there is one, else the CPU) or train.device=cpu")


def make_accelerator(cfg: Config) -> Accelerator:
    # Mixed precision is applied by the loop itself (see `resolve_precision`): to training steps and the
    # per-epoch validations, but not to the final validation of the weights it keeps, which runs in fp32
    # like `strop evaluate`, `strop predict` and plain transformers do.
    # cpu=True also where no GPU exists: launched as several processes (torchrun, `accelerate launch`),
    # Accelerate then joins them over gloo on the CPU rather than running each alone.
    cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available())
    forget_other_device(cpu or not torch.cuda.is_available())
    # step_scheduler_with_optimizer=False: the schedule is built over the optimizer steps this process takes
    # and stepped once each, so a run of N processes follows the same curve as one process with an N times
    # larger batch (Accelerate's default steps it N times a step, with warmup rounded on the wrong count).
    accelerator = Accelerator(cpu=cpu, gradient_accumulation_steps=cfg.train.grad_accum,
                              step_scheduler_with_optimizer=False, **trackers.accelerator_options(cfg))
    if accelerator.num_processes > 1 and accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Processes sharing one machine's cores, each with torch's default (all cores), spend much of their time
        # in the kernel: give each its share.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return accelerator


def forget_other_device(cpu: bool) -> None:
    """Accelerate keeps one state a process, made by its first Accelerator: in a notebook, a fit on the GPU then
    one with train.device=cpu was refused ("AcceleratorState has already been initialized"), and a CPU fit then
    one on the GPU trained on the CPU. In a single process (not launched as several, whose state joins them) a
    state made for the other device is dropped, so that each fit runs where its config says."""
    from accelerate.state import AcceleratorState, DistributedType, PartialState

    made = PartialState._shared_state
    if made and made.get("distributed_type") == DistributedType.NO and made.get("device") is not None \
            and (made["device"].type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)


def resolve_precision(cfg: Config, device: torch.device) -> str:
    """train.mixed_precision, with `auto` made concrete: bf16 on a GPU that supports it; on a CPU, bf16
    only where a quick probe finds it faster (CPUs with native bf16 dot products: training about 1.6x
    faster on AMD Zen 5; slower than fp32 on Intel CPUs without AMX)."""
    if cfg.train.mixed_precision != "auto":
        return cfg.train.mixed_precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_bf16_speedup() >= 1.2 else "no"


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of a transformer feed-forward block (forward + backward) on this CPU.
    Measured rather than inferred from CPU flags: CPUs that list avx512_bf16 differ several-fold in speed.

    Measured once per machine (CPU model, core count, torch's threads, torch version) and kept in ~/.cache/strop
    ($STROP_CACHE where set), so that two runs of one config decide alike even when the machine is busy during
    one of them; the interleaved, best-of-seven timing resists a load that comes and goes."""
    key = _machine_key()
    cached = _read_precision_cache().get(key)
    if cached is not None:
        return cached
    with torch.random.fork_rng():  # leave the global RNG as the run's seed set it
        up, down = torch.nn.Linear(384, 1536), torch.nn.Linear(1536, 384)
        x = torch.randn(16, 32, 384)  # (batch, seq, hidden)

    def timed(bf16: bool) -> float:
        started = time.perf_counter()
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = down(torch.nn.functional.gelu(up(x)))
            y.float().sum().backward()
        return time.perf_counter() - started

    timed(True), timed(False)  # warm up the kernels
    fp32, bf16 = float("inf"), float("inf")
    for _ in range(7):  # interleaved, so a burst of load slows both alike
        fp32, bf16 = min(fp32, timed(False)), min(bf16, timed(True))
    speedup = round(fp32 / bf16, 3)
    _write_precision_cache(key, speedup)
    return speedup


def _machine_key() -> str:
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    # the threads too: a process held to fewer than the cores (OMP_NUM_THREADS, a test worker) gains otherwise
    return f"{model} | {os.cpu_count()} cores, {torch.get_num_threads()} threads | torch {torch.__version__}"


def _precision_cache_file():
    import os
    from pathlib import Path

    return Path(os.environ.get("STROP_CACHE", Path.home() / ".cache" / "strop")) / "bf16_speedup.json"


def _read_precision_cache() -> dict:
    try:
        return json.loads(_precision_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_precision_cache(key: str, speedup: float) -> None:
    try:
        path = _precision_cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_json({**_read_precision_cache(), key: speedup}, indent=2))
    except Exception:  # a cache that cannot be written only costs the next run a new measurement
        pass


def image_workers(cfg: Config, model, device: torch.device) -> dict:
    """data.workers as DataLoader options: processes that decode and augment the images while the training
    process computes. Forked, so that each sees the backbone's mode (augmenting or not) as its loader starts and
    draws its augmentations from a generator seeded from the run's. auto: none on a CPU, whose cores the
    training's threads already use; on a GPU, which would otherwise wait while one core prepares each batch
    (one EfficientNet-Lite0 run alone on an H200: 238 training images/s), half the cores, at most 8."""
    import multiprocessing

    workers = cfg.data.workers
    if getattr(model.body, "kind", None) != "image" or "fork" not in multiprocessing.get_all_start_methods():
        return {}
    if workers == "auto":
        workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // 2))
    if not workers:
        return {}
    return {"num_workers": workers, "multiprocessing_context": "fork", "pin_memory": device.type == "cuda"}


def train(model, task: Task, method: Method, train_features: list[dict], val_features: list[dict],
          collate, input_keys: tuple[str, ...], cfg: Config, run: RunDir, accelerator: Accelerator,
          on_epoch=None, checkpoint_last_epoch: bool = True) -> tuple[LoopState, dict, tuple[list, list]]:
    """Trains `model` (a TaskModel) in place and leaves the best epoch's weights in it.

    collate: a list of feature dicts -> a padded batch; input_keys: the features the backbone reads.
    on_epoch: called with each epoch's metrics record once it is written and checkpointed (a search's
    pruner); an exception it raises stops the run there, as an interruption would.
    checkpoint_last_epoch: False where the caller saves what it needs of the finished training itself and deletes
    the checkpoint (few-shot's contrastive stage): the last epoch's checkpoint would be written only to be
    deleted. Interrupted before the caller's save, the training resumes from the epoch before, or starts again.

    Returns:
        The final loop state (history of validations, best epoch, steps, training time), the fp32
        validation metrics of the weights left in the model, and their validation (outputs, targets).
    """
    tc = cfg.train
    metric = resolve_metric(cfg, task)
    method.prepare(model)
    bf16 = resolve_precision(cfg, accelerator.device) == "bf16"
    show = not tc.quiet and accelerator.is_main_process
    sampler = BatchSampler([example_length(f) for f in train_features], tc.batch_size, tc.seed, tc.group_by_length,
                           task.example_weights(train_features))
    # Validation in length order: least padding; the order does not change the metrics.
    val_sorted = sorted(val_features, key=example_length)

    # What each step runs: the whole model, or only its head on cached outputs of a frozen body.
    split = _usable(method.frozen_split(model), model, val_sorted or train_features, collate, accelerator.device, show)
    trained, cache_seconds = model, 0.0
    if split is None:
        workers = image_workers(cfg, model, accelerator.device)
        train_loader = DataLoader(train_features, batch_sampler=sampler, collate_fn=collate, **workers)
        val_loader = DataLoader(val_sorted, batch_size=tc.eval_batch_size, collate_fn=collate, **workers)
    else:
        train_loader, val_loader, cache_seconds = _cached_loaders(split, model, train_features, val_sorted, sampler,
                                                                  collate, input_keys, tc, accelerator.device, bf16,
                                                                  show)
        trained = split.head

    # The optimizer steps each process takes: Accelerate deals the batches out among the processes.
    steps_per_epoch = math.ceil(math.ceil(len(sampler) / accelerator.num_processes) / tc.grad_accum)
    if cfg.optim.lr == "find":
        peak_lr = _found_lr(model, task, method, train_features, collate, cfg, run, accelerator, show)
    else:
        trained_ids = {id(p) for p in trained.parameters() if p.requires_grad}
        all_new = method.body_rate and bool(trained_ids) and trained_ids <= model.new_parameters  # a new MLP
        peak_lr = _peak_lr(cfg, len(sampler), accelerator.num_processes, method.body_rate, show,
                           getattr(model.body, "convolutional", False), all_new)
    layer_rates = (layer_rate_multiples(model.body.layers(), cfg.optim.layer_decay)
                   if split is None or split.keeps_inputs else {})  # the layers above a cached bottom too
    optimizer = build_optimizer(trained, cfg.optim, peak_lr,
                                faster_parameters(trained, model.new_parameters, method.body_rate), layer_rates)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch * tc.epochs, steps_per_epoch)
    trained, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        trained, optimizer, train_loader, val_loader, scheduler)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]  # clipping skips those without gradients
    mixing = mixing_for(cfg, model, task, method.caches_inputs)  # data.mixup, data.cutmix

    # Under a frozen split, what is frozen stays so for the whole run (the cache depends on it): checkpoints and
    # the best epoch's copy leave those weights out, as every build of the model has them.
    fixed = never_trained(accelerator.unwrap_model(trained)) if split is not None else frozenset()
    state, best_weights, best_validation, best_in_fp32 = LoopState(), None, None, False
    # train.ema_decay: validated, kept and saved are the weights' moving average, not the last step's weights.
    average = WeightAverage(tc.ema_decay) if tc.ema_decay else None
    if tc.resume and has_checkpoint(run.last_checkpoint):
        state, best_weights = load_checkpoint(run.last_checkpoint, accelerator.unwrap_model(trained), optimizer,
                                              scheduler, fixed, average, accelerator.process_index,
                                              accelerator.num_processes)
    if tc.resume and accelerator.is_main_process:
        # Also with no checkpoint: a run killed after its first metrics line but before its first checkpoint
        # starts again from scratch, and that line must go.
        _rewrite_metrics(run, state.history)
    state.train_seconds += cache_seconds  # the one pass of a frozen body is part of training
    validation_seconds: list[float] = []  # this session's validations, for the epoch lines' time left
    state.peak_lr = peak_lr
    trackers.start(accelerator, cfg)  # train.trackers: TensorBoard, MLflow

    try:
        for epoch in range(state.epoch, tc.epochs):
            if state.stopped_early:
                break
            # Accelerate's loader counts its own epochs from 0 in each process and passes that count to the
            # sampler when iteration starts; a resumed run must continue from `epoch`, so set both.
            train_loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            method.start_epoch(model, epoch)
            method.train_mode(model)  # sets the modes of the head's modules too: they are the model's
            if average is not None:
                average.track(accelerator.unwrap_model(trained))  # gradual unfreezing: layers that train from now
            started, samples, tokens, loss_sum, skipped = time.perf_counter(), 0, 0, 0.0, 0
            bar = progress(train_loader, f"{_stage(task)}epoch {epoch + 1}/{tc.epochs}", show)
            for batch in bar:
                with accelerator.accumulate(trained):
                    labels, num_tokens = batch.pop("labels"), _token_count(batch)
                    partner, lam = mixing.mix(batch) if mixing is not None else (None, 1.0)
                    with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
                        logits = trained(**batch)  # (batch, outputs), or (batch, seq, outputs) for token tasks
                    loss = mixed_loss(task, logits, labels, partner, lam)  # in fp32
                    if cfg.optim.l1:
                        loss = loss + l1_penalty(optimizer, cfg.optim.l1)
                    if not _finite_everywhere(loss, accelerator):
                        if tc.nonfinite == "stop":
                            raise _diverged(loss, state, epoch, scheduler, run,
                                            getattr(task, "lr_setting", "optim.lr"))
                        skipped += 1
                        optimizer.zero_grad(set_to_none=True)
                        continue
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:  # the schedule counts optimizer steps (see make_accelerator)
                        scheduler.step()
                        if average is not None:
                            average.update(accelerator.unwrap_model(trained), state.step + 1)  # counted below
                    optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    state.step += 1
                samples += len(labels)
                tokens += num_tokens
                loss_sum += loss.item() * len(labels)
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)  # drawn at the bar's own pace
            train_seconds = time.perf_counter() - started
            state.train_seconds += train_seconds
            samples, tokens, loss_sum = _summed_over_processes(accelerator, samples, tokens, loss_sum)

            # The last planned epoch validates in fp32, the precision of the final validation: where it is the
            # best epoch (always in a run of one epoch), its numbers are the final ones, not measured twice.
            in_fp32 = not bf16 or epoch + 1 == tc.epochs
            validation_started = time.perf_counter()
            with _validated_weights(average, accelerator.unwrap_model(trained)):
                metrics, scored = evaluate(trained, val_loader, task, accelerator, bf16=not in_fp32, show=show,
                                           desc=f"{_stage(task)}epoch {epoch + 1}/{tc.epochs}, validating")
            validation_seconds.append(time.perf_counter() - validation_started)
            record = {"epoch": epoch + 1, "step": state.step, "train_loss": loss_sum / max(samples, 1),
                      **{f"val_{name}": metrics[name] for name in task.metric_names},
                      "lr": scheduler.get_last_lr()[0], "epoch_seconds": round(train_seconds, 3),
                      "train_samples_per_s": round(samples / train_seconds, 2),
                      "train_tokens_per_s": round(tokens / train_seconds, 1),
                      "time": round(state.train_seconds, 3), **({"skipped_batches": skipped} if skipped else {})}
            improved = task.is_better(metric, metrics[metric], state.best_score)
            if improved:
                state.best_score, state.best_epoch, state.epochs_without_improvement = metrics[metric], epoch + 1, 0
                best_validation, best_in_fp32 = (metrics, scored), in_fp32
                # The current weights are the best, copied below only when they move on; an average's are copied now.
                best_weights = None
                if average is not None:
                    with average.swapped_in(accelerator.unwrap_model(trained)) as averaged:
                        best_weights = cpu_state(averaged, fixed)
            else:
                state.epochs_without_improvement += 1
            record["best"] = improved
            state.history.append(record)
            state.epoch = epoch + 1
            # early only where epochs were left to run: after the last one the run simply ends
            state.stopped_early = (tc.patience > 0 and state.epochs_without_improvement >= tc.patience
                                   and state.epoch < tc.epochs)
            last_epoch = state.epoch == tc.epochs or state.stopped_early
            if accelerator.is_main_process:
                with reporting_write_errors(run.metrics, "the metrics"), run.metrics.open("a", encoding="utf-8") as f:
                    f.write(to_json(record) + "\n")
            if checkpoint_last_epoch or not last_epoch:
                # every process's generators, for each to resume from its own (gathered by all of them)
                process_rngs = gather_object([rng_states()]) if accelerator.num_processes > 1 else None
                if accelerator.is_main_process:
                    save_checkpoint(run.last_checkpoint, accelerator.unwrap_model(trained), optimizer, scheduler,
                                    state, best_weights, fixed, average, process_rngs)
            accelerator.wait_for_everyone()
            if improved and best_weights is None:
                best_weights = cpu_state(accelerator.unwrap_model(trained), fixed)
            trackers.log_epoch(accelerator, cfg, record)
            if show:
                _print_epoch(record, tc, state, task, metric, sum(validation_seconds) / len(validation_seconds))
            if on_epoch is not None:
                on_epoch(record)
    except BaseException:  # a failure, Ctrl-C or a pruned trial: the trackers' run is closed as failed
        trackers.end(accelerator, cfg, failed=True)
        raise

    if best_weights is not None:
        load_weights(accelerator.unwrap_model(trained), best_weights, fixed)
    # The numbers to quote are those of the whole model as saved, in the precision it is served in; a validation
    # in fp32 of the whole model's best epoch already measured them, unless that epoch came before a resume. With
    # a frozen split, `trained` is the layers above it: they run in fp32 on the fp32 cache of the frozen ones,
    # which is what the whole model computes (the split's check holds it exact).
    if not best_in_fp32 or split is not None or best_validation is None:
        best_validation = evaluate(trained, val_loader, task, accelerator, show=show,
                                   desc=f"{_stage(task)}validating the best epoch in fp32")
    final, scored = best_validation
    trackers.end(accelerator, cfg)
    return state, final, scored


def _validated_weights(average: WeightAverage | None, model):
    """Where the model's weights are validated: in their moving average (train.ema_decay), or as they are."""
    return average.swapped_in(model) if average is not None else contextlib.nullcontext(model)


def _diverged(loss: torch.Tensor, state: LoopState, epoch: int, scheduler, run: RunDir,
              lr_setting: str = "optim.lr") -> StropError:
    """The message for a loss that became NaN or infinite: where, the likely cause, what is kept. lr_setting:
    the key that sets this training's learning rate (a task's `lr_setting`: few-shot's stage trains at its own)."""
    kept = (f"the checkpoint of epoch {state.epoch} is kept in {run.last_checkpoint}" if state.epoch
            else "no epoch was complete, so no run is kept")
    return StropError(f"the training loss became {loss.item()} at step {state.step + 1} (epoch {epoch + 1}, "
                      f"learning rate {scheduler.get_last_lr()[0]:.3g}): the learning rate is probably too high for "
                      f"this model, or the data hold extreme values; {kept}. Lower {lr_setting} and start a new run, "
                      "or set train.nonfinite=skip to skip such batches")


def resolve_metric(cfg: Config, task: Task) -> str:
    """train.metric made concrete: `auto` is the task's lead metric.

    Raises:
        StropError: the metric is not one the task computes.
    """
    if cfg.train.metric == "auto":
        return task.lead_metric
    if cfg.train.metric not in task.metric_names:
        raise StropError(f"train.metric={cfg.train.metric} is not a metric of {task.name}; choose one of "
                         f"{', '.join(task.metric_names)}, or auto ({task.lead_metric})")
    return cfg.train.metric


@torch.no_grad()
def evaluate(model, loader, task: Task, accelerator: Accelerator, bf16: bool = False, show: bool = False,
             desc: str = "validating") -> tuple[dict, tuple[list, list]]:
    """Validation metrics over the whole loader (outputs gathered from every process), and the (outputs,
    targets) they were computed from; progress under `desc` where `show`."""
    model.eval()
    outputs, targets = [], []
    for batch in progress(loader, desc, show):
        labels = batch.pop("labels")
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch)
        batch["labels"] = labels
        pairs = list(zip(task.outputs(logits, batch), task.targets(batch)))  # one per example
        for output, target in accelerator.gather_for_metrics(pairs, use_gather_object=True):
            outputs.append(output)
            targets.append(target)
    return task.metrics(outputs, targets), (outputs, targets)


def _usable(split, model, examples: list[dict], collate, device: torch.device, show: bool):
    """The method's frozen split, where its check (if it has one) finds it exact on a batch of real examples;
    else None, said: the run then trains without the cache."""
    if split is None or split.check is None:
        return split
    model.to(device)
    batch = {k: v.to(device) for k, v in collate(examples[:8]).items() if k != "labels"}
    if split.check(batch):
        return split
    if show:
        tqdm.write("the frozen bottom layers are not cached: this model's layers are not a plain stack (running on "
                   "their cached output differs from the model's own output), so every step runs them")
    return None


def _cached_loaders(split, model, train_features: list[dict], val_sorted: list[dict], sampler: BatchSampler,
                    collate, input_keys, tc, device: torch.device, bf16: bool,
                    show: bool) -> tuple[DataLoader, DataLoader, float]:
    """Runs the frozen body once over train and validation; loaders of its outputs, and the seconds it took.
    The training loader keeps the sampler, so batches come in the order they would without the cache."""
    started = time.perf_counter()
    model.to(device)
    cache = partial(cache_body_outputs, split, model, input_keys=input_keys, collate=collate,
                    batch_size=tc.eval_batch_size, device=device, show=show)
    train_loader = DataLoader(cache(train_features, bf16=bf16), batch_sampler=sampler, collate_fn=collate)
    # Validation's cache in fp32, in the whole model's batches: the final validation then runs only the layers
    # above it, and scores what the saved model computes in fp32 (exact, by the split's check), at a fraction
    # of the cost of running the whole model again.
    val_loader = DataLoader(cache(val_sorted, bf16=False), batch_size=tc.eval_batch_size, collate_fn=collate)
    seconds = time.perf_counter() - started
    if show:
        frozen, rest = (("frozen bottom layers", "the layers above on their cached output") if split.keeps_inputs
                        else ("frozen body", "the head on its cached outputs"))
        tqdm.write(f"{frozen} run once over {len(train_features)} + {len(val_sorted)} examples ({seconds:.1f}s); "
                   f"each epoch trains {rest}")
    return train_loader, val_loader, seconds


def _peak_lr(cfg: Config, num_batches: int, num_processes: int, body_rate: bool, show: bool,
             convolutional: bool = False, all_new: bool = False) -> float:
    """optim.lr for this run, resolved from the optimizer steps each process takes (Accelerate deals the
    batches out among the processes); said when `auto` chose other than 5e-5.

    Where the body is frozen, what trains is the new head alone (or with adapters or biases: `Method.body_rate`
    false), and `auto` gives it the rate a new head has beside a training body (optim.head_lr_scale times the body's): at 5e-5 a linear head on frozen features
    barely moves (TREC, 8 examples per class, frozen bundled model, 5 epochs: accuracy 0.17, chance level)."""
    total_steps = optimizer_steps(num_batches, cfg, num_processes)
    convolutional = convolutional and body_rate  # a frozen body's head trains at the head's rate, as below
    peak_lr = resolve_lr(cfg.optim.lr, total_steps, convolutional)
    if cfg.optim.lr == "auto" and (not body_rate or all_new):  # every parameter new (a new MLP): a head's rate
        peak_lr *= cfg.optim.head_lr_scale
    if show and cfg.optim.lr == "auto" and peak_lr != AUTO_LR:
        why = ([f"{total_steps} optimizer steps in all, fewer than {AUTO_LR_STEPS}"]
               if total_steps < AUTO_LR_STEPS and not convolutional else [])
        why += ["a convolutional body trains at a CNN's rate"] if convolutional else []
        why += [] if body_rate else [f"what trains (a head, adapters or biases) trains at the head's rate: "
                                     f"{cfg.optim.head_lr_scale:g}x"]
        why += [f"every parameter is new, so all train at the new head's rate: {cfg.optim.head_lr_scale:g}x"
                ] if all_new else []
        tqdm.write(f"learning rate {peak_lr:.1e} (auto: {'; '.join(why)}; set optim.lr to choose it)")
    return peak_lr


def _found_lr(model, task: Task, method: Method, train_features: list[dict], collate, cfg: Config, run: RunDir,
              accelerator: Accelerator, show: bool) -> float:
    """optim.lr=find: the range test's suggestion (its curve saved in the run as lr_find.json and .png); a
    resumed run keeps the rate it found when it started."""
    from strop.train.lr_find import range_test, save_curve

    if cfg.train.resume and has_checkpoint(run.last_checkpoint):
        return json.loads((run.last_checkpoint / "state.json").read_text(encoding="utf-8"))["peak_lr"]
    result = range_test(model, task, method, train_features, collate, cfg, accelerator.device, show=show)
    if accelerator.is_main_process:
        save_curve(result, run.root)
    method.prepare(model)  # as the run needs it, after the test
    if show:
        tqdm.write(f"learning rate {result['suggestion']:.2e} (found: {result['why']}; the curve is in "
                   f"{run.root / 'lr_find.png'})")
    return result["suggestion"]


def _finite_everywhere(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    """Whether the loss is finite in every process: all of them stop, or skip the step, together (one process
    leaving the others would hang them in their next collective)."""
    finite = torch.isfinite(loss.detach())
    if accelerator.num_processes > 1:
        finite = accelerator.reduce(finite.float().reshape(1), "sum").item() == accelerator.num_processes
    return bool(finite)


def _summed_over_processes(accelerator: Accelerator, samples: int, tokens: int, loss_sum: float
                           ) -> tuple[int, int, float]:
    """An epoch's examples, tokens and summed loss over all processes (each process saw its share)."""
    if accelerator.num_processes == 1:
        return samples, tokens, loss_sum
    totals = accelerator.reduce(torch.tensor([samples, tokens, loss_sum], dtype=torch.float64,
                                             device=accelerator.device), "sum").tolist()
    return int(totals[0]), int(totals[1]), totals[2]


def _token_count(batch: dict) -> int:
    """Real tokens in a batch (examples, for vectors); cached batches carry their token counts."""
    num_tokens = batch.pop("num_tokens", None)
    if num_tokens is None:
        num_tokens = batch.get("attention_mask")
    if num_tokens is None:
        return len(next(iter(batch.values())))
    return int(num_tokens.sum())


def _rewrite_metrics(run: RunDir, history: list[dict]) -> None:
    """On resume, metrics.jsonl holds exactly the validations the checkpoint knows of."""
    atomic_write_text(run.metrics, "".join(to_json(r) + "\n" for r in history), "the metrics")


def _stage(task: Task) -> str:
    """`contrastive stage, ` before a stage's epochs (few-shot's first), so that they read apart from the run's."""
    return f"{task.stage}, " if task.stage else ""


def _print_epoch(record: dict, tc, state: LoopState, task: Task, metric: str, validation_seconds: float = 0.0) -> None:
    # The epochs' own step loops and their validation (validation_seconds: a validation's mean time):
    # state.train_seconds also holds one-off work (a frozen body's single pass), which the remaining epochs do not
    # repeat.
    per_epoch = sum(r["epoch_seconds"] for r in state.history) / max(len(state.history), 1) + validation_seconds
    remaining = 0 if state.stopped_early else (tc.epochs - record["epoch"]) * per_epoch
    scores = "  ".join(f"{name} {score_text(record[f'val_{name}'])}" for name in task.metric_names if name != "loss")
    line = (f"{_stage(task)}epoch {record['epoch']}/{tc.epochs}  train_loss {score_text(record['train_loss'])}  "
            f"val_loss {score_text(record['val_loss'])}  {scores}  {record['epoch_seconds']:.1f}s "
            f"({record['train_samples_per_s']:.0f} {task.label_unit}/s)  ETA {remaining:.0f}s"
            + ("  *best*" if record["best"] else ""))
    if state.stopped_early:
        line += f"\nstopping early: {metric} has not improved for {tc.patience} epochs"
    tqdm.write(line)

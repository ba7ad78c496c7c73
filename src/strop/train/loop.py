"""The one training loop: setup, epochs of steps, validation, early stopping, checkpoints.

Built on Accelerate, so the same loop runs on CPU, one GPU, or many processes under `accelerate launch`
(device placement, mixed precision, gradient accumulation, gathering of predictions).
"""

from __future__ import annotations

import functools
import json
import math
import time
from functools import partial

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from strop.config import Config
from strop.methods import Method
from strop.runs import RunDir, atomic_write_text, reporting_write_errors
from strop.tasks.text_classification import TextClassification, collate
from strop.train.cache import cache_body_outputs, collate_cached
from strop.train.checkpoint import LoopState, cpu_state, has_checkpoint, load_checkpoint, save_checkpoint
from strop.train.optim import (AUTO_LR, AUTO_LR_STEPS, build_optimizer, build_scheduler, head_parameters,
                               resolve_lr)
from strop.train.sampler import BatchSampler


def make_accelerator(cfg: Config) -> Accelerator:
    # Mixed precision is applied by the loop itself (see `resolve_precision`): to training steps and the
    # per-epoch validations, but not to the final validation of the weights it keeps, which runs in fp32
    # like `strop evaluate`, `strop predict` and plain transformers do.
    return Accelerator(cpu=cfg.train.device == "cpu", gradient_accumulation_steps=cfg.train.grad_accum)


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
    Measured rather than inferred from CPU flags: CPUs that list avx512_bf16 differ several-fold in speed."""
    with torch.random.fork_rng():  # leave the global RNG as the run's seed set it
        up, down = torch.nn.Linear(384, 1536), torch.nn.Linear(1536, 384)
        x = torch.randn(16, 32, 384)  # (batch, seq, hidden)

    def timed(bf16: bool) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(5):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = down(torch.nn.functional.gelu(up(x)))
                y.float().sum().backward()
            best = min(best, time.perf_counter() - started)
        return best

    timed(True)  # warm up the kernels
    return timed(False) / timed(True)


def train(model, task: TextClassification, method: Method, train_features: list[dict], val_features: list[dict],
          pad_token_id: int, cfg: Config, run: RunDir, accelerator: Accelerator) -> tuple[LoopState, dict]:
    """Trains `model` in place and leaves the best epoch's weights in it.

    Returns:
        The final loop state (history of validations, best epoch, steps, training time), and the fp32
        validation accuracy, macro_f1 and loss of the weights left in the model.
    """
    tc = cfg.train
    method.prepare(model)
    bf16 = resolve_precision(cfg, accelerator.device) == "bf16"
    show = not tc.quiet and accelerator.is_main_process
    token_collate = partial(collate, pad_token_id=pad_token_id)
    sampler = BatchSampler([len(f["input_ids"]) for f in train_features], tc.batch_size, tc.seed,
                           tc.group_by_length)
    # Validation in length order: least padding; the order does not change the metrics.
    val_sorted = sorted(val_features, key=lambda f: len(f["input_ids"]))
    model_val_loader = DataLoader(val_sorted, batch_size=tc.eval_batch_size, collate_fn=token_collate)

    # What each step runs: the whole model, or only its head on cached outputs of a frozen body.
    split = method.frozen_split(model)
    trained, cache_seconds = model, 0.0
    if split is None:
        train_loader = DataLoader(train_features, batch_sampler=sampler, collate_fn=token_collate)
        val_loader = model_val_loader
    else:
        train_loader, val_loader, cache_seconds = _cached_loaders(split, model, train_features, val_sorted, sampler,
                                                                  token_collate, tc, accelerator.device, bf16, show)
        trained = split.head
        model_val_loader = accelerator.prepare(model_val_loader)  # for the final validation of the whole model

    steps_per_epoch = math.ceil(len(sampler) / tc.grad_accum)
    peak_lr = _peak_lr(cfg, len(sampler), accelerator.num_processes, show)
    optimizer = build_optimizer(trained, cfg.optim, peak_lr, head_parameters(model) if method.trains_body else set())
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch * tc.epochs)
    trained, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        trained, optimizer, train_loader, val_loader, scheduler)
    if split is None:
        model_val_loader = val_loader
    trainable = [p for p in trained.parameters() if p.requires_grad]

    state, best_weights = LoopState(), None
    if tc.resume and has_checkpoint(run.last_checkpoint):
        state, best_weights = load_checkpoint(run.last_checkpoint, accelerator.unwrap_model(trained), optimizer,
                                              scheduler)
        _rewrite_metrics(run, state.history)
    state.train_seconds += cache_seconds  # the one pass of a frozen body is part of training
    state.peak_lr = peak_lr
    higher_is_better = tc.metric != "loss"

    for epoch in range(state.epoch, tc.epochs):
        if state.stopped_early:
            break
        # Accelerate's loader counts its own epochs from 0 in each process and passes that count to the
        # sampler when iteration starts; a resumed run must continue from `epoch`, so set both.
        train_loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        method.train_mode(model)  # sets the modes of the head's modules too: they are the model's
        started, samples, tokens, loss_sum = time.perf_counter(), 0, 0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not show, leave=False,
                   unit="batch", dynamic_ncols=True)
        for batch in bar:
            with accelerator.accumulate(trained):
                inputs, labels, num_tokens = _unpack(batch)
                with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = trained(**inputs).logits  # (batch, num_logits)
                loss = task.loss(logits, labels)  # in fp32
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                state.step += 1
            samples += len(labels)
            tokens += num_tokens
            loss_sum += loss.item() * len(labels)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_seconds = time.perf_counter() - started
        state.train_seconds += train_seconds

        metrics = evaluate(trained, val_loader, task, accelerator, bf16)
        record = {
            "epoch": epoch + 1, "step": state.step, "train_loss": loss_sum / max(samples, 1),
            "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"],
            "lr": scheduler.get_last_lr()[0], "epoch_seconds": round(train_seconds, 3),
            "train_samples_per_s": round(samples * accelerator.num_processes / train_seconds, 2),
            "train_tokens_per_s": round(tokens * accelerator.num_processes / train_seconds, 1),
            "time": round(state.train_seconds, 3),
        }
        score = metrics[tc.metric]
        improved = state.best_score is None or (score > state.best_score if higher_is_better else score < state.best_score)
        if improved:
            state.best_score, state.best_epoch, state.epochs_without_improvement = score, epoch + 1, 0
            best_weights = None  # the current weights are the best; copied below only when they move on
        else:
            state.epochs_without_improvement += 1
        record["best"] = improved
        state.history.append(record)
        state.epoch = epoch + 1
        state.stopped_early = tc.patience > 0 and state.epochs_without_improvement >= tc.patience
        if accelerator.is_main_process:
            with reporting_write_errors(run.metrics, "the metrics"), run.metrics.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(run.last_checkpoint, accelerator.unwrap_model(trained), optimizer, scheduler, state,
                            best_weights)
        accelerator.wait_for_everyone()
        if improved:
            best_weights = cpu_state(accelerator.unwrap_model(trained))
        if show:
            _print_epoch(record, tc, state)

    if best_weights is not None:
        accelerator.unwrap_model(trained).load_state_dict(best_weights)
    # The numbers to quote are those of the whole model as saved, in the precision it is served in; an fp32
    # run of the whole model already validated it so.
    if bf16 or split is not None:
        final = evaluate(model, model_val_loader, task, accelerator)
    else:
        best = state.history[state.best_epoch - 1]
        final = {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"], "loss": best["val_loss"]}
    return state, {key: final[key] for key in ("accuracy", "macro_f1", "loss")}


@torch.no_grad()
def evaluate(model, loader, task: TextClassification, accelerator: Accelerator, bf16: bool = False) -> dict:
    """Validation metrics over the whole loader (predictions gathered from every process)."""
    model.eval()
    probabilities, targets = [], []
    for batch in loader:
        labels = batch.pop("labels")
        batch.pop("num_tokens", None)  # carried by cached batches for the training throughput only
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits
        probs = task.probabilities(logits.float())  # (batch, num_classes)
        probs, labels = accelerator.gather_for_metrics((probs, labels))
        probabilities.append(probs.cpu().numpy())
        targets.append(labels.cpu().numpy())
    return task.metrics(np.concatenate(probabilities), np.concatenate(targets))


def _cached_loaders(split, model, train_features: list[dict], val_sorted: list[dict], sampler: BatchSampler,
                    token_collate, tc, device: torch.device, bf16: bool,
                    show: bool) -> tuple[DataLoader, DataLoader, float]:
    """Runs the frozen body once over train and validation; loaders of its outputs, and the seconds it took.
    The training loader keeps the sampler, so batches come in the order they would without the cache."""
    started = time.perf_counter()
    model.to(device)
    cache = partial(cache_body_outputs, split, model, collate=token_collate, batch_size=tc.eval_batch_size,
                    device=device, bf16=bf16, show=show)
    train_loader = DataLoader(cache(train_features), batch_sampler=sampler, collate_fn=collate_cached)
    val_loader = DataLoader(cache(val_sorted), batch_size=tc.eval_batch_size, collate_fn=collate_cached)
    seconds = time.perf_counter() - started
    if show:
        tqdm.write(f"frozen body run once over {len(train_features)} + {len(val_sorted)} texts ({seconds:.1f}s); "
                   "each epoch trains the head on its cached outputs")
    return train_loader, val_loader, seconds


def _peak_lr(cfg: Config, num_batches: int, num_processes: int, show: bool) -> float:
    """optim.lr for this run, resolved from the optimizer steps each process takes (Accelerate deals the
    batches out among the processes); said when `auto` raised it."""
    total_steps = math.ceil(num_batches / (cfg.train.grad_accum * num_processes)) * cfg.train.epochs
    peak_lr = resolve_lr(cfg.optim.lr, total_steps)
    if show and cfg.optim.lr == "auto" and peak_lr != AUTO_LR:
        tqdm.write(f"learning rate {peak_lr:.1e} (auto: {total_steps} optimizer steps in all, fewer than "
                   f"{AUTO_LR_STEPS}; set optim.lr to choose it)")
    return peak_lr


def _unpack(batch: dict) -> tuple[dict, torch.Tensor, int]:
    """(model inputs, labels, number of real tokens) of a batch; cached batches carry their token counts."""
    labels = batch.pop("labels")
    num_tokens = batch.pop("num_tokens", None)
    if num_tokens is None:
        num_tokens = batch["attention_mask"]
    return batch, labels, int(num_tokens.sum())


def _rewrite_metrics(run: RunDir, history: list[dict]) -> None:
    """On resume, metrics.jsonl holds exactly the validations the checkpoint knows of."""
    atomic_write_text(run.metrics, "".join(json.dumps(r) + "\n" for r in history), "the metrics")


def _print_epoch(record: dict, tc, state: LoopState) -> None:
    per_epoch = state.train_seconds / max(len(state.history), 1)
    remaining = 0 if state.stopped_early else (tc.epochs - record["epoch"]) * per_epoch
    line = (f"epoch {record['epoch']}/{tc.epochs}  train_loss {record['train_loss']:.4f}  "
            f"val_loss {record['val_loss']:.4f}  accuracy {record['val_accuracy']:.4f}  "
            f"macro_f1 {record['val_macro_f1']:.4f}  {record['epoch_seconds']:.1f}s "
            f"({record['train_samples_per_s']:.0f} samples/s)  ETA {remaining:.0f}s"
            + ("  *best*" if record["best"] else ""))
    if state.stopped_early:
        line += f"\nstopping early: {tc.metric} has not improved for {tc.patience} epochs"
    tqdm.write(line)

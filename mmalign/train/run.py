"""``mmalign train``: one loop for every modality and every objective, on accelerate.

Read it top to bottom: build, (precompute), loop, export. It never branches on a modality's
or an objective's name; what differs is declared by the modality (``supported_needs``,
``policy_dependent_draw``, ``lora_target_modules``) and by the objectives (``needs``,
``reference``, ``make_state``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmalign import config as config_mod
from mmalign.data import checks
from mmalign.data.split import hold_out
from mmalign.errors import ConfigError
from mmalign.modality import check_needs, check_protocol
from mmalign.objectives.compose import compose
from mmalign.objectives.spec import Context, requested_needs
from mmalign.registry import modalities
from mmalign.train import adapters, checkpoint, first_step, guard, precompute, rundir, weights
from mmalign.train.card import model_card
from mmalign.train.logs import Averager, MetricsLog, flat_config, postfix, progress, trackers
from mmalign.train.models import (check_precision, enable_gradient_checkpointing, load_policy, model_spec,
                                  place_reference)
from mmalign.train.optim import make_optimizer, make_scheduler, trainable_parameters
from mmalign.train.order import Order, sort_rows
from mmalign.train.reference import Reference, frozen_copy, make_reference, soft_update
from mmalign.train.scorer import PolicyScorer

log = logging.getLogger("mmalign")


@dataclass
class Session:
    """Everything a run holds, so tests can reach inside after ``train`` returns."""

    recipe: config_mod.Recipe
    run_dir: Path
    modality: Any
    policy: nn.Module
    scorer: nn.Module  # PolicyScorer(modality, policy): what accelerate prepares
    reference: Reference
    objective: Any
    objective_state: nn.Module | None
    needs: frozenset[str]
    train_records: list[dict]
    eval_records: list[dict]
    accelerator: Any = None
    lock: Any = None  # rundir.RunLock of the main process, released when the run ends
    data_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    last_fault: str = ""  # the guard's line for the last non-finite step
    history: list[dict] = field(default_factory=list)
    step: int = 0
    strategy: str = "none"  # the reference strategy resolved from the recipe
    first_checked: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # "precompute", "train_loop"
    #: what the optimiser steps and the clipping measures, listed once when the loop starts
    trainable: list[nn.Parameter] = field(default_factory=list)
    #: id(scorer) -> (scorer, the policy inside it), so a step does not unwrap it again
    inner: dict[int, tuple[nn.Module, nn.Module]] = field(default_factory=dict)


def build_modality(recipe: config_mod.Recipe):
    """The modality, built from ``model.options`` (checked by its pydantic ``Options`` first,
    when it has one)."""
    cls = modalities.get(recipe.model.modality)
    options = dict(recipe.model.options)
    schema = getattr(cls, "Options", None)
    if schema is not None:
        options = config_mod.validate_options(schema, options, recipe.model.modality)
    try:
        modality = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"model.options for modality '{recipe.model.modality}': {exc}") from None
    check_protocol(modality, recipe.model.modality)
    return modality


def build(recipe: config_mod.Recipe, *, overwrite: bool = False, accelerator=None) -> Session:
    """Everything a run needs, every check first: the recipe's names and needs, precision,
    the run folder's lock, every data row, then the model."""
    from accelerate import Accelerator

    run_dir = Path(recipe.logging.output_dir)
    objective = compose([(t.name, t.weight, t.params) for t in recipe.objective])
    modality = build_modality(recipe)
    check_needs(modality, objective.needs, recipe.model.modality)
    strategy = resolve_strategy(recipe, objective)
    if strategy == "precomputed":
        precompute.check_storable(objective.needs, getattr(modality, "policy_dependent_draw", False), objective)

    cpu = recipe.train.cpu or not torch.cuda.is_available()
    check_precision(recipe, cpu)
    if accelerator is None:
        # accelerate keeps one precision per process; a second run in the same process (a
        # notebook, a sweep) may ask for another. The process group (PartialState) stays.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = accelerator or Accelerator(
        gradient_accumulation_steps=recipe.train.grad_accum,
        mixed_precision=recipe.train.mixed_precision,
        cpu=cpu,
        log_with=trackers(recipe.logging) or None,
        project_dir=str(run_dir),
    )
    lock = rundir.RunLock(run_dir) if accelerator.is_main_process else None
    try:
        return _build(recipe, modality, objective, strategy, accelerator, lock, overwrite)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build(recipe, modality, objective, strategy, accelerator, lock, overwrite) -> Session:
    from accelerate.utils import set_seed

    run_dir = Path(recipe.logging.output_dir)
    rundir.check_run_dir(run_dir, recipe, overwrite)
    if recipe.train.resume_from:  # a refused resume must leave the run folder as it was
        checkpoint.check_compatible(checkpoint.find(recipe.train.resume_from), recipe.dump())
    # every row is read and checked before the model loads: a bad file costs seconds, not a load
    data = {split: checks.load_checked(modality, path, recipe.data.schema_, recipe.data.on_bad_row)
            for split, path in (("train", recipe.data.train), ("eval", recipe.data.eval)) if path}
    set_seed(recipe.train.seed)
    policy = load_policy(modality, model_spec(recipe))
    if recipe.model.disable_dropout:
        first_step.disable_dropout(policy)
    # and once more with the tokenizer or processor the model brought (prompt lengths)
    data = {split: (checks.check_loaded(modality, records, counts, recipe.data.on_bad_row), counts)
            for split, (records, counts) in data.items()}
    data_counts = {split: counts for split, (_, counts) in data.items()}
    for split, (records, _) in data.items():
        first_step.check_records(records, recipe.model.modality, f"data.{split}")
    train_records, eval_records = hold_out(data["train"][0], recipe.data.eval_fraction, recipe.train.seed)
    train_records = sort_rows(train_records[: recipe.data.limit], recipe.data.order_by, str(recipe.data.train))
    eval_records = data["eval"][0] if "eval" in data else eval_records
    base = frozen_copy(policy) if strategy == "copy" or (
        strategy == "precomputed" and recipe.reference.precompute_with == "copy") else None
    if recipe.model.lora is not None:
        lora = recipe.model.lora
        adapters.add_lora(policy, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                          target_modules=lora.target_modules or _targets(modality.lora_target_modules),
                          adapter_name=lora.adapter_name)
    if recipe.reference.adapter_path:
        adapters.load_named_adapter(policy, recipe.reference.adapter_path)
    if recipe.train.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    live = recipe.reference.precompute_with if strategy == "precomputed" else strategy
    reference = make_reference(live, policy, base=base)
    if recipe.reference.sync is not None and reference.model is None:
        raise ConfigError("reference.sync (TR-DPO) updates a separate reference model; use "
                          "reference.strategy=copy")
    if accelerator.is_main_process:  # every check has passed: the folder becomes this run's
        for leftover in rundir.begin(run_dir, recipe, overwrite, data_counts):
            log.info("removed %s, a checkpoint an earlier run left half-written", leftover)
    accelerator.wait_for_everyone()

    if hasattr(modality, "prepare"):
        cache_dir = run_dir / "cache"  # a modality option may point it elsewhere, to share it
        train_records = modality.prepare(train_records, str(cache_dir))
        eval_records = modality.prepare(eval_records, str(cache_dir)) if eval_records else []

    state = objective.make_state()
    session = Session(recipe=recipe, run_dir=run_dir, modality=modality, policy=policy,
                      scorer=PolicyScorer(modality, policy), reference=reference, objective=objective,
                      objective_state=state, needs=_needs(objective, modality), train_records=train_records,
                      eval_records=eval_records, accelerator=accelerator, lock=lock, data_counts=data_counts,
                      strategy=strategy)
    if strategy == "precomputed":
        order = make_order(session)
        epochs = -(-total_steps(session, order) // order.steps_per_epoch)
        reference.store = precompute.build(session, live, epochs)
        reference.model = None  # the live reference is no longer needed: free its memory
    return session


def _targets(modules) -> str | list[str]:
    """A modality may name LoRA targets as module names or as one regular expression."""
    return modules if isinstance(modules, str) else list(modules)


def resolve_strategy(recipe: config_mod.Recipe, objective) -> str:
    strategy = recipe.reference.strategy
    if strategy != "auto":
        if strategy != "none" and objective.reference == "none":
            log.info("objective needs no reference; reference.strategy %s is ignored", strategy)
            return "none"
        return strategy
    if objective.reference == "none":
        return "none"
    return "adapters_off" if recipe.model.lora is not None else "copy"


def make_order(s: Session) -> Order:
    t = s.recipe.train
    order = Order(len(s.train_records), t.batch_size, t.grad_accum, s.accelerator.num_processes,
                  t.seed, t.shuffle)
    order.check(str(s.recipe.data.train))
    return order


def total_steps(s: Session, order: Order) -> int:
    return s.recipe.train.max_steps or s.recipe.train.epochs * order.steps_per_epoch


def forward(s: Session, scorer: nn.Module, records: list[dict], epoch: int, step: int,
            training: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Surrogates of policy and reference on one micro-batch, then the objective."""
    batch = s.modality.collate(records)
    batch.epoch = epoch
    batch.weight = weights.row_weights(records, s.recipe.data.weight_field, str(s.recipe.data.train))
    if s.accelerator.device.type != "cpu":  # collate makes CPU tensors: moving them there copies nothing
        batch = batch.to(s.accelerator.device)
    draw = s.modality.draw(batch, s.recipe.train.seed, unwrap(s, scorer))
    policy = scorer(batch, draw, s.needs)
    reference = s.reference.surrogate(s.modality, scorer, batch, draw, s.needs, like=policy)
    if training and step == 0 and s.recipe.train.first_step_checks and not s.first_checked:
        s.first_checked = True  # one micro-batch suffices
        first_step.check_gradient(policy, s.recipe.model.modality)
        first_step.check_start_equal(policy, reference, s.recipe.model.modality, s.strategy)
    ctx = Context(state=s.objective_state, fields=batch.fields, training=training, step=step,
                  all_reduce_mean=lambda t: s.accelerator.reduce(t, "mean")
                  if s.accelerator.num_processes > 1 else t)
    out = s.objective(policy, reference, ctx)
    loss = weights.reduce(out.loss, out.weight, batch.weight, s.recipe.data.weight_reduction)
    metrics = {"loss": loss.detach(), **out.metrics}
    if reference is not None:
        metrics["drift/chosen"] = (policy.chosen - reference.chosen).detach().mean()
    return loss, metrics


def unwrap(s: Session, scorer: nn.Module) -> nn.Module:
    """The policy model inside a (possibly DDP / FSDP / DeepSpeed wrapped) scorer; a wrapper
    does not change during a run, so each scorer is unwrapped once."""
    hit = s.inner.get(id(scorer))
    if hit is None or hit[0] is not scorer:
        hit = s.inner[id(scorer)] = (scorer, s.accelerator.unwrap_model(scorer).model)
    return hit[1]


def train(recipe: config_mod.Recipe, *, overwrite: bool = False, accelerator=None) -> Session:
    """Build, (resume), loop, export. The run folder's lock is held until the run ends; a
    non-finite loss or gradient norm, SIGTERM or SIGINT end it with :class:`guard.TrainingStopped`."""
    s = build(recipe, overwrite=overwrite, accelerator=accelerator)
    try:
        with guard.StopSignals() as signals:
            _train(s, signals)
    finally:
        if s.lock is not None:
            s.lock.release()
    return s


def _train(s: Session, signals: guard.StopSignals) -> None:
    acc, t, recipe = s.accelerator, s.recipe.train, s.recipe
    order = make_order(s)
    total = total_steps(s, order)
    optimizer = make_optimizer(trainable_parameters(s.policy, s.objective_state), t.optimizer,
                               t.lr, t.weight_decay)
    scheduler = make_scheduler(optimizer, t.scheduler, t.warmup_steps, total)
    model, optimizer = acc.prepare(s.scorer, optimizer)
    if s.objective_state is not None:
        s.objective_state.to(acc.device)
    s.trainable = trainable_parameters(model, s.objective_state)  # the prepared model's, once
    if s.reference.model is not None:
        s.reference.model = place_reference(acc, s.reference.model)
    metrics_log = MetricsLog(s.run_dir, enabled=acc.is_main_process)
    start = 0
    if t.resume_from:
        ckpt = checkpoint.find(t.resume_from)
        start = checkpoint.load(ckpt, policy=unwrap(s, model), optimizer=optimizer,
                                scheduler=scheduler, objective_state=s.objective_state,
                                reference=s.reference.model if recipe.reference.sync else None)
        metrics_log.truncate_after(start)
        log.info("resumed from %s at step %d", ckpt, start)
    if acc.log_with:
        acc.init_trackers("mmalign", config=flat_config(recipe.dump()))

    if start == 0:
        write_samples(s, model, "before")
    bar = progress(total, start, recipe.logging.progress and acc.is_main_process)
    model.train()
    started = time.perf_counter()
    for step in range(start, total):
        means, applied, stop = train_step(s, model, optimizer, scheduler, order, step, signals)
        s.step = step + 1
        s.history.append({"step": s.step, **means})
        if s.step % recipe.logging.every == 0 or s.step == total or not applied:
            metrics_log.write(s.step, means)
            acc.log(means, step=s.step)
        if stop or (not applied and t.on_nonfinite != "skip"):
            bar.close()
            stopped(s, model, optimizer, scheduler, means, applied, signals.requested)
        if recipe.reference.sync and s.step % recipe.reference.sync.every == 0:
            soft_update(s.reference.model, unwrap(s, model), recipe.reference.sync.alpha)
        bar.set_postfix(postfix(means))
        bar.update(1)
        if recipe.eval.every and s.step % recipe.eval.every == 0:
            if s.eval_records:
                evaluate(s, model, metrics_log)
            write_samples(s, model, f"step-{s.step:07d}")
        if t.save_every and s.step % t.save_every == 0:
            save_checkpoint(s, model, optimizer, scheduler)
    bar.close()
    s.seconds["train_loop"] = time.perf_counter() - started
    finish(s, model, optimizer, scheduler, metrics_log, start)


def train_step(s: Session, model, optimizer, scheduler, order: Order, step: int,
               signals: guard.StopSignals) -> tuple[dict[str, float], bool, bool]:
    """One optimiser step over ``grad_accum`` micro-batches. Returns the metrics (averaged
    over processes), whether the update was applied (everything finite everywhere), and
    whether any process was asked to stop."""
    acc, t = s.accelerator, s.recipe.train
    averager, losses, ids = Averager(), [], []
    for micro in range(t.grad_accum):
        epoch, rows = order.rows(step, micro, acc.process_index)
        records = [s.train_records[i] for i in rows]
        ids += [str(r.get("sample_id")) for r in records]
        sync = acc.no_sync(model) if micro < t.grad_accum - 1 else contextlib.nullcontext()
        with sync, acc.autocast():
            loss, metrics = forward(s, model, records, epoch, step, training=True)
            acc.backward(loss / t.grad_accum)
        losses.append(loss.detach())
        averager.add(metrics)
    # an infinite max norm measures without clipping, so the guard sees the norm either way
    params = s.trainable or trainable_parameters(model, s.objective_state)
    grad_norm = acc.clip_grad_norm_(params, t.max_grad_norm or math.inf)
    if grad_norm is not None and (t.max_grad_norm or not torch.isfinite(grad_norm)):
        averager.add({"grad_norm": grad_norm})
    # under fp16 the grad scaler owns overflowing gradients: it skips that step and lowers
    # its scale, which is routine; the guard then watches the loss alone
    watched = [*losses] if getattr(acc, "scaler", None) is not None else [*losses, grad_norm]
    finite, stop = guard.step_flags(acc, watched, signals.requested is not None)
    if finite or t.on_nonfinite == "skip":
        if finite:
            optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    means = averager.reduced(lambda t: acc.reduce(t, "mean"), acc.device)
    means["lr"] = scheduler.get_last_lr()[0]
    if not finite:
        means["skipped"] = 1.0
        s.last_fault = guard.report(step + 1, ids, guard.nonfinite_values(means), t.on_nonfinite)
    return means, finite, stop


def stopped(s: Session, model, optimizer, scheduler, means: dict[str, float], applied: bool,
            signal_name: str | None) -> None:
    """End a run that must stop: a checkpoint of the last good state when asked for, then
    :class:`guard.TrainingStopped` with how to go on."""
    t = s.recipe.train
    if not applied:
        s.step -= 1  # the bad update was not applied: the state is the previous step's
        ckpt = save_checkpoint(s, model, optimizer, scheduler) if t.on_nonfinite == "checkpoint-and-stop" else None
        raise guard.TrainingStopped(guard.stop_message(s.last_fault, ckpt))
    ckpt = save_checkpoint(s, model, optimizer, scheduler) if t.save_every else None
    raise guard.TrainingStopped(guard.signal_message(signal_name or "a signal", s.step, ckpt, str(s.run_dir)))


def finish(s: Session, model, optimizer, scheduler, metrics_log: MetricsLog, start: int) -> None:
    """Last evaluation and checkpoint, after-training samples, the trained weights, export."""
    recipe, t, acc = s.recipe, s.recipe.train, s.accelerator
    if s.eval_records and recipe.eval.every:
        if not (s.history and s.step % recipe.eval.every == 0):
            evaluate(s, model, metrics_log)
    if t.save_every and s.step % t.save_every:
        save_checkpoint(s, model, optimizer, scheduler)
    s.policy = unwrap(s, model)
    write_samples(s, model, "after")
    acc.wait_for_everyone()
    if acc.is_main_process and s.step > start:
        checkpoint.save_trained(s.run_dir, s.policy)
        export(s)
    acc.end_training()


@torch.no_grad()
def evaluate(s: Session, model: nn.Module, metrics_log: MetricsLog) -> dict[str, float]:
    """Mean objective metrics on held-out pairs (epoch-0 draws, so every eval sees the same)."""
    was_training = model.training
    model.eval()
    size = s.recipe.eval.batch_size or s.recipe.train.batch_size
    averager = Averager()
    for i in range(0, len(s.eval_records), size):
        _, metrics = forward(s, model, s.eval_records[i:i + size], 0, s.step, training=False)
        averager.add(metrics)
    means = {f"eval/{k}": v for k, v in averager.means().items()}
    if was_training:
        model.train()
    metrics_log.write(s.step, means, split="eval")
    s.accelerator.log(means, step=s.step)
    s.history.append({"step": s.step, **means})
    return means


@torch.no_grad()
def write_samples(s: Session, model: nn.Module, tag: str) -> str | None:
    """Validation samples for the same prompts and seed at every call (main process only),
    written by the modality (a PNG grid for image models) to ``samples/<tag>.png``."""
    prompts = s.recipe.eval.prompts
    if not prompts or not hasattr(s.modality, "write_samples") or not s.accelerator.is_main_process:
        return None
    was_training = model.training
    model.eval()
    out = s.modality.write_samples(unwrap(s, model), prompts,
                                   s.recipe.eval.sample_seed, str(s.run_dir / "samples" / f"{tag}.png"))
    if was_training:
        model.train()
    return out


def save_checkpoint(s: Session, model, optimizer, scheduler) -> str:
    """``checkpoints/step-XXXXXXX`` of the state after ``s.step`` steps; returns its path."""
    s.accelerator.wait_for_everyone()
    path = s.run_dir / "checkpoints" / f"step-{s.step:07d}"
    if s.accelerator.is_main_process:
        path = checkpoint.save(s.run_dir, s.step, policy=unwrap(s, model),
                               optimizer=optimizer, scheduler=scheduler, objective_state=s.objective_state,
                               reference=s.reference.model if s.recipe.reference.sync else None,
                               recipe=s.recipe.dump(), keep_last=s.recipe.train.keep_last)
    s.accelerator.wait_for_everyone()
    return str(path)


def export(s: Session) -> list[str]:
    """The trained policy in its ecosystem's format, with a model card."""
    last = {k: v for k, v in (s.history[-1] if s.history else {}).items() if k != "step"}
    card = model_card(s.recipe, rows=len(s.train_records), steps=s.step, last=last)
    return s.modality.export(s.policy, str(s.run_dir / "export"), card)


def _needs(objective, modality) -> frozenset[str]:
    """What the modality is asked for: the objective's needs and those of its optional needs
    the modality supports (``sft`` takes token units where there are tokens)."""
    return requested_needs(objective.needs, objective.optional_needs, modality.supported_needs)

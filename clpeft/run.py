"""One run: stream → model (+ PET) → strategy → accuracy matrix after every experience → results files.

The parts, each in its own place: the run directory's ownership and the skip/resume rule
(:mod:`clpeft.rundir`), building (:func:`build`), the experience loop with its checkpoints
(:class:`History`, :func:`run`), the test-time adaptation comparison (:mod:`clpeft.evaluation.tta`),
parameter counting (:mod:`clpeft.evaluation.cost`) and the results object (:mod:`clpeft.reports.results`).
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clpeft import distributed, rundir
from clpeft.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from clpeft.config import RunConfig
from clpeft.errors import ClpeftError
from clpeft.evaluation.cost import count_parameters, peak_memory_mb, timer
from clpeft.evaluation.evaluate import EvalRow, evaluate_stream
from clpeft.evaluation.metrics import running_metrics, summarize
from clpeft.reports.loggers import RunLoggers
from clpeft.reports.results import RunResult, assess_health, learned_right_after, package_versions, write_results
from clpeft.streams.stream import EVAL_ORDERS, make_stream
from clpeft.strategies.registry import get_strategy
from clpeft.utils.device import resolve_device
from clpeft.utils.memory import release_freed_memory
from clpeft.utils.seed import seed_everything


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: how far it got, so the CLI can say how to continue."""

    def __init__(self, completed: int, out_dir: Path | None):
        super().__init__()
        self.completed, self.out_dir = completed, out_dir


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def device_for_rank(device: torch.device) -> torch.device:
    """Under torchrun with CUDA, each rank uses the GPU of its LOCAL_RANK."""
    if distributed.world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class Built:
    stream: object
    model: torch.nn.Module
    pet: object
    strategy: object
    device: torch.device
    notes: list = field(default_factory=list)  # what the run does differently from what was asked, said once

    def __iter__(self):  # stream, model, pet, strategy, device = build(...)
        return iter((self.stream, self.model, self.pet, self.strategy, self.device))


def build(config: RunConfig, out_dir: Path | None = None, progress: bool = False, plugins=None, evaluator=None,
          stream=None) -> Built:
    """Stream, model, PET controller and strategy for ``config`` (seeded). ``stream``: a prebuilt
    :class:`~clpeft.streams.stream.ContinualStream` (e.g. from an Avalanche benchmark) instead of config.stream."""
    from clpeft.models.continual_model import build_model_from_config
    from clpeft.plugins import import_plugins

    import_plugins(config.imports)
    seed_everything(config.seed)
    device = device_for_rank(resolve_device(config.device))
    strategy_cls = get_strategy(config.strategy)
    if distributed.world_size() > 1 and not strategy_cls.ddp_safe:
        raise ClpeftError(f"strategy {config.strategy} is not DDP-safe (its state is not synchronised across "
                          "processes); run it without torchrun")
    options = strategy_cls.parse_options(config.options)
    if stream is None:
        stream = make_stream(config.stream, seed=config.seed)
    skipped = strategy_cls.check_run(options, config.train, [b - a for a, b in stream.class_ranges])
    notes = [f"experience {i} holds 1 class: a cross-entropy over it is identically 0, so its training is skipped "
             f"and its class is learned with the next experience's" for i in skipped]
    model = build_model_from_config(config.model, stream.num_classes, stream.input_spec)
    pet = None
    if config.pet:
        from clpeft.pet import inject_pet

        pet = inject_pet(model.backbone, config.pet_config())
    strategy = strategy_cls(
        model=model, settings=config.train, device=device, amp=config.amp, pet=pet, plugins=plugins,
        evaluator=evaluator, seed=config.seed,
        in_memory=stream.in_memory, progress=progress, options=options, n_experiences=stream.n_experiences,
    )
    strategy.batch_augment, strategy.batch_eval_transform = stream.batch_train_transform, stream.batch_eval_transform
    if config.train.compile != "off":  # the backbone only: heads grow, and strategies call into the backbone
        model.backbone = compiled(model.backbone, config.train.compile)
    return Built(stream, model, pet, strategy, device, notes)


def compiled(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``torch.compile`` in ``mode``; ``eager`` captures graphs without generating code (a cheap check)."""
    if mode == "eager":
        return torch.compile(module, backend="eager")
    return torch.compile(module, mode=mode)


@dataclass
class History:
    """What the experience loop has produced so far; a checkpoint saves it and a resume restores it."""

    before: dict                                  # accuracy before any training, and test counts
    R: list = field(default_factory=list)         # class-IL rows
    R_task: list = field(default_factory=list)    # task-IL rows
    R_views: dict = field(default_factory=dict)   # view name → rows
    R_routing: list = field(default_factory=list)  # share of each experience's samples routed to it
    train_times: list = field(default_factory=list)
    eval_times: list = field(default_factory=list)
    checkpoint_times: list = field(default_factory=list)

    def add(self, row: EvalRow) -> None:
        self.R.append(row.accuracy)
        self.R_task.append(row.accuracy_task_il)
        for name, accuracy in row.views.items():
            self.R_views.setdefault(name, []).append(accuracy)
        if row.task_inference is not None:
            self.R_routing.append(row.task_inference)

    def state(self) -> dict:
        return dict(vars(self))


def run(config: RunConfig, out_dir: str | Path | None = None, progress: bool = False, plugins=None,
        evaluator=None, after_experience=None, resume: bool = False, stream=None, overwrite: bool = False,
        log_group: str | None = None, on_metrics=None) -> dict:
    """Train on every experience, evaluate on the whole test set after each, write results atomically.

    With ``out_dir``, the run owns that directory (``clpeft.rundir``), a checkpoint is written after every
    experience and removed once the results are; ``resume=True`` continues from it and gives the same results
    file as a run that never stopped. ``after_experience(i, strategy, stream)`` is called after each
    experience's evaluation (tests use it to cross-check against Avalanche's metrics on the same run).
    ``overwrite=True`` replaces whatever results the directory holds; ``config.loggers`` log live (``log_group``:
    e.g. the sweep's name, groups W&B runs). ``on_metrics(i, metrics)`` receives what the live loggers do after each
    experience (accuracy on the seen classes, Ā and forgetting so far), e.g. for a tuner's early stopping. Launched by torchrun, the run trains data-parallel (``clpeft.distributed``) and rank 0 writes the files.
    """
    out = None if out_dir is None else Path(out_dir)
    if resume and out is None:
        raise ClpeftError("resuming needs the run's output directory (--out)")
    with distributed.process_group(resolve_device(config.device)):
        writer = out is not None and distributed.is_writer()
        with rundir.owned(out, writer):
            if out is not None:
                if rundir.plan(out, config.run_id, resume, overwrite) == "complete":
                    raise ClpeftError(f"{out} already holds this run's results; pass --overwrite or choose another --out")
                if overwrite and writer:
                    rundir.clear_outputs(out)
                    resume = False
            return _run(config, out, writer, progress, plugins, evaluator, after_experience, resume, stream, log_group,
                        on_metrics)


def _run(config: RunConfig, out_dir: Path | None, writer: bool, progress: bool, plugins, evaluator,
         after_experience, resume: bool, stream, log_group, on_metrics=None) -> dict:
    progress = progress and distributed.is_writer()
    built = build(config, out_dir, progress, plugins, evaluator, stream)
    stream, model, pet, strategy, device = built
    if distributed.is_writer():
        for note in built.notes:
            print(f"clpeft: note: [{config.run_id}] {note}", file=sys.stderr, flush=True)
    loggers = RunLoggers(config.loggers if distributed.is_writer() else [], out_dir, config.as_dict(), config.run_id,
                         log_group)
    try:
        return _loop(config, out_dir, writer, progress, after_experience, resume, stream, model, pet, strategy,
                     device, loggers, built.notes, on_metrics)
    finally:
        loggers.close()


def _loop(config: RunConfig, out_dir: Path | None, writer: bool, progress: bool, after_experience, resume: bool,
          stream, model, pet, strategy, device, loggers, notes: list, on_metrics=None) -> dict:
    strategy.epoch_listeners.append(loggers.epoch)
    saved = load_checkpoint(out_dir, config.run_id) if resume else None
    eval_bs, eval_seed = config.train.eval_batch_size, config.seed
    tta = []
    if config.tta:
        from clpeft.evaluation.tta import tta_predictors

        tta = tta_predictors(config.tta, config.tta_settings, strategy.predict, lambda: model.head.num_seen)
    predict = tta[0][1] if tta else strategy.predict

    def evaluate(predict=predict, order=None):
        model.eval()  # BatchNorm statistics and dropout as at test time; strategy.train() switches back
        given_task = strategy.predict_given_task if strategy.task_conditioned else None
        return evaluate_stream(predict, stream, model.head.num_seen, device, eval_bs, eval_seed, order, given_task,
                               max(2, config.train.num_workers), unseen=config.stream.eval_unseen)

    if saved is None:
        row = evaluate()
        history = History(before={"accuracy": row.accuracy, "counts": row.counts})
        start = 0
    else:
        strategy.load_resume_state(saved["strategy"], saved["model"], stream.train_stream)
        history = History(**saved["history"])
        replay_logs(loggers, strategy.training_log, history)
        stream.test_set()  # fill the test cache as the first evaluation did: its loader draws from the RNG
        set_rng_state(saved["rng"])
        start = saved["experience"] + 1
        if progress:
            print(f"[{config.run_id}] resumed after experience {saved['experience']}", flush=True)
    completed = start - 1
    try:
        for i, experience in enumerate(stream.train_stream):
            if i < start:
                continue
            with timer(history.train_times, device):
                strategy.train(experience)
            with timer(history.eval_times, device):
                row = evaluate()
            release_freed_memory()  # CPU kernels' freed buffers, which glibc would keep: bounded memory on long streams
            history.add(row)
            live = running_metrics(history.R, history.before["counts"])
            loggers.experience(i, row.accuracy, live)
            if progress:
                seen = row.accuracy[: i + 1]
                print(f"[{config.run_id}] after experience {i}: " + " ".join(f"{a:.3f}" for a in seen), flush=True)
            if after_experience is not None:
                after_experience(i, strategy, stream)
            distributed.assert_in_sync(model, strategy.resume_state(), f"after experience {i}")
            if writer:
                with timer(history.checkpoint_times):
                    save_checkpoint(out_dir, {"run_id": config.run_id, "experience": i, "model": model.state_dict(),
                                              "strategy": strategy.resume_state(), "rng": rng_state(),
                                              "history": history.state()})
            completed = i
            if on_metrics is not None:  # after the checkpoint: a run stopped here (a tuner's early stop) can resume
                on_metrics(i, live)
    except KeyboardInterrupt:
        raise Interrupted(completed, out_dir) from None

    by_order = []
    if tta:  # what test-time adaptation buys, on i.i.d. and non-i.i.d. batch orders, after the last experience
        from clpeft.evaluation.tta import compare_eval_orders

        by_order = compare_eval_orders(lambda fn, order: evaluate(fn, order), [("none", strategy.predict)] + tta,
                                       EVAL_ORDERS, eval_bs)
    result = assemble(config, stream, model, pet, strategy, device, history, by_order, notes)
    runtime = {
        "train_seconds_per_experience": [round(t, 3) for t in history.train_times],
        "eval_seconds_per_experience": [round(t, 3) for t in history.eval_times],
        "checkpoint_seconds_per_experience": [round(t, 3) for t in history.checkpoint_times],
        "train_seconds_total": round(sum(history.train_times), 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
        "threads": torch.get_num_threads(),
    }
    results = result.to_dict()
    if writer:
        write_results(out_dir, results, runtime)
        (out_dir / rundir.CHECKPOINT).unlink(missing_ok=True)  # the results file is now the complete record
        (out_dir / rundir.FAILED).unlink(missing_ok=True)      # an earlier failure of this run is history now
    results["runtime"] = runtime
    return results


def replay_logs(loggers, training_log: list, history: History) -> None:
    """A resumed run's live logs first receive what the checkpointed experiences logged, in the same order."""
    for i, row in enumerate(history.R):
        for entry in training_log:
            if entry["experience"] == i:
                loggers.epoch(entry)
        loggers.experience(i, row, running_metrics(history.R[: i + 1], history.before["counts"]))


def assemble(config: RunConfig, stream, model, pet, strategy, device, history: History, by_order: list,
             notes: list | None = None) -> RunResult:
    """The typed results of a finished run."""
    counts, before = history.before["counts"], history.before["accuracy"]
    summary = summarize(history.R, counts, before)
    metrics = summary.as_dict()
    if history.R_routing:
        metrics["final_task_inference"] = float(np.average(np.array(history.R_routing[-1]), weights=counts))
    # health is judged on the trained model's own predictions (a test-time adaptation may do worse, legitimately)
    plain = next((r["final_accuracy"] for r in by_order if r["tta"] == "none" and r["eval_order"] == "iid"),
                 metrics["final_accuracy"])
    distributed_info = None
    if distributed.world_size() > 1:
        distributed_info = {"processes": distributed.world_size(), "backend": torch.distributed.get_backend(),
                            "batch_size_global": config.train.batch_size}
    views = None
    if history.R_views:  # e.g. LAE's online and offline experts, each with its own matrix and metrics
        views = {name: {"accuracy_matrix": M, "metrics": summarize(M, counts, before).as_dict()}
                 for name, M in sorted(history.R_views.items())}
    report_metrics = strategy.report_metrics()
    return RunResult(
        run_id=config.run_id,
        config_hash=config.config_hash(),
        config=config.as_dict(),
        stream={"name": stream.name, "class_ranges": stream.class_ranges, "class_order": stream.original_class_order,
                "num_classes": stream.num_classes},
        versions=package_versions(),
        device=device_description(device),
        accuracy_matrix=history.R,
        accuracy_matrix_task_il=history.R_task,
        accuracy_before_training=before,
        test_samples=counts,
        metrics=metrics,
        parameters=count_parameters(model, strategy.trainable_parameters(), pet),
        health=assess_health(plain, stream.num_classes, int(sum(counts)), strategy.training_log,
                             "final accuracy" if config.tta is None else "final accuracy before test-time adaptation",
                             learned_right_after(history.R_task, stream.class_ranges, counts)),
        training=list(strategy.training_log),
        final_accuracy_by_eval_order=by_order or None,
        distributed=distributed_info,
        task_inference_matrix=history.R_routing or None,
        strategy_summary=strategy.summary() or None,
        report_metrics=report_metrics or None,
        views=views,
        notes=notes or None,
    )

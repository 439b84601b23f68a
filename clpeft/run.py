"""One run: stream → model (+ PET) → strategy → accuracy matrix after every experience → results files."""
from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from clpeft import distributed
from clpeft.checkpoint import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from clpeft.config import RunConfig
from clpeft.errors import ClpeftError
from clpeft.evaluation.cost import count_parameters, peak_memory_mb, timer
from clpeft.evaluation.evaluate import EvalRow, evaluate_stream
from clpeft.evaluation.lame import AFFINITIES, LAMEConfig, with_lame
from clpeft.evaluation.metrics import summarize
from clpeft.models.continual_model import build_model
from clpeft.reports.results import SCHEMA_VERSION, package_versions, write_results
from clpeft.streams.stream import EVAL_ORDERS, make_stream
from clpeft.strategies.base import get_strategy
from clpeft.utils.device import resolve_device
from clpeft.utils.seed import seed_everything


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def avalanche_evaluator(loggers: list[str], out_dir: Path | None):
    """Avalanche's TensorBoard / CSV loggers on training metrics, when asked for (they cost time per step)."""
    if not loggers:
        return None
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.logging import CSVLogger, TensorboardLogger
    from avalanche.training.plugins import EvaluationPlugin

    from clpeft.errors import ClpeftError

    base = Path(out_dir or "runs") / "logs"
    made = []
    for name in loggers:
        if name == "csv":
            made.append(CSVLogger(log_folder=str(base / "csv")))
        elif name == "tensorboard":
            made.append(TensorboardLogger(tb_log_dir=str(base / "tensorboard")))
        else:
            raise ClpeftError(f"unknown logger {name!r}; use csv or tensorboard")
    return EvaluationPlugin(accuracy_metrics(epoch=True), loss_metrics(epoch=True), loggers=made)


def build(config: RunConfig, out_dir: Path | None = None, progress: bool = False, plugins=None, evaluator=None):
    """Stream, model, PET controller and strategy for ``config`` (seeded)."""
    seed_everything(config.seed)
    device = device_for_rank(resolve_device(config.device))
    strategy_cls = get_strategy(config.strategy)
    if distributed.world_size() > 1 and not strategy_cls.ddp_safe:
        raise ClpeftError(f"strategy {config.strategy} is not DDP-safe (its state is not synchronised across "
                          "processes); run it without torchrun")
    stream = make_stream(config.stream)
    m = config.model
    model = build_model(m.backbone, stream.num_classes, stream.input_spec, pretrained=m.pretrained,
                        checkpoint=m.checkpoint, head_init_std=m.head_init_std, normalize=m.normalize,
                        **m.overrides)
    pet = None
    if config.pet:
        from clpeft.pet import inject_named_pet

        pet = inject_named_pet(model.backbone, config.pet, config.pet_settings)
    strategy = strategy_cls(
        model=model, settings=config.train, device=device, amp=config.amp, pet=pet, plugins=plugins,
        evaluator=evaluator or avalanche_evaluator(config.loggers, out_dir), seed=config.seed,
        in_memory=stream.in_memory, progress=progress, options=config.options,
    )
    return stream, model, pet, strategy, device


def device_for_rank(device: torch.device) -> torch.device:
    """Under torchrun with CUDA, each rank uses the GPU of its LOCAL_RANK."""
    if distributed.world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def lame_predictors(config: RunConfig, strategy, model) -> list[tuple[str, object]]:
    """``predict`` wrapped in LAME as configured (named ``lame``), then with each other affinity on the same
    model (``lame[affinity=…]``): the affinity decides whether LAME hurts on i.i.d. batches, and trying
    the others costs no training."""
    configured = LAMEConfig.from_dict(config.tta_settings)
    settings = [("lame", configured)] + [(f"lame[affinity={a}]", replace(configured, affinity=a))
                                         for a in AFFINITIES if a != configured.affinity]
    return [(name, with_lame(strategy.predict, lambda: model.head.num_seen, cfg)) for name, cfg in settings]


def run(config: RunConfig, out_dir: str | Path | None = None, progress: bool = False, plugins=None,
        evaluator=None, after_experience=None, resume: bool = False) -> dict:
    """Train on every experience, evaluate on the whole test set after each, write results atomically.

    With ``out_dir``, a checkpoint (``clpeft.checkpoint``) is written after every experience and removed
    once the results are; ``resume=True`` continues from it and gives the same results file as a run
    that never stopped. ``after_experience(i, strategy, stream)`` is called after each experience's
    evaluation (tests use it to cross-check against Avalanche's metrics on the same run). Launched by
    torchrun, the run trains data-parallel (``clpeft.distributed``) and rank 0 writes the files.
    """
    with distributed.process_group(resolve_device(config.device)):
        return _run(config, None if out_dir is None else Path(out_dir), progress, plugins, evaluator,
                    after_experience, resume)


def _run(config: RunConfig, out_dir: Path | None, progress: bool, plugins, evaluator, after_experience,
         resume: bool) -> dict:
    if resume and out_dir is None:
        raise ClpeftError("resuming needs the run's output directory (--out)")
    stream, model, pet, strategy, device = build(config, out_dir, progress, plugins, evaluator)
    writer = out_dir is not None and distributed.is_writer()
    progress = progress and distributed.is_writer()
    saved = load_checkpoint(out_dir, config.run_id) if resume else None
    eval_bs, eval_seed = config.train.eval_batch_size, config.seed

    tta = lame_predictors(config, strategy, model) if config.tta == "lame" else []
    predict = tta[0][1] if tta else strategy.predict

    def evaluate(predict=predict, order=None):
        model.eval()  # BatchNorm statistics and dropout as at test time; strategy.train() switches back
        given_task = strategy.predict_given_task if strategy.task_conditioned else None
        return evaluate_stream(predict, stream, model.head.num_seen, device, eval_bs, eval_seed, order, given_task)

    R, R_task, train_times, eval_times = [], [], [], []
    R_views: dict[str, list] = {}
    R_routing: list[list[float]] = []  # share of each experience's test samples routed to it (task inference)
    if saved is None:
        before = evaluate()
        start = 0
    else:
        strategy.load_resume_state(saved["strategy"], saved["model"], stream.train_stream)
        R, R_task, R_views, R_routing = saved["R"], saved["R_task"], saved["R_views"], saved["R_routing"]
        train_times, eval_times = saved["train_times"], saved["eval_times"]
        before = EvalRow(accuracy=saved["before"]["accuracy"], accuracy_task_il=[], counts=saved["before"]["counts"])
        stream.test_set()  # fill the test cache as the first evaluation did: its loader draws from the RNG
        set_rng_state(saved["rng"])
        start = saved["experience"] + 1
        if progress:
            print(f"[{config.run_id}] resumed after experience {saved['experience']}", flush=True)
    for i, experience in enumerate(stream.train_stream):
        if i < start:
            continue
        with timer(train_times, device):
            strategy.train(experience)
        with timer(eval_times, device):
            row = evaluate()
        R.append(row.accuracy)
        R_task.append(row.accuracy_task_il)
        for name, accuracy in row.views.items():
            R_views.setdefault(name, []).append(accuracy)
        if row.task_inference is not None:
            R_routing.append(row.task_inference)
        if progress:
            seen = row.accuracy[: i + 1]
            print(f"[{config.run_id}] after experience {i}: " + " ".join(f"{a:.3f}" for a in seen), flush=True)
        if after_experience is not None:
            after_experience(i, strategy, stream)
        distributed.assert_in_sync(model, strategy.resume_state(), f"after experience {i}")
        if writer:
            save_checkpoint(out_dir, {
                "run_id": config.run_id, "experience": i, "model": model.state_dict(),
                "strategy": strategy.resume_state(), "rng": rng_state(), "R": R, "R_task": R_task, "R_views": R_views,
                "R_routing": R_routing, "train_times": train_times, "eval_times": eval_times,
                "before": {"accuracy": before.accuracy, "counts": before.counts}})
    summary = summarize(R, before.counts, before.accuracy)
    by_order = []
    if config.tta:  # what test-time adaptation buys, on i.i.d. and non-i.i.d. batch orders, after the last experience
        for order in EVAL_ORDERS:
            for name, fn in [("none", strategy.predict)] + tta:
                row = evaluate(fn, order)
                by_order.append({"eval_order": order, "tta": name, "eval_batch_size": eval_bs,
                                 "final_accuracy": float(np.average(row.accuracy, weights=row.counts))})
    params = count_parameters(model)
    params["trainable"] = int(sum(p.numel() for p in strategy.trainable_parameters()))
    one = None if pet is None else pet.active or (pet.names[0] if pet.names else None)
    params["pet"] = pet.num_parameters(one) if one is not None else 0  # one instance (slot, mask, expert)
    params["pet_all_instances"] = int(sum(pet.num_parameters(n) for n in pet.names)) if pet is not None else 0
    results = {
        "schema_version": SCHEMA_VERSION,
        "run_id": config.run_id,
        "config_hash": config.config_hash(),
        "config": config.as_dict(),
        "stream": {"name": stream.name, "class_ranges": stream.class_ranges, "class_order": stream.original_class_order,
                   "num_classes": stream.num_classes},
        "versions": package_versions(),
        "device": device_description(device),
        "accuracy_matrix": R,
        "accuracy_matrix_task_il": R_task,
        "accuracy_before_training": before.accuracy,
        "test_samples": before.counts,
        "metrics": summary.as_dict(),
        "parameters": params,
    }
    if by_order:
        results["final_accuracy_by_eval_order"] = by_order
    if distributed.world_size() > 1:
        results["distributed"] = {"processes": distributed.world_size(), "backend": torch.distributed.get_backend(),
                                  "batch_size_global": config.train.batch_size}
    if R_routing:
        results["task_inference_matrix"] = R_routing
        final = np.array(R_routing[-1])
        results["metrics"]["final_task_inference"] = float(np.average(final, weights=before.counts))
    extra = strategy.summary()
    if extra:
        results["strategy_summary"] = extra
    if R_views:  # e.g. LAE's online and offline experts, each with its own matrix and metrics
        results["views"] = {name: {"accuracy_matrix": M, "metrics": summarize(M, before.counts, before.accuracy).as_dict()}
                            for name, M in sorted(R_views.items())}
    runtime = {
        "train_seconds_per_experience": [round(t, 3) for t in train_times],
        "eval_seconds_per_experience": [round(t, 3) for t in eval_times],
        "train_seconds_total": round(sum(train_times), 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
        "threads": torch.get_num_threads(),
    }
    if writer:
        write_results(out_dir, results, runtime)
        (out_dir / CHECKPOINT).unlink(missing_ok=True)  # the results file is now the complete record
    results["runtime"] = runtime
    return results


def run_all(configs: list[RunConfig], out_root: str | Path, log=print) -> list[Path]:
    """Run each config into ``out_root/RUN_ID`` in turn, skipping runs whose results file exists."""
    done = []
    for config in configs:
        out = Path(out_root) / config.run_id
        if not (out / "results.json").exists():  # an interrupted run continues from its checkpoint
            result = run(config, out_dir=out, resume=get_strategy(config.strategy).resumable)
            views = result.get("views", {})
            extra = "".join(f" {k}={v['metrics']['final_accuracy']:.3f}" for k, v in views.items())
            log(f"{config.run_id}: A_T={result['metrics']['final_accuracy']:.3f}{extra}")
        done.append(out)
    return done

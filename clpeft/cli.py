"""``clpeft run | sweep | list | report | pretrain``. User errors print one line and exit with code 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clpeft.errors import ClpeftError


def cmd_run(args) -> int:
    from clpeft.config import load_scenario, resolve
    from clpeft.run import run

    scenario = load_scenario(args.scenario)
    overrides: dict = {"train": {}, "stream": {}, "model": {}, "options": parse_options(args.option)}
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    if args.data_root:
        overrides["stream"]["root"] = args.data_root
    if args.checkpoint:
        overrides["model"]["checkpoint"] = args.checkpoint
    if args.backbone:
        overrides["model"]["backbone"] = args.backbone
    if args.eval_order:
        overrides["stream"]["eval_order"] = args.eval_order
    config = resolve(scenario, strategy=args.strategy, pet=args.pet, seed=args.seed, device=args.device,
                     amp=args.amp, overrides=overrides, tta=args.tta)
    out = Path(args.out) if args.out else Path("runs") / config.run_id
    if (out / "results.json").exists() and not args.overwrite:
        if args.resume:
            print(f"{config.run_id}: already complete → {out}/results.json")
            return 0
        raise ClpeftError(f"{out}/results.json exists; pass --overwrite or choose another --out")
    results = run(config, out_dir=out, progress=not args.quiet, resume=args.resume)
    from clpeft.distributed import is_writer

    if not is_writer():  # torchrun: rank 0 reports
        return 0
    m = results["metrics"]
    print(f"{config.run_id}: A_T={m['final_accuracy']:.4f} Ā={m['average_incremental_accuracy']:.4f} "
          f"F(max)={m['forgetting_max']:.4f} BWT={m['backward_transfer']:.4f} → {out}/results.json")
    return 0


def parse_options(pairs: list[str] | None) -> dict:
    """``--option key=value`` (value read as YAML: numbers, true/false, null, lists) → strategy options."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClpeftError(f"--option needs KEY=VALUE, got {pair!r} (e.g. --option ema_decay=0.999)")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ClpeftError(f"--option {key}: cannot read value {value!r}; quote strings, e.g. {key}=name") from None
    return options


def cmd_list(args) -> int:
    from clpeft.config import SCENARIOS_DIR
    from clpeft.models.backbones import BACKBONES
    from clpeft.pet import PET_TYPES
    from clpeft.streams.datasets import DATASETS, OFFLINE_DATASETS
    from clpeft.strategies.base import STRATEGIES, get_strategy

    get_strategy("finetune")
    print("scenarios:  " + ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))))
    print("datasets:   " + ", ".join(f"{d}{' (offline)' if d in OFFLINE_DATASETS else ''}" for d in DATASETS))
    print("strategies: " + ", ".join(sorted(STRATEGIES)))
    print("pet:        " + ", ".join(PET_TYPES))
    print("backbones:  " + ", ".join(BACKBONES) + ", or any timm model name")
    return 0


def cmd_sweep(args) -> int:
    from clpeft.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep, out=args.out, device=args.device)
    print(f"sweep {sweep.name}: {len(sweep.configs)} runs on {args.engine} → {sweep.out}", flush=True)
    summary = run_sweep(sweep, engine=args.engine, address=args.address, workers=args.workers,
                        report=not args.no_report, log=lambda line: print(line, flush=True))
    print(f"{summary['done']} ran, {summary['skipped']} finished before, {summary['failed']} failed "
          f"in {summary['wall_seconds']:.1f} s → {sweep.out}/sweep.json" + (f", {summary['report']}" if "report" in summary else ""))
    return 1 if summary["failed"] else 0


def cmd_report(args) -> int:
    from clpeft.reports.report import build_report

    path = build_report(args.runs, args.out, title=args.title)
    print(f"report written to {path} (and index.html, PNG plots)")
    return 0


def cmd_pretrain(args) -> int:
    from clpeft.pretrain import pretrain

    record = pretrain(backbone=args.backbone, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, data_root=args.data_root)
    print(f"test accuracy {record['history'][-1]['test_acc']:.4f}; sha256 {record['sha256']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clpeft", description="Continual learning with parameter-efficient tuning")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one strategy on one scenario and write results")
    r.add_argument("scenario", help="scenario YAML path or name in scenarios/")
    r.add_argument("--strategy")
    r.add_argument("--pet", help="PET module: adapter, lora, prefix, prompt, supermask (none: no PET)")
    r.add_argument("--tta", help="test-time adaptation at evaluation: lame (also reports every eval order with/without it)")
    r.add_argument("--eval-order", choices=["iid", "class_grouped", "dirichlet"], help="order of test batches")
    r.add_argument("--seed", type=int)
    r.add_argument("--device", default="cpu")
    r.add_argument("--amp", choices=["bf16", "off"])
    r.add_argument("--backbone", help="override the scenario's backbone (a timm name or one of `clpeft list`)")
    r.add_argument("--epochs", type=int, help="override the scenario's epochs")
    r.add_argument("--option", action="append", metavar="KEY=VALUE", help="strategy option (repeatable), e.g. ema_decay=0.999")
    r.add_argument("--data-root", help="folder with the data set (online data sets)")
    r.add_argument("--checkpoint", help="local backbone checkpoint (safetensors or a weights_only torch file)")
    r.add_argument("--out", help="output directory (default runs/RUN_ID)")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (after a crash or kill)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a grid of runs (sweep YAML) on Ray or in-process, then report")
    sw.add_argument("sweep", help="sweep YAML (see clpeft/sweep.py for the layout)")
    sw.add_argument("--engine", choices=["ray", "local"], default="ray",
                    help="ray: one task per run on a Ray started here or joined (--address); local: one after another here")
    sw.add_argument("--address", help="Ray cluster to join (e.g. auto or ray://host:10001); default: start a local Ray")
    sw.add_argument("--workers", type=int, help="local Ray only: runs at a time (default: as many as the cores allow)")
    sw.add_argument("--out", help="sweep output directory (default: the file's out:, or runs/sweeps/NAME)")
    sw.add_argument("--device", help="override the sweep's device for every run (cpu, cuda)")
    sw.add_argument("--no-report", action="store_true")
    sw.set_defaults(func=cmd_sweep)
    sub.add_parser("list", help="streams, strategies, PET modules, backbones").set_defaults(func=cmd_list)
    rep = sub.add_parser("report", help="aggregate runs into Markdown/HTML tables and plots")
    rep.add_argument("runs", nargs="+")
    rep.add_argument("-o", "--out", required=True)
    rep.add_argument("--title", default="clpeft report")
    rep.set_defaults(func=cmd_report)
    pt = sub.add_parser("pretrain", help="pretrain the bundled small ViT on Fashion-MNIST")
    pt.add_argument("--backbone", default="vit_tiny_fmnist")
    pt.add_argument("--out")
    pt.add_argument("--epochs", type=int, default=6)
    pt.add_argument("--batch-size", type=int, default=128)
    pt.add_argument("--lr", type=float, default=2e-3)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--data-root")
    pt.set_defaults(func=cmd_pretrain)
    return p


def main(argv=None) -> int:
    import warnings

    warnings.filterwarnings("ignore", module="avalanche")
    warnings.filterwarnings("ignore", category=UserWarning)
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ClpeftError as exc:
        print(f"clpeft: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

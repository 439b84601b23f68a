"""``clpeft run | sweep | tune | list | report | pretrain``.

Bad input prints one line (``clpeft: error: …`` naming the fix) and exits with code 2 before any expensive
work; Ctrl-C prints how far the run got and exits with 130. Heavy modules are imported inside the
commands, so ``clpeft --help`` and ``clpeft list`` answer at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clpeft.errors import ClpeftError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def parse_pairs(pairs: list[str] | None, flag: str, example: str) -> dict:
    """``KEY=VALUE`` pairs, each value read as YAML (numbers, true/false, null, lists)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ClpeftError(f"{flag} needs KEY=VALUE, got {pair!r} (e.g. {flag} {example})")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ClpeftError(f"{flag} {key}: cannot read value {value!r}; quote strings, e.g. {key}=name") from None
    return out


def parse_options(pairs: list[str] | None) -> dict:
    """``--option key=value`` → strategy options."""
    return parse_pairs(pairs, "--option", "ema_decay=0.999")


def imports_of(args) -> list[str]:
    from clpeft.plugins import import_plugins, normalize_import

    imports = [normalize_import(spec) for spec in (getattr(args, "imports", None) or [])]
    import_plugins(imports)
    return imports


def log_names(args) -> list[str] | None:
    """``--log csv,tensorboard,wandb`` (None: the scenario's ``loggers:``)."""
    if not args.log:
        return None
    return [name for value in args.log for name in value.split(",")]


def run_overrides(args) -> tuple[dict, dict]:
    """(named fields, section overrides) from ``--set`` and the shortcut flags; flags win over ``--set``."""
    from clpeft.config import split_dotted

    named, overrides = split_dotted(parse_pairs(args.set, "--set", "train.lr=0.01"), "--set")
    unknown = sorted(set(named) - {"strategy", "pet", "seed", "tta", "amp", "device"})
    if unknown:
        raise ClpeftError(f"--set {unknown[0]}: use a dotted key (train.lr, model.backbone, stream.n_experiences, "
                          "options.NAME, pet.NAME, tta.NAME) or strategy, pet, seed, tta, amp, device")
    for section in ("train", "stream", "model"):
        overrides.setdefault(section, {})
    overrides.setdefault("options", {}).update(parse_options(args.option))
    shortcuts = {("train", "epochs"): args.epochs, ("stream", "root"): args.data_root, ("model", "checkpoint"): args.checkpoint,
                 ("model", "backbone"): args.backbone, ("stream", "eval_order"): args.eval_order}
    for (section, key), value in shortcuts.items():
        if value is not None:
            overrides[section][key] = value
    for key in ("strategy", "pet", "seed", "tta", "amp", "device"):
        if getattr(args, key) is not None:
            named[key] = getattr(args, key)
    return named, overrides


def cmd_run(args) -> int:
    from clpeft import rundir
    from clpeft.config import load_scenario, resolve

    imports = imports_of(args)
    scenario = load_scenario(args.scenario)
    named, overrides = run_overrides(args)
    config = resolve(scenario, strategy=named.get("strategy"), pet=named.get("pet"), seed=named.get("seed"),
                     device=named.get("device", "cpu"), amp=named.get("amp"), overrides=overrides,
                     tta=named.get("tta"), imports=imports, loggers=log_names(args))
    out = Path(args.out) if args.out else Path("runs") / config.run_id
    if out.is_dir() and rundir.plan(out, config.run_id, args.resume, args.overwrite) == "complete":
        if args.resume:
            print(f"{config.run_id}: already complete → {out}/results.json")
            return 0
        raise ClpeftError(f"{out}/results.json exists for this run; pass --overwrite or choose another --out")
    from clpeft.run import run

    results = run(config, out_dir=out, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    from clpeft.distributed import is_writer

    if not is_writer():  # torchrun: rank 0 reports
        return 0
    m = results["metrics"]
    print(f"{config.run_id}: A_T={m['final_accuracy']:.4f} Ā={m['average_incremental_accuracy']:.4f} "
          f"F(max)={m['forgetting_max']:.4f} BWT={m['backward_transfer']:.4f} → {out}/results.json")
    health = results.get("health", {})
    if health.get("status", "ok") != "ok":
        print(f"clpeft: warning: this run is marked {health['status'].replace('_', ' ').upper()} in results.json: "
              f"{'; '.join(health['reasons'])}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from clpeft import catalog

    if args.options:
        return list_options(args.options, imports_of(args))
    imports_of(args)
    for line in catalog.listing():
        print(line)
    return 0


def list_options(name: str, imports) -> int:
    """A strategy's options with types, defaults and one-line docs."""
    from clpeft.strategies.registry import get_strategy
    from clpeft.utils.typed import describe_fields

    cls = get_strategy(name)
    rows = describe_fields(cls.Options)
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    print(f"{name}: {doc[0] if doc else ''}")
    pets = ("any" if cls.accepts_pet is True else "none" if cls.accepts_pet is False else " | ".join(cls.accepts_pet))
    print(f"  PET modules: {pets}{' (required)' if cls.requires_pet else ''}; loss scope: {cls.loss_scope or 'train.loss_scope'}")
    if not rows:
        print("  (no options)")
    for field_name, type_name, default, text in rows:
        print(f"  --option {field_name}=…  ({type_name}, default {default})  {text}")
    return 0


def cmd_sweep(args) -> int:
    from clpeft.config import split_dotted
    from clpeft.sweep import load_sweep, run_sweep

    imports = imports_of(args)
    named, overrides = split_dotted(parse_pairs(args.set, "--set", "train.epochs=1"), "--set")
    if named:
        raise ClpeftError(f"--set {sorted(named)[0]} on a sweep: use a dotted key (e.g. train.epochs=1); grid keys "
                          "such as seed belong in the sweep file")
    sweep = load_sweep(args.sweep, out=args.out, device=args.device, imports=imports, overrides=overrides,
                       loggers=log_names(args))
    print(f"sweep {sweep.name}: {len(sweep.configs)} runs on {args.engine} → {sweep.out}", flush=True)
    summary = run_sweep(sweep, engine=args.engine, address=args.address, workers=args.workers,
                        report=not args.no_report, log=lambda line: print(line, flush=True), progress=not args.quiet)
    print(f"{summary['done']} ran, {summary['diverged']} diverged, {summary['not_learned']} did not learn, "
          f"{summary['at_chance']} at chance, "
          f"{summary['skipped']} finished before, "
          f"{summary['failed']} failed in {summary['wall_seconds']:.1f} s → {sweep.out}/sweep.json"
          + (f", {summary['report']}" if "report" in summary else ""))
    return 1 if summary["failed"] else 0


def cmd_tune(args) -> int:
    from clpeft.tune import load_tune, run_tune

    spec = load_tune(args.tune, out=args.out, device=args.device)
    print(f"tune {spec.name}: {spec.trials} trials of {spec.strategy} on {spec.tune_on.label} ({spec.scheduler}, "
          f"{spec.metric}), then {len(spec.seeds)} seeds on " + ", ".join(r.label for r in spec.report_on)
          + f" → {spec.out}", flush=True)
    result = run_tune(spec, address=args.address, workers=args.workers, device=args.device,
                      log=lambda line: print(line, flush=True))
    report = result["report"]
    print(f"report runs: {report['done']} ran, {report['skipped']} finished before, {report['failed']} failed"
          + (f" → {report['report']}" if "report" in report else ""))
    return 1 if report["failed"] else 0


def cmd_report(args) -> int:
    from clpeft.reports.report import build_report

    path = build_report(args.runs, args.out, title=args.title)
    print(f"report written to {path} (and index.html, runs.csv, figures)")
    return 0


def cmd_pretrain(args) -> int:
    from clpeft.pretrain import pretrain

    record = pretrain(backbone=args.backbone, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, data_root=args.data_root)
    print(f"test accuracy {record['history'][-1]['test_acc']:.4f}; sha256 {record['sha256']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clpeft", description="Continual learning with parameter-efficient tuning: "
                                "strategies × PET modules on class-incremental streams, with forgetting metrics.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one strategy on one scenario and write results")
    r.add_argument("scenario", help="scenario YAML path or a name from `clpeft list`")
    r.add_argument("--strategy", help="strategy name (default: the scenario's; see `clpeft list`)")
    r.add_argument("--pet", help="PET module: adapter, lora, prefix, prompt, supermask (none: no PET)")
    r.add_argument("--tta", help="test-time adaptation at evaluation: lame (also reports every eval order with/without it)")
    r.add_argument("--eval-order", choices=["iid", "class_grouped", "dirichlet"], help="order of test batches")
    r.add_argument("--seed", type=int, help="run seed (weights, shuffles and, by default, the class order)")
    r.add_argument("--device", help="cpu (default), cuda or cuda:N")
    r.add_argument("--amp", choices=["bf16", "off"], help="mixed precision (bf16 autocast) or full fp32")
    r.add_argument("--backbone", help="override the scenario's backbone (a timm name or one of `clpeft list`)")
    r.add_argument("--epochs", type=int, help="override the scenario's epochs per experience")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="strategy option (repeatable), e.g. ema_decay=0.999; `clpeft list --options NAME` lists them")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any setting by dotted key (repeatable), e.g. train.lr=0.01, stream.n_experiences=10, pet.rank=8")
    r.add_argument("--import", dest="imports", action="append", metavar="FILE_OR_MODULE",
                   help="plugin file or module to import first (your own strategies, data sets, backbones)")
    r.add_argument("--log", action="append", metavar="NAMES",
                   help="live logging: csv, tensorboard, wandb (offline), comma-separated; loss and accuracy per epoch, "
                        "the accuracy-matrix row, A, Ā and forgetting after every experience")
    r.add_argument("--data-root", help="folder with the data set (online data sets)")
    r.add_argument("--checkpoint", help="local backbone checkpoint (safetensors or a weights_only torch file)")
    r.add_argument("--out", help="output directory (default runs/RUN_ID)")
    r.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (after a crash or kill)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a grid of runs (sweep YAML) on Ray or in-process, then report")
    sw.add_argument("sweep", help="sweep YAML (layout in clpeft/sweep.py and the README)")
    sw.add_argument("--engine", choices=["ray", "local"], default="ray",
                    help="ray: one task per run on a Ray started here or joined (--address); local: one after another here")
    sw.add_argument("--address", help="Ray cluster to join (e.g. auto or ray://host:10001); default: start a local Ray")
    sw.add_argument("--workers", type=int, help="local Ray only: runs at a time (default: as many as the cores allow)")
    sw.add_argument("--out", help="sweep output directory (default: the file's out:, or runs/sweeps/NAME)")
    sw.add_argument("--device", help="override the sweep's device for every run (cpu, cuda)")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a dotted setting applied to every run (repeatable), e.g. train.epochs=1")
    sw.add_argument("--import", dest="imports", action="append", metavar="FILE_OR_MODULE",
                    help="plugin file or module (imported here and in every Ray worker)")
    sw.add_argument("--log", action="append", metavar="NAMES",
                    help="live logging of every run: csv, tensorboard, wandb (one W&B run per grid point, grouped)")
    sw.add_argument("--no-report", action="store_true", help="skip the report at the end")
    sw.add_argument("--quiet", action="store_true", help="one line per run, no per-epoch progress (local engine)")
    sw.set_defaults(func=cmd_sweep)
    tu = sub.add_parser("tune", help="search a strategy's settings on one stream with Ray Tune, report on others")
    tu.add_argument("tune", help="tune YAML (layout in clpeft/tune.py and the README)")
    tu.add_argument("--out", help="output directory (default: the file's out:, or runs/tune/NAME)")
    tu.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    tu.add_argument("--workers", type=int, help="local Ray only: trials and runs at a time (default: as the cores allow)")
    tu.add_argument("--device", default="cpu", help="device of every trial and run (cpu, cuda)")
    tu.set_defaults(func=cmd_tune)
    ls = sub.add_parser("list", help="scenarios, data sets, strategies, PET modules, backbones")
    ls.add_argument("--options", metavar="STRATEGY", help="list one strategy's options with types, defaults and docs")
    ls.add_argument("--import", dest="imports", action="append", metavar="FILE_OR_MODULE",
                    help="plugin file or module whose registrations to include")
    ls.set_defaults(func=cmd_list)
    rep = sub.add_parser("report", help="aggregate runs into Markdown/HTML tables and figures")
    rep.add_argument("runs", nargs="+", help="run directories or results.json files (searched recursively)")
    rep.add_argument("-o", "--out", required=True, help="report directory")
    rep.add_argument("--title", default="clpeft report", help="report title")
    rep.set_defaults(func=cmd_report)
    pt = sub.add_parser("pretrain", help="pretrain the bundled small ViT on Fashion-MNIST")
    pt.add_argument("--backbone", default="vit_tiny_fmnist", help="backbone to pretrain")
    pt.add_argument("--out", help="weights file (default: the bundled one)")
    pt.add_argument("--epochs", type=int, default=6, help="epochs")
    pt.add_argument("--batch-size", type=int, default=128, help="batch size")
    pt.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    pt.add_argument("--seed", type=int, default=0, help="seed")
    pt.add_argument("--data-root", help="folder with the Fashion-MNIST IDX files (default: Debian's)")
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
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        completed = getattr(exc, "completed", None)
        out = getattr(exc, "out_dir", None)
        if completed is not None and completed >= 0 and out is not None:
            print(f"clpeft: interrupted after experience {completed}; continue with --resume --out {out}", file=sys.stderr)
        elif completed is not None and out is not None:
            print("clpeft: interrupted before the first experience finished; nothing was saved", file=sys.stderr)
        else:
            print("clpeft: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

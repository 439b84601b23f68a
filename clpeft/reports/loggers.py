"""Live logging of a run: the training loss and accuracy per epoch, and after every experience its row of
the accuracy matrix with A (seen so far), Ā and forgetting so far.

``csv`` (``OUT/logs/epochs.csv``, ``OUT/logs/experiences.csv``), ``tensorboard`` (``OUT/logs/tensorboard``)
and ``wandb`` (offline, ``OUT/logs/wandb``; ``wandb sync`` uploads it later) are called directly — no
Avalanche evaluator, so logging costs nothing per training step. A sweep logs each grid point as its own
run, with its configuration, grouped under the sweep's name.

Logs survive a kill: every start clears what an earlier attempt of the run left in ``OUT/logs`` (rows past
its last checkpoint would otherwise stay or be lost), and a resumed run replays the checkpointed epochs and
experiences first, so the files equal those of a run that never stopped.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from clpeft.errors import ClpeftError

LOGGERS = ("csv", "tensorboard", "wandb")


def check_loggers(names) -> list[str]:
    names = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise ClpeftError(f"unknown logger {bad[0]!r}; use any of {', '.join(LOGGERS)} (e.g. --log csv,tensorboard)")
    return list(dict.fromkeys(names))


class CSVLog:
    def __init__(self, folder: Path, config: dict, run_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {kind: open(folder / f"{kind}.csv", "w", newline="") for kind in ("epochs", "experiences")}
        self.writers = {}

    def _write(self, kind: str, row: dict) -> None:
        if kind not in self.writers:
            self.writers[kind] = csv.DictWriter(self.files[kind], fieldnames=list(row), extrasaction="ignore")
            self.writers[kind].writeheader()
        self.writers[kind].writerow(row)
        self.files[kind].flush()

    def epoch(self, step: int, entry: dict) -> None:
        self._write("epochs", {"step": step, **entry})

    def experience(self, i: int, row: list[float], metrics: dict) -> None:
        self._write("experiences", {"experience": i, **metrics, **{f"acc_exp{j}": a for j, a in enumerate(row)}})

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class TensorBoardLog:
    def __init__(self, folder: Path, config: dict, run_id: str):
        from torch.utils.tensorboard import SummaryWriter

        for stale in folder.glob("events.out.tfevents.*"):  # an earlier attempt's events: replayed, not kept
            stale.unlink()
        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("config", f"```\n{config}\n```")

    def epoch(self, step: int, entry: dict) -> None:
        self.writer.add_scalar("train/loss", entry["loss"], step)
        if entry.get("train_accuracy") is not None:
            self.writer.add_scalar("train/accuracy", entry["train_accuracy"], step)

    def experience(self, i: int, row: list[float], metrics: dict) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, i)
        for j, a in enumerate(row):
            self.writer.add_scalar(f"accuracy_matrix/exp{j}", a, i)

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    def __init__(self, folder: Path, config: dict, run_id: str, group: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ClpeftError("--log wandb needs the wandb package (pip install wandb)") from None
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (folder / "wandb").glob("offline-run-*"):  # an earlier attempt's run: replayed, not kept
            shutil.rmtree(stale, ignore_errors=True)
        self.run = wandb.init(project="clpeft", mode="offline", dir=str(folder), name=run_id, group=group,
                              config=config, reinit="finish_previous")

    def epoch(self, step: int, entry: dict) -> None:
        self.run.log({"train/loss": entry["loss"], "train/accuracy": entry.get("train_accuracy"),
                      "experience": entry["experience"]}, step=step)

    def experience(self, i: int, row: list[float], metrics: dict) -> None:
        self.run.log({**{f"eval/{k}": v for k, v in metrics.items()}, "eval/experience": i})

    def close(self) -> None:
        self.run.finish()


class RunLoggers:
    """Fans one run's events out to the loggers asked for (none: nothing happens)."""

    def __init__(self, names, out_dir: Path | None, config: dict, run_id: str, group: str | None = None):
        self.loggers = []
        self.step = 0
        base = Path(out_dir or Path("runs") / run_id) / "logs"
        for name in check_loggers(names):
            if name == "csv":
                self.loggers.append(CSVLog(base, config, run_id))
            elif name == "tensorboard":
                self.loggers.append(TensorBoardLog(base / "tensorboard", config, run_id))
            else:
                self.loggers.append(WandbLog(base / "wandb", config, run_id, group))

    def epoch(self, entry: dict) -> None:
        for logger in self.loggers:
            logger.epoch(self.step, entry)
        self.step += 1

    def experience(self, i: int, row: list[float], metrics: dict) -> None:
        for logger in self.loggers:
            logger.experience(i, row, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

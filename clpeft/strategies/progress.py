"""Terminal progress of the training loop."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class EpochProgress:
    """Progress of one epoch: on a terminal a bar with the running loss (read at most twice a second, so the
    device is not synchronised every step); elsewhere (logs, CI) one line per epoch instead of redrawn bars."""

    def __init__(self, strategy):
        self.strategy, self.time = strategy, time
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        phase = strategy.phase
        self.label = (f"{strategy.name} exp {strategy.experience_index} "
                      + (f"{phase.name} " if len(strategy._phases) > 1 else "")
                      + f"epoch {strategy.epoch + 1}/{phase.epochs}")
        self.bar = tqdm(total=strategy.steps_per_epoch, desc=self.label, leave=False, dynamic_ncols=True) if self.tty else None

    def step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = self.time.perf_counter()
        if now - self.last > 0.5:
            s = self.strategy
            self.bar.set_postfix(loss=f"{float(s._loss_sum) / max(s._steps, 1):.4f}", refresh=False)
            self.last = now

    def close(self, entry: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        print(f"  {self.label}: loss {entry['loss']:.4f}, train accuracy {100 * entry['train_accuracy']:.1f} % "
              f"({self.time.perf_counter() - self.start:.1f} s)", flush=True)

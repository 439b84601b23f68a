"""Shared by the benchmark scripts: wall time of a call (CUDA-synchronised) and interleaved medians."""
import argparse
import statistics
import time

import torch


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(runners: dict, rounds: int, device, warmup: bool = True) -> tuple[dict, dict]:
    """Run every runner once to warm up, then ``rounds`` interleaved rounds; (medians, all times)."""
    if warmup:
        for fn in runners.values():
            fn()
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            times[name].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}, times


def batch_parser() -> argparse.ArgumentParser:
    """The options every per-batch cost benchmark takes: rounds, device, batch size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    return parser

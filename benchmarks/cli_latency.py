"""How long `clpeft --help` and `clpeft list` take from a cold process (they import no torch), next to a
command that must import the training stack (`clpeft list --options lae`).

    python benchmarks/cli_latency.py [--repeats 5]
"""
import argparse
import statistics
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

COMMANDS = {"clpeft --help": ["--help"], "clpeft list": ["list"], "clpeft list --options lae": ["list", "--options", "lae"]}
for label, argv in COMMANDS.items():
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clpeft", *argv], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"{label:28s} median {statistics.median(times):.2f} s  (min {min(times):.2f}, max {max(times):.2f}, "
          f"{args.repeats} runs)")

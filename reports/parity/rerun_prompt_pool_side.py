"""Replace one method's clpeft side in prompt_pool_runs.json by runs of the committed code (each with its thread
count and config hash), and print its rows of the table in prompt_pool.md.

    for s in 0 1 2 3 4; do OMP_NUM_THREADS=1 clpeft run digits32_b0_inc2 --strategy coda_prompt --seed $s \
        --out /tmp/coda_rerun/coda_prompt-s$s; done
    python reports/parity/rerun_prompt_pool_side.py coda_prompt /tmp/coda_rerun
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from summarise import table_rows  # noqa: E402 - the table's rows, one source


def main(method: str, folder: Path) -> None:
    path = HERE / "prompt_pool_runs.json"
    data = json.loads(path.read_text())
    side = {}
    for seed in range(5):
        run = folder / f"{method}-s{seed}"
        if (run / "results.json").exists():
            r = json.loads((run / "results.json").read_text())
            side[str(seed)] = {"A_T": r["metrics"]["final_accuracy"], "matrix": r["accuracy_matrix"],
                               "config_hash": r["config_hash"],
                               "threads": json.loads((run / "runtime.json").read_text())["threads"]}
    data[method]["clpeft"] = side
    path.write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(table_rows(method, data[method])))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

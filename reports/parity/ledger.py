"""The parity ledger: one row per method and variant, both sides' numbers read from the committed run files in this
folder (never typed by hand), with the status and the command of each side. Writes README.md here.

    python reports/parity/ledger.py        # from the repository root
"""
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "official"))


def load(name):
    return json.loads((HERE / name).read_text())


def test_counts():
    from shared_digits import digits32

    y = digits32()[3]
    return [int((y // 2 == e).sum()) for e in range(5)]


def a_t(row, counts):
    return sum(a * n for a, n in zip(row, counts)) / sum(counts)


def mean_std(values):
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def status(delta, explained=None):
    if explained:
        return f"explained: {explained}"
    return "within ±3" if abs(delta) <= 3 else "open"


def has_runs(name: str) -> bool:
    return (HERE / f"{name}_runs.json").exists()


def runs_row(name: str, label: str, page: str) -> tuple:
    """A row from a summarise_runs.py file: both sides' A_T over seeds, Δ and the status."""
    runs_ = load(f"{name}_runs.json")
    off = [x["final_accuracy"] for x in runs_["runs"] if x["side"] == "official"]
    ours = [x["final_accuracy"] for x in runs_["runs"] if x["side"] == "clpeft"]
    d = 100 * (statistics.mean(ours) - statistics.mean(off))
    return (label, runs_["official"], f"{len(off)} / {len(ours)}", mean_std(off), mean_std(ours), f"{d:+.1f}",
            status(d, runs_.get("explained")), page)


def rows():
    counts = test_counts()
    out = []
    pp = load("prompt_pool_runs.json")
    for method, label in (("l2p", "L2P++"), ("dualprompt", "DualPrompt"), ("coda_prompt", "CODA-P")):
        off = [r["A_T"] for r in pp[method]["official"].values()]
        ours = [r["A_T"] for r in pp[method]["clpeft"].values()]
        d = 100 * (statistics.mean(ours) - statistics.mean(off))
        out.append((label, "GT-RIPL/CODA-Prompt@6417d4f", f"{len(off)} / {len(ours)}", mean_std(off), mean_std(ours),
                    f"{d:+.1f}", status(d), "prompt_pool.md"))
    e2e = load("ptm_end_to_end_runs.json")
    for method, label, repo in (("ranpac", "RanPAC (end to end)", "RanPAC/RanPAC@012927f"),
                                ("aper", "APER (end to end)", "zhoudw-zdw/RevisitingCIL@a2e6b71")):
        off = [r["A_T"] for r in e2e[method]["official"].values()]
        ours = [r["A_T"] for r in e2e[method]["clpeft"].values()]
        d = 100 * (statistics.mean(ours) - statistics.mean(off))
        out.append((label, repo, f"{len(off)} / {len(ours)}", mean_std(off), mean_std(ours), f"{d:+.1f}", status(d),
                    "ptm_baselines.md"))
    heads = load("ptm_heads_runs.json")
    r = heads["ranpac"]
    off, ours = a_t(r["R_official"][-1], counts), a_t(r["R_clpeft"][-1], counts)
    out.append(("RanPAC head (same features)", "RanPAC/RanPAC@012927f", "1 / 1", f"{100 * off:.1f}", f"{100 * ours:.1f}",
                f"{100 * (ours - off):+.1f}", status(100 * (ours - off)), "ptm_baselines.md"))
    r = heads["aper_prototypes"]
    off, ours = a_t(r["R_official"][-1], counts), a_t(r["R_clpeft"][-1], counts)
    out.append(("APER prototypes (same features)", "zhoudw-zdw/RevisitingCIL@a2e6b71", "1 / 1", f"{100 * off:.1f}",
                f"{100 * ours:.1f}", f"{100 * (ours - off):+.1f}", status(100 * (ours - off)), "ptm_baselines.md"))
    r = heads["slca_alignment"]
    off = [a_t(row, counts) for row in r["official"]]
    ours = [a_t(row, counts) for row in r["clpeft"]]
    d = 100 * (statistics.mean(ours) - statistics.mean(off))
    out.append(("SLCA classifier alignment (same features)", "GengDavid/SLCA@169d4e6", f"{len(off)} / {len(ours)}",
                mean_std(off), mean_std(ours), f"{d:+.1f}", status(d), "ptm_baselines.md"))
    wa = load("wa_runs.json")
    off = [x["final_accuracy"] for x in wa["runs"] if x["side"] == "official"]
    ours = [x["final_accuracy"] for x in wa["runs"] if x["side"] == "clpeft"]
    d = 100 * (statistics.mean(ours) - statistics.mean(off))
    out.append(("WA (resnet32, PyCIL's schedule × 0.1)", "G-U-N/PyCIL@87cc411", f"{len(off)} / {len(ours)}",
                mean_std(off), mean_std(ours), f"{d:+.1f}", status(d), "wa.md"))
    out += [runs_row(*row) for row in (("inflora", "InfLoRA (end to end)", "inflora.md"),
                                       ("sd_lora", "SD-LoRA (end to end)", "sd_lora.md")) if has_runs(row[0])]
    if (HERE / "inflora_subspace_runs.json").exists():
        sub = load("inflora_subspace_runs.json")
        rows_ = [r for seed in sub["seeds"].values() for r in seed["rows"]]
        same = all(r["dim_official"] == r["dim_clpeft"] and r["kind_official"] == r["kind_clpeft"] for r in rows_)
        worst = max(max(r["basis_angle"] or 0.0, r["A_angle"]) for r in rows_)
        out.append(("InfLoRA subspace memory and design of A (same inputs)", "liangyanshuo/InfLoRA@e08b00e",
                    f"same Gram matrices, {len(sub['seeds'])} runs", "—", "—",
                    f"dimensions and kinds {'equal' if same else 'DIFFER'}, max angle {worst:.1e} rad",
                    "equal" if same and worst < 1e-5 else "open", "inflora.md"))
    lame = load("lame_runs.json")
    worst = max(row["max_abs_diff"] for d_ in lame.values() for row in d_["rows"])
    flips = sum(row["argmax_disagreements"] for d_ in lame.values() for row in d_["rows"])
    out.append(("LAME (kNN, rbf, linear; batches 16/64/256)", "fiveai/LAME@d2e5f63", "same inputs, 4 models",
                "—", "—", f"max \\|ΔY\\| {worst:.1e}, {flips} argmax flips",
                "within float32 round-off", "lame.md"))
    out += [runs_row(*row) for row in (
        ("slca", "SLCA (end to end, slow learner + alignment)", "slca_end_to_end.md"),
        ("lae_adapter", "LAE × Adapter", "lae.md"), ("lae_lora", "LAE × LoRA", "lae.md"),
        ("lae_prefix", "LAE × Prefix", "lae.md"), ("exssnet_e1", "ExSSNeT task-IL (1 + 1 epochs)", "exssnet.md"),
        ("exssnet", "ExSSNeT task-IL (20 + 20 epochs)", "exssnet.md"),
        ("ease", "EASE (end to end, lr 0.01, 5 epochs)", "ease.md"),
        ("ease_lr", "EASE (end to end, lr 0.05, 10 epochs)", "ease.md"),
        ("mos", "MOS (end to end, lr 0.01, 5 epochs)", "mos.md"),
        ("mos_lr", "MOS (end to end, lr 0.03, 10 epochs)", "mos.md"),
        ("hide", "HiDe-Prompt (end to end, both programs)", "hide_prompt.md")) if has_runs(row[0])]
    if has_runs("hide") and has_runs("hide_permute"):  # the official code with its prompt layout fixed, vs clpeft's
        fixed = [x["final_accuracy"] for x in load("hide_permute_runs.json")["runs"]]
        ours = [x["final_accuracy"] for x in load("hide_runs.json")["runs"] if x["side"] == "clpeft"]
        d = 100 * (statistics.mean(ours) - statistics.mean(fixed))
        out.append(("HiDe-Prompt, official prompt layout permuted (each sample its own prompt)",
                    load("hide_permute_runs.json")["official"], f"{len(fixed)} / {len(ours)}", mean_std(fixed),
                    mean_std(ours), f"{d:+.1f}", status(d, None), "hide_prompt.md"))
    if (HERE / "mos_trace.json").exists():
        trace = load("mos_trace.json")
        worst = max(e["adapter_gap"] for e in trace["events"])
        feats = max(e.get("feature_gap", e.get("logit_gap", 0.0)) for e in trace["events"])
        out.append(("MOS adapter averaging as run (two-task trace, same weights)", trace["official"].split(" ")[0],
                    f"same inputs, {len(trace['events'])} events", "—", "—",
                    f"max \\|Δ adapter\\| {worst:.1e}, max \\|Δ logits or features\\| {feats:.1e}",
                    "equal" if worst < 1e-6 and feats < 1e-4 else "open", "mos.md"))
    if (HERE / "jare_runs.json").exists():
        jare = load("jare_runs.json")
        same = sum(r["retrieval"]["same_slots"] for r in jare["runs"])
        batches = sum(r["retrieval"]["test_batches"] for r in jare["runs"])
        mix = max(r["mixing"]["max_abs_projection_output_difference"] for r in jare["runs"])
        key = max(f["max_abs_key_difference"] for r in jare["runs"] for f in r["key_fitting"])
        out.append(("JARe key fitting, retrieval and mixing (same queries)", jare["official"],
                    f"same inputs, {len(jare['runs'])} runs", "—", "—",
                    f"same slots {same}/{batches} batches, max \\|Δ mixed output\\| {mix:.1e}, max \\|Δ key\\| {key:.1e}",
                    "equal" if same == batches and mix < 1e-4 else "open", "jare.md"))
    out.append(("ExSSNeT class-IL", "prateeky2806/exessnet@1e768f8", "—", "—", "—", "—",
                "not comparable: the official vision code evaluates with the task given (adaptor gt)", "exssnet.md"))
    return out


def main():
    lines = ["# Parity ledger: every method against its official code",
             "",
             "Generated by `python reports/parity/ledger.py` from the run files in this folder: every number is read from a",
             "committed run, never typed. Stream: the shared digits stream (scikit-learn digits, stratified 80/20 split with",
             "random_state 0, 8×8 → 32×32 bilinear, 5 experiences × 2 classes, order 0..9); same backbone weights on both",
             "sides where one is pretrained. A_T in % (sample-weighted accuracy on all classes after the last experience),",
             "mean ± std over seeds; Δ = clpeft − official. Each page linked in the last column gives both sides' commands,",
             "the thread count and what differs.",
             "",
             "| method | official code | seeds (official / clpeft) | official A_T | clpeft A_T | Δ | status | record |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows():
        lines.append("| " + " | ".join(row[:-1]) + (f" | [{row[-1]}]({row[-1]}) |" if row[-1] != "—" else " | — |"))
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""One seed of every strategy on digits_b0_inc2 at the committed tables' settings: results.json per run."""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
from clpeft.config import load_scenario, resolve
from clpeft.run import run

out = Path(sys.argv[1])
only = set(sys.argv[2:])
sc = load_scenario("digits_b0_inc2")
LENET = {"model": {"backbone": "lenet", "pretrained": False}, "train": {"lr": 0.001, "epochs": 5}}
RESNET = {"model": {"backbone": "resnet32", "pretrained": False}, "train": {"lr": 0.001, "epochs": 10}}
runs = {
    "finetune": dict(strategy="finetune"),
    "finetune_adapter_lame": dict(strategy="finetune", pet="adapter", tta="lame", overrides={"train": {"eval_batch_size": 64}}),
    "joint": dict(strategy="joint"),
    "linear_probe": dict(strategy="linear_probe"),
    "prototype": dict(strategy="prototype"),
    "ewc_lame": dict(strategy="ewc", tta="lame", overrides={"train": {"eval_batch_size": 64}}),
    "lwf": dict(strategy="lwf"),
    "replay": dict(strategy="replay"),
    "lae_adapter": dict(strategy="lae", pet="adapter"),
    "lae_lora": dict(strategy="lae", pet="lora"),
    "lae_prefix": dict(strategy="lae", pet="prefix"),
    "lae_prompt": dict(strategy="lae", pet="prompt"),
    "lae_extras": dict(strategy="lae", pet="adapter", overrides={"options": {"ema_per_experience": 0.5, "align_heads": True}}),
    "wa_adapter": dict(strategy="wa", pet="adapter"),
    "wa_resnet": dict(strategy="wa", pet="none", overrides={**RESNET, "options": {"align": True}}),
    "jare": dict(strategy="jare"),
    "jare_batch_grouped": dict(strategy="jare", overrides={"options": {"retrieval": "batch"}, "stream": {"eval_order": "class_grouped"}}),
}
lenet_sc = load_scenario("digits_b0_inc2")
lenet_sc["pets"]["supermask"] = {"sparsity_kept": 0.1, "signed_constant": True}
vit_sc = load_scenario("digits_b0_inc2")
vit_sc["pets"]["supermask"] = {"sparsity_kept": 0.5}
special = {
    "exssnet_lenet": (lenet_sc, dict(strategy="exssnet", pet="supermask", overrides=LENET)),
    "exssnet_kkt_lenet": (lenet_sc, dict(strategy="exssnet", pet="supermask", overrides={**LENET, "options": {"kkt": "best"}})),
    "ssnet_lenet": (lenet_sc, dict(strategy="ssnet", pet="supermask", overrides=LENET)),
    "supsup_lenet": (lenet_sc, dict(strategy="supsup", pet="supermask", overrides=LENET)),
    "exssnet_vit": (vit_sc, dict(strategy="exssnet", pet="supermask")),
}
items = [(k, sc, v) for k, v in runs.items()] + [(k, s, v) for k, (s, v) in special.items()]
for name, scen, kw in items:
    if only and name not in only:
        continue
    target = out / name
    if (target / "results.json").exists():
        continue
    config = resolve(scen, seed=0, **kw)
    r = run(config, out_dir=target)
    print(name, r["metrics"]["final_accuracy"], flush=True)

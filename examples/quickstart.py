"""The five-line script: a strategy, a PET module and a stream, from Python (one line per epoch as it trains)."""
from clpeft.config import load_scenario, resolve
from clpeft.run import run

config = resolve(load_scenario("digits_b0_inc2"), strategy="finetune", pet="lora", seed=0)
print(run(config, out_dir="runs/quickstart", progress=True, overwrite=True)["metrics"])

# Quick start: `make demo` (venv + install + the methods offline on digits + report), `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test demo fashion-mnist pretrain baselines lae lame wa exssnet jare jare-text pretrained-baselines gpu bench clean

$(STAMP): pyproject.toml constraints/ci.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints/ci.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n 2 --dist loadfile

demo: setup
	$(VENV)/bin/clpeft sweep examples/sweeps/demo.yaml --engine local

# Optional offline image stream from Debian (needs apt; the demo and the tests do not need it).
fashion-mnist:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST is installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "clpeft: Fashion-MNIST needs Debian's apt (package dataset-fashion-mnist); skip it or copy the IDX files and pass stream.root" >&2; exit 2; fi

# Re-create the bundled ViT weights (deterministic; ~20 min on 2 cores).
pretrain: setup fashion-mnist
	$(VENV)/bin/clpeft pretrain --epochs 6 --seed 0

# The committed tables in reports/ (3 seeds each, CPU): one sweep file per table in examples/sweeps.
SWEEP := $(VENV)/bin/clpeft sweep --engine local

baselines: setup
	$(SWEEP) examples/sweeps/baselines.yaml

lae: setup
	$(SWEEP) examples/sweeps/lae.yaml

lame: setup
	$(SWEEP) examples/sweeps/lame.yaml

wa: setup
	$(SWEEP) examples/sweeps/wa.yaml

exssnet: setup
	$(SWEEP) examples/sweeps/exssnet.yaml

jare: setup
	$(SWEEP) examples/sweeps/jare.yaml

jare-text: setup
	$(SWEEP) examples/sweeps/jare_text.yaml

pretrained-baselines: setup
	$(SWEEP) examples/sweeps/pretrained_baselines.yaml

# On a GPU machine: the digits table on cuda, fp32 and bf16 (reports/gpu), and the CUDA tests.
gpu: setup
	$(PY) -m pytest tests/test_cuda.py
	$(VENV)/bin/clpeft sweep examples/sweeps/gpu.yaml

bench: setup
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pet_overhead.py
	$(PY) benchmarks/lae_cost.py
	$(PY) benchmarks/lame_cost.py
	$(PY) benchmarks/exssnet_cost.py
	$(PY) benchmarks/jare_cost.py
	$(PY) benchmarks/sweep_scaling.py
	$(PY) benchmarks/cli_latency.py
	$(PY) benchmarks/prompt_pool_cost.py
	$(PY) benchmarks/class_stats_cost.py

clean:
	rm -rf runs

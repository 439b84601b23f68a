# Quick start: `make demo` (venv + install + offline demo run + report), `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test demo fashion-mnist pretrain baselines lae lame wa exssnet jare gpu bench clean

$(STAMP): pyproject.toml constraints/ci.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints/ci.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) examples/demo.py --out runs/demo

# Optional offline image stream from Debian (needs apt; the demo and the tests do not need it).
fashion-mnist:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST is installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "clpeft: Fashion-MNIST needs Debian's apt (package dataset-fashion-mnist); skip it or copy the IDX files and pass stream.root" >&2; exit 2; fi

# Re-create the bundled ViT weights (deterministic; ~20 min on 2 cores).
pretrain: setup fashion-mnist
	$(VENV)/bin/clpeft pretrain --epochs 6 --seed 0

# The committed baseline table in reports/baselines (3 seeds x 4 baselines x 2 offline streams).
baselines: setup
	$(PY) examples/baselines.py --out runs/baselines --report reports/baselines

# Method tables in reports/ (3 seeds each, CPU).
lae: setup
	$(PY) examples/lae_table.py

lame: setup
	$(PY) examples/lame_table.py

wa: setup
	$(PY) examples/wa_table.py

exssnet: setup
	$(PY) examples/exssnet_table.py

jare: setup
	$(PY) examples/jare_table.py
	$(PY) examples/jare_table.py --scenario fortunes_b0_inc2 --out runs/jare_text --report reports/jare_text --variants 2

# On a GPU machine: the digits table on cuda, fp32 and bf16 (reports/gpu), and the CUDA tests.
gpu: setup
	$(PY) -m pytest tests/test_cuda.py
	$(PY) examples/gpu_table.py

bench: setup
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pet_overhead.py
	$(PY) benchmarks/lae_cost.py
	$(PY) benchmarks/lame_cost.py
	$(PY) benchmarks/exssnet_cost.py
	$(PY) benchmarks/jare_cost.py
	$(PY) benchmarks/sweep_scaling.py

clean:
	rm -rf runs

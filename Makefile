# Quick start: `make demo` (venv + install + the methods offline on digits + report), `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test demo fashion-mnist pretrain baselines lae lame wa exssnet jare jare-text lora-tier expansion-tier bank-budget long-streams pretrained-baselines parity-inflora parity-sd-lora parity-slca parity-lae parity-exssnet parity-jare parity-ease parity-mos parity-hide tune-example gpu bench clean

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

lora-tier: setup
	$(SWEEP) examples/sweeps/lora_tier.yaml

expansion-tier: setup
	$(SWEEP) examples/sweeps/expansion_tier.yaml

bank-budget: setup
	OMP_NUM_THREADS=1 $(SWEEP) examples/sweeps/bank_budget.yaml
	$(PY) reports/bank_budget/cost_of_budget.py runs/bank_budget > reports/bank_budget/cost_of_budget.md

# long_synthetic, one process per method, every growing method over 100 experiences: finetune and the LoRA banks (with
# and without a budget) 8-20 min each on 2 cores, JARe 45 min; HiDe-Prompt, ExSSNeT, EASE and MOS 1-2 hours each (CODA-Prompt
# and LAE under 10 min); CODA-Prompt, EASE and MOS also over 50 experiences of 4 classes
VIT_B16 := --set model.backbone=vit_base_patch16_224 --set model.pretrained=false \
  --set 'model.kwargs={img_size: 28, in_chans: 1}' --set train.epochs=1
long-streams: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods finetune inflora sd_lora
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods inflora --label inflora+budget10 --set train.bank_budget=10
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods sd_lora --label sd_lora+budget10 --set train.bank_budget=10
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods jare hide_prompt exssnet
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods coda_prompt ease mos lae
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods coda_prompt ease mos --experiences 50
	$(PY) benchmarks/long_stream_cost.py --figure
	# ViT-B/16 shapes, random weights: state and memory of the first 5 experiences
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods exssnet inflora jare ease hide_prompt --stop-after 5 \
	  --out reports/long_streams/vit_b16 $(VIT_B16)
	OMP_NUM_THREADS=1 $(PY) benchmarks/long_stream_cost.py --methods exssnet --label exssnet+bits --set pet.keep_scores=false \
	  --stop-after 5 --out reports/long_streams/vit_b16 $(VIT_B16)
	$(PY) benchmarks/long_stream_cost.py --growth reports/long_streams --out reports/long_streams/vit_b16

# Parity against the official code on the shared digits stream (reports/parity/): both sides, 5 seeds, 10 epochs
# (~20 min on 2 cores each). Needs the official repository extracted first (reports/parity/official/README.md):
# InfLoRA under /tmp/inflora (INFLORA=…), SD-LoRA under /tmp/sdlora (SDLORA=…; its code imports einops).
PARITY_SEEDS := 0 1 2 3 4
# $(1): the method (its shim is official/$(1)_official.py), $(2): its learning rate. Both sides for every seed, then
# the method's run file.
define parity_lora
	mkdir -p /tmp/parity_coda /tmp/parity_$(1) && $(PY) reports/parity/official/make_weights.py
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/$(1)_official.py --seed $$s --epochs 10 --lr $(2) \
	    --out /tmp/parity_$(1)/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_lora_side.sh $$s 10 /tmp/parity_$(1)/clpeft_s$$s $(1) \
	  || exit 1; done
	$(PY) reports/parity/summarise_runs.py $(1) /tmp/parity_$(1) > reports/parity/$(1)_runs.json
endef

parity-inflora: setup
	$(call parity_lora,inflora,0.002)
	OMP_NUM_THREADS=1 $(PY) reports/parity/official/inflora_subspace.py --seeds 0 1 2 --out reports/parity/inflora_subspace_runs.json
	$(PY) reports/parity/lora_pages.py && $(PY) reports/parity/ledger.py

parity-sd-lora: setup
	$(call parity_lora,sd_lora,0.008)
	$(PY) reports/parity/lora_pages.py && $(PY) reports/parity/ledger.py

# The founding methods and SLCA end to end (reports/parity/{slca_end_to_end,lae,exssnet,jare}.md). Official code
# under /tmp/slca, /tmp/lae, /tmp/exessnet and /tmp/slm (reports/parity/official/README.md); LAE's side runs in its
# own Python 3.10 environment, LAE_PY (official/lae_requirements.txt).
LAE_PY ?= /tmp/lae_env/bin/python
FOUNDING_PAGES = $(PY) reports/parity/founding_pages.py && $(PY) reports/parity/ledger.py

parity-slca: setup
	mkdir -p /tmp/parity_coda /tmp/parity_slca && $(PY) reports/parity/official/make_weights.py
	OMP_NUM_THREADS=1 $(PY) reports/parity/official/slca_end_to_end.py --check-features | tail -1 > /tmp/parity_slca/feature_check.json
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/slca_end_to_end.py --seed $$s --out /tmp/parity_slca/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_slca_side.sh $$s /tmp/parity_slca/clpeft_s$$s || exit 1; done
	$(PY) reports/parity/summarise_runs.py slca /tmp/parity_slca > reports/parity/slca_runs.json
	$(FOUNDING_PAGES)

parity-lae: setup
	mkdir -p /tmp/parity_coda /tmp/parity_lae && $(PY) reports/parity/official/make_weights.py
	for pet in adapter lora prefix; do for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(LAE_PY) reports/parity/official/lae_official.py --pet $$pet --seed $$s \
	    --out /tmp/parity_lae/official_$${pet}_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_lae_side.sh $$s $$pet /tmp/parity_lae/clpeft_$${pet}_s$$s \
	  || exit 1; done; \
	  $(PY) reports/parity/summarise_runs.py lae_$$pet /tmp/parity_lae $${pet}_ > reports/parity/lae_$${pet}_runs.json; done
	$(FOUNDING_PAGES)

parity-exssnet: setup
	mkdir -p /tmp/parity_exssnet /tmp/parity_exssnet_e1
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/exssnet_official.py --seed $$s --out /tmp/parity_exssnet/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_exssnet_side.sh $$s /tmp/parity_exssnet/clpeft_s$$s && \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/exssnet_official.py --seed $$s --epochs 1 --weight-epochs 1 \
	    --out /tmp/parity_exssnet_e1/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_exssnet_side.sh $$s /tmp/parity_exssnet_e1/clpeft_s$$s 1 1 \
	  || exit 1; done
	$(PY) reports/parity/summarise_runs.py exssnet /tmp/parity_exssnet > reports/parity/exssnet_runs.json
	$(PY) reports/parity/summarise_runs.py exssnet_e1 /tmp/parity_exssnet_e1 > reports/parity/exssnet_e1_runs.json
	$(FOUNDING_PAGES)

# EASE (expansion tier), official code under /tmp/ease (sun-hailong/CVPR24-Ease; reports/parity/ease.md)
parity-ease: setup
	mkdir -p /tmp/parity_coda /tmp/parity_ease /tmp/parity_ease_lr && $(PY) reports/parity/official/make_weights.py
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/ease_official.py --seed $$s --epochs 5 --lr 0.01 --bottleneck 64 \
	    --out /tmp/parity_ease/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_ptm_side.sh $$s 5 /tmp/parity_ease/clpeft_s$$s ease 0.01 \
	  || exit 1; done
	for s in 0 1 2; do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/ease_official.py --seed $$s --epochs 10 --lr 0.05 --bottleneck 64 \
	    --out /tmp/parity_ease_lr/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_ptm_side.sh $$s 10 /tmp/parity_ease_lr/clpeft_s$$s ease 0.05 \
	  || exit 1; done
	$(PY) reports/parity/summarise_runs.py ease /tmp/parity_ease > reports/parity/ease_runs.json
	$(PY) reports/parity/summarise_runs.py ease_lr /tmp/parity_ease_lr > reports/parity/ease_lr_runs.json
	$(FOUNDING_PAGES)

# MOS (expansion tier), official code under /tmp/mos (sun-hailong/AAAI25-MOS; reports/parity/mos.md)
parity-mos: setup
	mkdir -p /tmp/parity_coda /tmp/parity_mos /tmp/parity_mos_lr && $(PY) reports/parity/official/make_weights.py
	OMP_NUM_THREADS=1 $(PY) reports/parity/official/mos_trace.py --out reports/parity/mos_trace.json
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/mos_official.py --seed $$s --epochs 5 --lr 0.01 --bottleneck 16 \
	    --out /tmp/parity_mos/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_ptm_side.sh $$s 5 /tmp/parity_mos/clpeft_s$$s mos 0.01 16 \
	  || exit 1; done
	for s in 0 1 2; do \
	  OMP_NUM_THREADS=1 $(PY) reports/parity/official/mos_official.py --seed $$s --epochs 10 --lr 0.03 --bottleneck 16 \
	    --out /tmp/parity_mos_lr/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_ptm_side.sh $$s 10 /tmp/parity_mos_lr/clpeft_s$$s mos 0.03 16 \
	  || exit 1; done
	$(PY) reports/parity/summarise_runs.py mos /tmp/parity_mos > reports/parity/mos_runs.json
	$(PY) reports/parity/summarise_runs.py mos_lr /tmp/parity_mos_lr > reports/parity/mos_lr_runs.json
	$(FOUNDING_PAGES)

# HiDe-Prompt (expansion tier), official code under /tmp/hide (thu-ml/HiDe-Prompt; reports/parity/hide_prompt.md) in its
# own environment: ~/.pyenv/versions/3.10.13/bin/python -m venv /tmp/hide_env && /tmp/hide_env/bin/pip install -r
# reports/parity/official/hide_requirements.txt
HIDE_PY ?= /tmp/hide_env/bin/python
parity-hide: setup
	mkdir -p /tmp/parity_coda /tmp/parity_hide /tmp/parity_hide_permute && $(PY) reports/parity/official/make_weights.py
	for s in $(PARITY_SEEDS); do \
	  OMP_NUM_THREADS=1 $(HIDE_PY) reports/parity/official/hide_official.py --seed $$s --epochs 10 --tii-epochs 20 \
	    --out /tmp/parity_hide/official_s$$s.json && \
	  OMP_NUM_THREADS=1 PYTHON=$(PY) reports/parity/official/clpeft_hide_side.sh $$s 10 20 /tmp/parity_hide/clpeft_s$$s \
	  || exit 1; done
	for s in 0 1 2; do \
	  OMP_NUM_THREADS=1 $(HIDE_PY) reports/parity/official/hide_official.py --seed $$s --epochs 10 --tii-epochs 20 \
	    --layout permute --out /tmp/parity_hide_permute/official_s$$s.json || exit 1; done
	$(PY) reports/parity/summarise_runs.py hide /tmp/parity_hide > reports/parity/hide_runs.json
	$(PY) reports/parity/summarise_runs.py hide_permute /tmp/parity_hide_permute > reports/parity/hide_permute_runs.json
	$(FOUNDING_PAGES)

parity-jare: setup
	OMP_NUM_THREADS=1 $(PY) reports/parity/official/jare_retrieval.py --seeds 0 1 2 --out reports/parity/jare_runs.json
	$(FOUNDING_PAGES)

# Tune on one stream, report on another (reports/tuning/): LAE, EWC and LwF searched on digits (8 trials each on Ray
# Tune), reported on mnist5k under a class order no search saw, next to the scenario defaults (~25 min on 2 cores).
TUNE_EXAMPLES = lae ewc lwf
tune-example: setup
	for t in $(TUNE_EXAMPLES); do $(PY) -m clpeft tune examples/tune/$$t.yaml || exit 1; done
	mkdir -p reports/tuning/tuned
	for t in $(TUNE_EXAMPLES); do cp runs/tune/$$t/tune.json reports/tuning/$$t.tune.json && cp runs/tune/$$t/tuned/*.yaml reports/tuning/tuned/; done
	$(PY) -m clpeft report $(foreach t,$(TUNE_EXAMPLES),runs/tune/$(t)/report_runs) -o reports/tuning \
	  --title "Tuned on digits, reported on mnist5k (class order 2027), next to the defaults"

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
	$(PY) benchmarks/lora_tier_cost.py

clean:
	rm -rf runs

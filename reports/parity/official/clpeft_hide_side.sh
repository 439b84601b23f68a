#!/bin/bash
# clpeft's side of the HiDe-Prompt parity: the official programs' settings on the shared digits stream (batch 32: the
# router at Adam 0.0005 × 32/256, constant, its TAP at 0.005 × 32/256; prompts of 5 + 5 tokens in blocks 0-4 and the
# head (× 0.1) at Adam 0.03 × 32/256, no weight decay, gradients clipped at 1; TAP 30 epochs at 0.005 on 32 samples
# per centroid, 10 centroids per class; prompt momentum 0.01, contrastive weight 0.1; the head drawn as timm's)
seed=$1; epochs=${2:-10}; router_epochs=${3:-20}; out=$(realpath -m "$4")
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits32_b0_inc2 --strategy hide_prompt --seed $seed --quiet \
  --set train.optimizer=adam --set train.lr=0.00375 --set train.weight_decay=0.0 --set train.batch_size=32 \
  --set train.epochs=$epochs --set train.schedule=constant --set train.drop_last=false --set train.grad_clip_norm=1.0 \
  --set model.head_init_std=0.02 --option length=10 --option router_epochs=$router_epochs \
  --option router_lr=0.0000625 --option router_ca_lr=0.000625 --option ca_lr=0.005 --option ca_samples=32 \
  --out $out --overwrite

#!/bin/bash
# clpeft's side of the LAE parity: the official CIFAR-100 settings (config/base/cifar100_order1.yaml and
# config/vit_<pet>.yaml: Adam 0.0028125 constant, batch 24 with drop_last, 5 epochs with the PET frozen for the first
# 3 from task 1 on, EMA 0.9999 per step, heads N(0, 0.001²), PETs in blocks 0-4) on the shared digits stream
seed=$1; pet=$2; out=$(realpath -m "$3"); epochs=${4:-5}
case $pet in
  adapter) pet_set=(--set pet.bottleneck=5 --set pet.position=attn) ;;
  lora) pet_set=(--set pet.rank=5 --set pet.kv_only=true) ;;
  prefix) pet_set=(--set pet.length=10 --set pet.compensatory=true) ;;
esac
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits32_b0_inc2 --strategy lae --pet $pet --seed $seed --quiet \
  --set "pet.blocks=[0,1,2,3,4]" "${pet_set[@]}" --set train.optimizer=adam --set train.lr=0.0028125 \
  --set train.weight_decay=0.0 --set train.batch_size=24 --set train.drop_last=true --set train.schedule=constant \
  --set train.epochs=$epochs --set model.head_init_std=0.001 --option ema_decay=0.9999 --option pet_warmup_epochs=3 \
  --out $out --overwrite

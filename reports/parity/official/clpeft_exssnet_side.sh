#!/bin/bash
# clpeft's side of the ExSSNeT parity: the official vision settings (LeNet-300-100 from scratch, signed-constant
# weights, 10 % kept, Adam, batch 64, exclusive weight masks) on the shared digits split at LeNet's 28x28, classes in
# the order 0..9. Both phases at the official code's effective rate: with weight epochs > 0 it trains the masks at
# --train-weight-lr too (utils/my_utils.get_optim_and_scheduler).
seed=$1; out=$(realpath -m "$2"); epochs=${3:-20}; weight_epochs=${4:-20}; lr=${5:-0.001}
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits_b0_inc2 --strategy exssnet --pet supermask --seed $seed --quiet \
  --set model.backbone=lenet --set model.pretrained=false --set stream.class_order_seed=null \
  --set pet.sparsity_kept=0.1 --set pet.signed_constant=true --set train.optimizer=adam --set train.lr=$lr \
  --set train.weight_decay=0.0 --set train.epochs=$epochs --set train.batch_size=64 \
  --option weight_epochs=$weight_epochs --option mask_lr=$lr --option weight_lr=$lr --out $out --overwrite

#!/bin/bash
# clpeft's side of the SLCA end-to-end parity: the official code's settings (exps/slca/slca_cifar.json and the
# module constants of models/slca.py) on the shared digits stream, full fine-tuning (no PET) as the official code
seed=$1; out=$(realpath -m "$2"); epochs=${3:-20}; milestone=${4:-18}
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits32_b0_inc2 --strategy slca --pet none --seed $seed --quiet \
  --set train.optimizer=sgd --set train.lr=0.01 --set train.momentum=0.9 --set train.weight_decay=0.0005 \
  --set train.epochs=$epochs --set train.schedule=constant --set train.drop_last=false --set train.batch_size=128 \
  --set model.head_init_std=0.02 --option "milestones=[$milestone]" --option ca_epochs=5 --option ca_tau=0.1 \
  --option backbone_lr_scale=0.01 --out $out --overwrite

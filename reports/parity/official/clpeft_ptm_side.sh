#!/bin/bash
# clpeft's side of the RanPAC, APER, EASE and MOS end-to-end parity: the official code's settings on the shared digits
# stream (MOS: its head drawn as timm draws a new classifier, std 0.02, and test batches of the training batch size,
# as its evaluation loader: every evaluation forward moves the stored adapters)
seed=$1; epochs=${2:-10}; out=$(realpath -m "$3"); strategy=${4:-ranpac}; lr=${5:-0.01}; bottleneck=${6:-64}
extra=()
if [ "$strategy" = ranpac ]; then extra=(--option projection=2000); fi
if [ "$strategy" = mos ]; then extra=(--set model.head_init_std=0.02 --set train.eval_batch_size=32); fi
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits32_b0_inc2 --strategy $strategy --pet adapter --seed $seed --quiet \
  --set train.optimizer=sgd --set train.lr=$lr --set train.momentum=0.9 --set train.weight_decay=0.0005 \
  --set train.epochs=$epochs --set train.schedule=cosine --set train.drop_last=false --set train.batch_size=32 \
  --set pet.blocks=null --set pet.position=mlp_residual --set pet.bottleneck=$bottleneck --set pet.activation=relu \
  --set pet.dropout=0.1 --set pet.scale=0.1 "${extra[@]}" --out $out --overwrite

#!/bin/bash
# clpeft's side of the WA parity: PyCIL's WA settings (resnet32 from scratch, SGD 0.1 momentum 0.9, batch 128,
# weight decay 5e-4 then 2e-4, MultiStepLR ×0.1, 200 exemplars, herding, KD T = 2) on the shared digits stream,
# epochs and milestones scaled by $2 (1.0 = PyCIL's 200/170 epochs, milestones 60/120/170 and 60/100/140).
seed=$1; scale=${2:-1.0}; out=$(realpath -m "$3")
cd "$(dirname "$0")/../../.."   # the repository root
PY="${PYTHON:-.venv/bin/python}"
read first later m0 m1 <<<"$("$PY" -c "
s=$scale; r=lambda v: max(1, round(v*s))
print(r(200), r(170), ','.join(str(r(m)) for m in (60,120,170)), ','.join(str(r(m)) for m in (60,100,140)))")"
"$PY" -m clpeft run digits32_b0_inc2 --strategy wa --backbone resnet32 --seed $seed --quiet \
  --set model.pretrained=false --set train.optimizer=sgd --set train.lr=0.1 --set train.momentum=0.9 \
  --set train.weight_decay=0.0002 --set train.batch_size=128 --set train.drop_last=false --set train.schedule=constant \
  --set train.epochs=$later --option first_epochs=$first --option first_weight_decay=0.0005 \
  --option "first_milestones=[$m0]" --option "milestones=[$m1]" --option memory_size=200 --out $out --overwrite

#!/bin/bash
# clpeft's side of the InfLoRA / SD-LoRA parity: digits32_b0_inc2's entry for the method (the official optimisation
# on the shared digits stream, LoRAs of rank 10 in every block), at the given seed and epochs
seed=$1; epochs=${2:-10}; out=$(realpath -m "$3"); strategy=${4:-inflora}
cd "$(dirname "$0")/../../.."   # the repository root
"${PYTHON:-.venv/bin/python}" -m clpeft run digits32_b0_inc2 --strategy $strategy --seed $seed --quiet \
  --set train.epochs=$epochs --out $out --overwrite

#!/usr/bin/env bash
# usage: bash scripts/eval_base.sh BASE TAG [STEPS]  — 3 LoRAs on 20 real HC18 pairs per trimester (train pool), report with QC
# SEL=K draws the 20 pairs with selection seed K (default 0): the first trimester's valid rate and head size
# depend on the draw (2026-11-27, T1, seeds 1000+3000: 60/64, 51/64, 56/64 valid for draws 0/1/2), so judge a
# base on more than one draw.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1; TAG=$2; STEPS=${3:-300}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
for T in first second third; do
  .venv/bin/python -m pipeline train-lora --data hc18:../shared/data/hc18 --trimester $T --steps $STEPS --selection-seed ${SEL:-0} \
     --preview-every 0 --pool train --base $BASE --out outputs/eval/$TAG/lora-$T 2>&1 | grep -v Warn | tail -2
done
.venv/bin/python -m pipeline.diffusion.report --base $BASE --lora first=outputs/eval/$TAG/lora-first \
  --lora second=outputs/eval/$TAG/lora-second --lora third=outputs/eval/$TAG/lora-third \
  --real hc18:../shared/data/hc18 --n 32 --qc --out outputs/eval/$TAG/samples.png --json outputs/eval/$TAG/report.json --save outputs/eval/$TAG/gen --paper ../shared/reference/paper_synthetic 2>&1 | grep -v Warn | tail -5
# realism per trimester (KID x1000 and classifier AUC vs real images of the trimester the LoRA did not train on)
for T in first second third; do
  .venv/bin/python -m pipeline realism --generated outputs/eval/$TAG/gen/$T/raw --real hc18:../shared/data/hc18 \
     --trimester $T --exclude-lora outputs/eval/$TAG/lora-$T --json > outputs/eval/$TAG/realism-$T.json 2> outputs/eval/$TAG/realism-$T.err
  .venv/bin/python -c "import json,sys; j=json.load(open(sys.argv[1])); g=j['generated_vs_real']; print(sys.argv[2], 'KID x1000', g['kid_x1000'], '+-', g['kid_x1000_std'], 'AUC', g['auc'])" outputs/eval/$TAG/realism-$T.json $T
done

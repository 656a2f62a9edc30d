#!/usr/bin/env bash
# usage: bash scripts/eval_guidance.sh BASE LORA_PREFIX G [G ...]
#   e.g. bash scripts/eval_guidance.sh assets/tiny-base outputs/eval/gpu4/lora- 1.5 2 3
# For each guidance G: 32 samples per trimester (seeds 1000-1031) with the LoRAs LORA_PREFIX{first,second,third}
# (train them with scripts/eval_base.sh), the report with QC and head size, then the realism per trimester
# (KID x1000 and classifier AUC vs real images the LoRA did not see). Writes outputs/eval/guidance-G/
# (or $EVAL_OUT-G/, to keep two bases' runs apart). SEED=S draws seeds S..S+31 instead (a confirmation on new seeds).
# ELLIPSE=off or ELLIPSE=0.2,0.4,0.6 sets the ellipse guidance, UNTIL=F the share of the steps with
# classifier-free guidance (default: the base's own for both).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1; L=$2; shift 2
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
for G in "$@"; do
  TAG=${EVAL_OUT:-outputs/eval/guidance}-$G
  mkdir -p $TAG
  .venv/bin/python -m pipeline.diffusion.report --base $BASE --lora first=${L}first --lora second=${L}second \
    --lora third=${L}third --guidance $G --seed ${SEED:-1000} ${ELLIPSE:+--ellipse-guidance "$ELLIPSE"} ${UNTIL:+--guidance-until "$UNTIL"} --real hc18:../shared/data/hc18 --n 32 --qc \
    --json $TAG/report.json --save $TAG/gen > $TAG/report.log 2>&1
  for T in first second third; do
    .venv/bin/python -m pipeline realism --generated $TAG/gen/$T/raw --real hc18:../shared/data/hc18 \
       --trimester $T --exclude-lora ${L}$T --json > $TAG/realism-$T.json 2> $TAG/realism-$T.err
  done
  .venv/bin/python - $TAG $G <<'PY'
import json, sys
tag, g = sys.argv[1], sys.argv[2]
for tri, s in json.load(open(f"{tag}/report.json")).items():
    k = json.load(open(f"{tag}/realism-{tri}.json"))["generated_vs_real"]
    print(f"guidance {g} {tri}: valid {s['valid']}/{s['n']}, head {s.get('head_size_vs_real')}, "
          f"QC {s['mean_qc'] or 0:.3f}, KID x1000 {k['kid_x1000']}, AUC {k['auc']}, refusals {s['refusals']}")
PY
done

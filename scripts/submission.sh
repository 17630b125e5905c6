#!/usr/bin/env bash
# `make submission`: numbered stages, each reading only what the stage before it wrote.
#   DATASET=demo (default: generate the demo dataset) or mavceleb-v1|v2|v3 with ROOT=<dataset folder>
#   WORK=<folder for manifests, folds, caches, experiments>
set -euo pipefail

DATASET=${DATASET:-demo}
ROOT=${ROOT:-}
WORK=${WORK:-work/$DATASET}

if [ "$DATASET" = demo ]; then
  FVA_DATASET=mavceleb-v3
  ROOT=${ROOT:-data/demo}
  if [ ! -d "$ROOT" ]; then
    echo "== stage 1: demo dataset -> $ROOT"
    fva demo-data --out "$ROOT"
  else
    echo "== stage 1: demo dataset already at $ROOT"
  fi
else
  FVA_DATASET=$DATASET
  if [ -z "$ROOT" ]; then
    echo "make submission: DATASET=$DATASET needs ROOT=<its folder>, e.g. make submission DATASET=$DATASET ROOT=/data/$DATASET" >&2
    exit 2
  fi
fi

mkdir -p "$WORK"
echo "== stage 2: manifests -> $WORK"
fva manifest --dataset "$FVA_DATASET" --root "$ROOT" --subset train --out "$WORK/train.jsonl"
fva manifest --dataset "$FVA_DATASET" --root "$ROOT" --subset test --out "$WORK/test.jsonl"

echo "== stage 3: identity folds and dev trials -> $WORK/folds"
fva folds --manifest "$WORK/train.jsonl" --out "$WORK/folds"

if ! fva extract --help >/dev/null 2>&1; then
  echo "== stage 4: feature extraction is not part of this fva version yet ('fva extract' lands with the"
  echo "   extraction issue; head training and scoring follow it). Stopped after stage 3: manifests and"
  echo "   folds are in $WORK; no submission.zip was written."
  exit 0
fi
echo "make submission: 'fva extract' exists but this script has no stage for it yet; update scripts/submission.sh" >&2
exit 1

#!/usr/bin/env bash
# `make submission`: numbered stages, each reading only what the stage before it wrote.
#   DATASET=demo (default: generate the demo dataset) or mavceleb-v1|v2|v3 with ROOT=<dataset folder>;
#   DATASET=demo-v4 (the generated FLAG 2027 demo) or mavceleb-v4 with ROOT=<the FLAG download>: English-only
#   training (split full), both tracks' files scored by that model (English heard, Bangla unheard), a
#   FLAG-shaped zip (no_gender/ and gender/ with sub_score_v4_<Lang>_<heard|unheard>.txt)
#   WORK=<folder for manifests, folds, caches, experiments>
#   LISTS=<folder of MAV-Celeb's list files> (default: the root, else its face_voice_association_splits/<v>/)
#   WEIGHTS="--weights ENCODER=SOURCE ..." local copies of the encoders' weights
# On a real MAV-Celeb this is the reduced system: the public encoders (the voice age-gender ECAPA only when
# WEIGHTS names a trained one), no VoxCeleb2 pretraining, one weight set for every split. The last stage says,
# per file, which published condition it does not meet; recipes/fame2026/run.sh is the published system.
set -euo pipefail

DATASET=${DATASET:-demo}
ROOT=${ROOT:-}
WORK=${WORK:-work/$DATASET}

DEMO=""
case "$DATASET" in demo) DEMO=v3 ;; demo-v4) DEMO=v4 ;; esac
if [ -n "$DEMO" ]; then
  if [ "$DEMO" = v4 ]; then FVA_DATASET=mavceleb-v4; else FVA_DATASET=mavceleb-v3; fi
  ROOT=${ROOT:-data/$DATASET}
  if [ ! -d "$ROOT" ]; then
    echo "== stage 1: demo dataset ($DEMO layout) -> $ROOT"
    fva demo-data --variant "$DEMO" --out "$ROOT"
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
LISTS_ARG=()
[ -n "${LISTS:-}" ] && LISTS_ARG=(--lists "$LISTS")
fva manifest --dataset "$FVA_DATASET" --root "$ROOT" --subset train --out "$WORK/train.jsonl" "${LISTS_ARG[@]}"
fva manifest --dataset "$FVA_DATASET" --root "$ROOT" --subset test --out "$WORK/test.jsonl" "${LISTS_ARG[@]}"

echo "== stage 3: identity folds and dev trials -> $WORK/folds"
# NEGATIVES=same-gender: the dev lists written here are gender-controlled (FLAG 2027's gender track); train-head
# measures both kinds on v4 and selects on TRAIN_ARGS="--select-on same-gender" (default any)
fva folds --manifest "$WORK/train.jsonl" --out "$WORK/folds" --negatives "${NEGATIVES:-any}"

CACHE=${CACHE:-$WORK/cache}
if [ -n "$DEMO" ]; then
  CKPT=${CKPT:-data/demo-checkpoints}
  if [ ! -f "$CKPT/.complete" ]; then
    echo "== stage 4: demo checkpoints (seeded random weights in each source's real format) -> $CKPT"
    rm -rf "$CKPT"
    fva demo-checkpoints --out "$CKPT" && touch "$CKPT/.complete"
  else
    echo "== stage 4: demo checkpoints already at $CKPT"
  fi
  WEIGHTS=${WEIGHTS:-"--weights speaker-ecapa=$CKPT/speaker-ecapa --weights voice-age-gender-ecapa=$CKPT/voice-age-gender-ecapa --weights vggface=$CKPT/deepface/.deepface/weights/vgg_face_weights.pth --weights vit-age-gender=$CKPT/vit-age-gender"}
else
  echo "== stage 4: encoder weights from WEIGHTS='${WEIGHTS:-}' (default: each encoder's published source)"
  WEIGHTS=${WEIGHTS:-}
fi
# the encoders: the voice age-gender ECAPA only with a trained model (it is not published); FACE_ENCODERS="..."
# names other face encoders
FACE_ENCODERS=${FACE_ENCODERS:-vggface vit-age-gender}
case " $WEIGHTS " in
  *" voice-age-gender-ecapa="*|*"--weights=voice-age-gender-ecapa="*) VOICE_ENCODERS="speaker-ecapa voice-age-gender-ecapa" ;;
  *) VOICE_ENCODERS="speaker-ecapa"
     echo "   voice-age-gender-ecapa: no trained model in WEIGHTS (it is not published: 'fva train-encoder" \
          "age-gender' trains one; add --weights voice-age-gender-ecapa=DIR); the voice heads use speaker-ecapa alone" ;;
esac
ENCODERS="$VOICE_ENCODERS $FACE_ENCODERS"

echo "== stage 5: features of the train and test media -> $CACHE"
for subset in train test; do
  # shellcheck disable=SC2086  # WEIGHTS holds several options
  fva extract --manifest "$WORK/$subset.jsonl" --cache "$CACHE" --encoders "${ENCODERS// /,}" $WEIGHTS \
    ${EXTRACT_ARGS:-}
  for encoder in $ENCODERS; do
    fva cache validate "$CACHE/$FVA_DATASET/$subset-full/$encoder" --manifest "$WORK/$subset.jsonl"
  done
done

if [ "$FVA_DATASET" = mavceleb-v4 ]; then
  # the folder of the track folders, as the test manifest found it (its header's "lists")
  TRIALS=${LISTS:-$(head -1 "$WORK/test.jsonl" | sed 's|.*"lists": "\([^"]*\)".*|\1|')}
  SPLITS=full  # FLAG 2027 trains on English only: one model scores every file
else
  # the trial lists: LISTS, else the root, else MAV-Celeb's splits folder under it
  TRIALS=${LISTS:-$ROOT}
  if ! ls "$TRIALS"/*_test.txt >/dev/null 2>&1 && [ -d "$ROOT/face_voice_association_splits/${FVA_DATASET##*-}" ]; then
    TRIALS=$ROOT/face_voice_association_splits/${FVA_DATASET##*-}
  fi
  LANGS=$(cd "$TRIALS" && ls ./*_test.txt 2>/dev/null | sed 's|^\./||; s|_test\.txt$||')
  SPLITS="full $(for l in $LANGS; do echo "$l" | tr '[:upper:]' '[:lower:]'; done | sed 's/$/-unheard/')"
fi
# the demo's random-weight encoders need their own head settings (the shipped config demo: fva/configs/demo.yaml)
if [ -n "$DEMO" ]; then HEAD_CONFIG=${HEAD_CONFIG:-demo}; else HEAD_CONFIG=${HEAD_CONFIG:-fame2026}; fi
if [ "$HEAD_CONFIG" = fame2026 ]; then  # the published system over the encoders there are
  HEAD_CONFIG=$WORK/head.yaml
  printf 'model:\n  system: fame2026\nfeatures:\n  voice_encoders: [%s]\n  face_encoders: [%s]\n' \
    "${VOICE_ENCODERS// /, }" "${FACE_ENCODERS// /, }" > "$HEAD_CONFIG"
fi
echo "== stage 6: heads per fold for each training split ($HEAD_CONFIG) -> $WORK/exp"
for split in $SPLITS; do
  resume=""
  [ -f "$WORK/exp/$split/experiment.json" ] && resume="--resume"
  # folds in parallel, one lane per core (each with a share of the threads): faster for small heads
  fva train-head --fold all --cache "$CACHE" --dataset "$FVA_DATASET" --split "$split" --config "$HEAD_CONFIG" \
    --folds "$WORK/folds/folds.json" --exp "$WORK/exp/$split" --workers "${HEAD_WORKERS:-$(nproc)}" $resume ${TRAIN_ARGS:-}
done

PLAN=${PLAN:-$WORK/plan.yaml}
if [ ! -f "$PLAN" ]; then
  echo "== stage 7: default submission plan (as published) -> $PLAN"
  fva submission plan --trials "$TRIALS" --exp-root "$WORK/exp" --cache "$CACHE" --out "$PLAN"
fi

echo "== stage 8: submission.zip (scored, validated; EERs where ground truth exists)"
gt=""
ls "$TRIALS"/*_test_labels.txt >/dev/null 2>&1 && gt="--ground-truth $TRIALS"
# FLAG 2027: the organisers' <Lang>_test_<track>.txt (GROUND_TRUTH=DIR, default ROOT/ground_truth)
GT_DIR=${GROUND_TRUTH:-$ROOT/ground_truth}
[ "$FVA_DATASET" = mavceleb-v4 ] && ls "$GT_DIR"/*_test_*gender.txt >/dev/null 2>&1 && gt="--ground-truth $GT_DIR"
# shellcheck disable=SC2086
fva submission make --plan "$PLAN" --out submission.zip $gt

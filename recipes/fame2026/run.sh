#!/usr/bin/env bash
# The FAME 2026 winning system (Simic et al., arXiv 2512.04814) from the raw datasets to a submission, in
# numbered stages as WeSpeaker's run.sh: each stage reads only what an earlier stage wrote, skips the work it
# finished before (a marker per item under $WORK/.done/) and resumes what it had started (every fva command here
# resumes itself), and any range of stages runs alone:
#
#   recipes/fame2026/run.sh --config recipes/fame2026/conf/fame2026.yaml [--stage N] [--stop-stage M]
#
#   0  weights: local copies named in the config are checked, the others fetched (fva weights fetch)
#   1  LID labels for VoxCeleb2 (VoxLingua107 ECAPA, per-video vote)
#   2  speaker ECAPA on VoxCeleb2 without English and without German
#   3  voice age-gender ECAPA on CommonVoice: all languages, without English, without German
#   4  manifests (MAV-Celeb train/test, VoxCeleb2 dev with its language labels) and the identity folds
#   5  features per weight set (full: the public speaker ECAPA; <lang>-unheard: the encoders trained without
#      that language; the face encoders are the same for every set, extracted once and linked)
#   6  heads pretrained on VoxCeleb2 per set, dev EER on the MAV-Celeb folds (no fine-tuning)
#   7  fine-tuning per fold from the pretrained heads
#   8  the published selection -> submission.zip (validated; the four test EERs where ground truth exists),
#      and the dev EERs per stage and scenario
# Needs `fva` on the PATH (source .venv/bin/activate).
set -euo pipefail

# shellcheck source=recipes/common.sh
source "$(dirname "$0")/../common.sh"  # parse_options, run_stage, done_before, mark, launch, device_arg
parse_options 8 recipes/fame2026/conf/fame2026.yaml 2,20 "$@"
eval "$(fva recipe config "$config")"  # WORK, DATA_*, WEIGHTS_*, DEVICES_*, ENCODERS_FACE, HEADS_*, OPTIONS_*

SETS="full english-unheard german-unheard"
MAV=mavceleb-v3
CACHE=$WORK/cache
DONE=$WORK/.done
LID_TSV=$WORK/lid/vox2_lang.tsv
mkdir -p "$WORK" "$DONE"

lists_arg() { if [ -n "$DATA_MAVCELEB_LISTS" ]; then echo "--lists $DATA_MAVCELEB_LISTS"; fi; }
lang_of() { case "$1" in english-unheard) echo English ;; german-unheard) echo German ;; *) echo "" ;; esac; }

# the weights of each encoder in a weight set (stage 0's local copies or published sources, stages 2-3's models)
speaker_weights() { if [ "$1" = full ]; then echo "${WEIGHTS_SPEAKER_ECAPA:-speechbrain/spkrec-ecapa-voxceleb}";
                    else echo "$WORK/models/speaker-ecapa-$1"; fi; }
face_weights() {
  [ -n "$WEIGHTS_VGGFACE" ] && echo "--weights vggface=$WEIGHTS_VGGFACE"
  [ -n "$WEIGHTS_VIT_AGE_GENDER" ] && echo "--weights vit-age-gender=$WEIGHTS_VIT_AGE_GENDER"
  return 0
}

if run_stage 0; then
  echo "== stage 0: weights"
  fetch=""
  [ -z "$WEIGHTS_SPEAKER_ECAPA" ] && fetch="$fetch,speaker-ecapa"
  case ",$ENCODERS_FACE," in *,vggface,*) [ -z "$WEIGHTS_VGGFACE" ] && fetch="$fetch,vggface" ;; esac
  case ",$ENCODERS_FACE," in *,vit-age-gender,*) [ -z "$WEIGHTS_VIT_AGE_GENDER" ] && fetch="$fetch,vit-age-gender" ;; esac
  for local in "$WEIGHTS_SPEAKER_ECAPA" "$WEIGHTS_VGGFACE" "$WEIGHTS_VIT_AGE_GENDER" "$WEIGHTS_LID"; do
    if [ -n "$local" ] && [ ! -e "$local" ]; then echo "run.sh: $config names weights $local, which do not exist" >&2; exit 2; fi
  done
  [ -z "$WEIGHTS_LID" ] && fetch="$fetch,lid"
  if [ -n "$fetch" ]; then
    fva weights fetch --encoders "${fetch#,}"  # the published sources, each through its library's download
  else
    echo "   every weight is a local copy named in $config"
  fi
fi

if run_stage 1; then
  echo "== stage 1: VoxCeleb2 language labels -> $LID_TSV"
  if ! done_before lid; then
    mkdir -p "$(dirname "$LID_TSV")"
    # shellcheck disable=SC2046,SC2086
    fva lid --dataset voxceleb2 --root "$DATA_VOXCELEB2" --out "$LID_TSV" \
      ${WEIGHTS_LID:+--weights "$WEIGHTS_LID"} $(device_arg) $OPTIONS_LID
    mark lid
  fi
fi

if run_stage 2; then
  echo "== stage 2: speaker ECAPA on VoxCeleb2 without English, without German -> $WORK/models"
  for set in english-unheard german-unheard; do
    done_before "speaker-$set" && continue
    # shellcheck disable=SC2046,SC2086
    launch train-encoder speaker --dataset voxceleb2 --root "$DATA_VOXCELEB2" --split "$set" \
      --language-labels "$LID_TSV" --out "$WORK/models/speaker-ecapa-$set" --no-progress \
      ${DATA_NOISE:+--noise "$DATA_NOISE"} ${DATA_REVERB:+--reverb "$DATA_REVERB"} $(device_arg) $OPTIONS_SPEAKER
    mark "speaker-$set"
  done
fi

if run_stage 3; then
  echo "== stage 3: voice age-gender ECAPA on CommonVoice ($DATA_COMMONVOICE_LANGUAGES) per set -> $WORK/models"
  for set in $SETS; do
    done_before "age-gender-$set" && continue
    # shellcheck disable=SC2046,SC2086
    launch train-encoder age-gender --dataset commonvoice --root "$DATA_COMMONVOICE" \
      --languages "$DATA_COMMONVOICE_LANGUAGES" --split "$set" --out "$WORK/models/voice-age-gender-$set" \
      --no-progress $(device_arg) $OPTIONS_AGE_GENDER
    mark "age-gender-$set"
  done
fi

M=$WORK/manifests
if run_stage 4; then
  echo "== stage 4: manifests -> $M, folds -> $WORK/folds"
  mkdir -p "$M"
  if ! done_before manifests; then
    # shellcheck disable=SC2046
    fva manifest --dataset $MAV --root "$DATA_MAVCELEB" --subset train --out "$M/mavceleb_train.jsonl" $(lists_arg)
    # shellcheck disable=SC2046
    fva manifest --dataset $MAV --root "$DATA_MAVCELEB" --subset test --out "$M/mavceleb_test.jsonl" $(lists_arg)
    # every clip, with the language stage 1 found (none where the vote was unsure): each weight set's head
    # training leaves its unheard language and the unlabelled clips out of the VoxCeleb2 rows
    fva manifest --dataset voxceleb2 --root "$DATA_VOXCELEB2" --subset dev --language-labels "$LID_TSV" \
      --out "$M/voxceleb2_dev.jsonl"
    fva folds --manifest "$M/mavceleb_train.jsonl" --k "$HEADS_FOLDS" --out "$WORK/folds"
    mark manifests
  fi
fi

if run_stage 5; then
  echo "== stage 5: features per weight set -> $CACHE"
  for set in $SETS; do
    for part in mavceleb_train mavceleb_test voxceleb2_dev; do
      done_before "extract-$set-$part" && continue
      if [ "$set" = full ]; then
        encoders=speaker-ecapa,voice-age-gender-ecapa,$ENCODERS_FACE
        weights="--weights speaker-ecapa=$(speaker_weights full) $(face_weights)"
      else  # the face encoders heard no language: the full set's face features are linked below
        encoders=speaker-ecapa,voice-age-gender-ecapa
        weights="--weights speaker-ecapa=$(speaker_weights "$set")"
      fi
      # shellcheck disable=SC2046,SC2086
      launch extract --manifest "$M/$part.jsonl" --cache "$CACHE" --weight-set "$set" --encoders "$encoders" \
        $weights --weights "voice-age-gender-ecapa=$WORK/models/voice-age-gender-$set" \
        --workers "$DEVICES_WORKERS" --no-progress $(device_arg) $OPTIONS_EXTRACT
      dataset=$MAV; subset=${part#mavceleb_}
      if [ "$part" = voxceleb2_dev ]; then dataset=voxceleb2; subset=dev; fi
      folder=$CACHE/$dataset/$subset-$set
      if [ "$set" != full ]; then
        for face in ${ENCODERS_FACE//,/ }; do ln -sfn "../$subset-full/$face" "$folder/$face"; done
      fi
      for encoder in speaker-ecapa voice-age-gender-ecapa ${ENCODERS_FACE//,/ }; do
        fva cache validate "$folder/$encoder" --manifest "$M/$part.jsonl" >/dev/null
      done
      mark "extract-$set-$part"
    done
  done
fi

head_args() {  # the options every head training of set $1 shares
  # shellcheck disable=SC2046
  echo --fold all --cache "$CACHE" --dataset $MAV --split "$1" --weight-set "$1" --config "$HEADS_CONFIG" \
    --folds "$WORK/folds/folds.json" --workers "$HEADS_WORKERS"
}
train_heads() {  # EXP_NAME SET EXTRA...: train (or resume) one experiment
  local name=$1 set=$2; shift 2
  done_before "$name" && return 0
  local resume=""
  [ -f "$WORK/exp/$name/experiment.json" ] && resume=--resume
  # shellcheck disable=SC2046,SC2086
  fva train-head $(head_args "$set") --exp "$WORK/exp/$name" $resume "$@"
  mark "$name"
}

if run_stage 6; then
  echo "== stage 6: heads pretrained on VoxCeleb2 per set (dev EER on the MAV-Celeb folds) -> $WORK/exp"
  for set in $SETS; do
    # shellcheck disable=SC2086
    train_heads "pretrain-$set" "$set" --pretrain-dataset voxceleb2 --epochs 0 $OPTIONS_PRETRAIN
  done
fi

if run_stage 7; then
  echo "== stage 7: fine-tuning per fold from the pretrained heads -> $WORK/exp"
  for set in $SETS; do
    # shellcheck disable=SC2086
    train_heads "finetune-$set" "$set" --init "$WORK/exp/pretrain-$set" $OPTIONS_FINETUNE
  done
fi

if run_stage 8; then
  echo "== stage 8: the published selection -> $WORK/submission.zip"
  trials=${DATA_MAVCELEB_LISTS:-$DATA_MAVCELEB}
  [ -f "$trials/English_test.txt" ] || trials=$DATA_MAVCELEB/face_voice_association_splits/v3
  if ! done_before submission; then
    fva recipe plan --work "$WORK" --trials "$trials" --cache "$CACHE" --out "$WORK/plan.yaml"
    gt=()  # ground truth, where there is some: beside the lists or in the root
    for folder in "$trials" "$DATA_MAVCELEB"; do
      if ls "$folder"/*_test_labels.txt >/dev/null 2>&1; then gt=(--ground-truth "$folder"); break; fi
    done
    fva submission make --plan "$WORK/plan.yaml" --out "$WORK/submission.zip" "${gt[@]}"
    mark submission
  fi
  echo "== dev EERs per stage and scenario (mean over the folds)"
  exps=()
  for kind in pretrain finetune; do for set in $SETS; do exps+=("$WORK/exp/$kind-$set"); done; done
  fva recipe table "${exps[@]}"
fi

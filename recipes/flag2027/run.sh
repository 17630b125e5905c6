#!/usr/bin/env bash
# FLAG 2027 (MAV-Celeb v4, English/Bengali, language and gender-controlled tracks) from the raw media to a
# submission, in numbered stages as the FAME 2026 recipe: each stage reads only what an earlier stage wrote,
# skips the items it finished before (a marker per item under $WORK/.done/), resumes what it had started, and
# any range of stages runs alone:
#
#   recipes/flag2027/run.sh --config recipes/flag2027/conf/flag2027.yaml [--stage N] [--stop-stage M]
#
#   0  weights: local copies named in the config are checked, the others fetched (fva weights fetch)
#   1  manifests (train; the dev set's two tracks; the eval set's when data.eval names it), the identity folds
#      with their dev lists (any impostors, and same-gender ones: the gender track needs the meta file's genders)
#   2  features: the organisers' set (ecapa-embedding, vggface-keras) and encoders.extra (the FAME 2026 set)
#   3  the organisers' baseline (heads.baseline), per track: selected on the track's own dev impostors
#   4  the systems heads.systems names, per track, the same way
#   5  per track, the best system on its dev EER (or all fused) -> a validated FLAG zip per test set, and the
#      table of dev EERs per system and track
# Needs `fva` on the PATH (source .venv/bin/activate).
set -euo pipefail

# shellcheck source=recipes/common.sh
source "$(dirname "$0")/../common.sh"  # parse_options, run_stage, done_before, mark, launch, device_arg
parse_options 5 recipes/flag2027/conf/flag2027.yaml 2,17 "$@"
# WORK, DATA_*, WEIGHTS_ARGS, WEIGHTS_LOCAL, DEVICES_*, ENCODERS_EXTRA, HEADS_*, OPTIONS_*, FLAG_TRACKS,
# SELECT_ON_<TRACK>
eval "$(fva recipe config --recipe flag2027 "$config")"

V4=mavceleb-v4
ORGANISER="ecapa-embedding vggface-keras"
ENCODERS="$ORGANISER ${ENCODERS_EXTRA//,/ }"
M=$WORK/manifests
DONE=$WORK/.done
mkdir -p "$WORK" "$DONE"

select_on() { local var="SELECT_ON_${1^^}"; echo "${!var}"; }  # the track's own impostors (fva.recipe's)
name_of() { basename "$1" .yaml; }  # a system's experiment name: its shipped name or its YAML file's stem
SETS=dev
[ -n "$DATA_EVAL" ] && SETS="dev eval"
cache_of() { if [ "$1" = eval ]; then echo "$WORK/cache-eval"; else echo "$WORK/cache"; fi; }  # keys repeat across sets
lists_of() { head -1 "$M/$1.jsonl" | sed 's|.*"lists": "\([^"]*\)".*|\1|'; }  # the folder of the track folders
SYSTEMS=baseline
for system in ${HEADS_SYSTEMS//,/ }; do SYSTEMS="$SYSTEMS,$(name_of "$system")"; done

if run_stage 0; then
  echo "== stage 0: weights"
  fetch=""
  for encoder in $ENCODERS; do
    local_copy=""
    for given in $WEIGHTS_LOCAL; do [ "${given%%=*}" = "$encoder" ] && local_copy=${given#*=}; done
    if [ -z "$local_copy" ]; then fetch="$fetch,$encoder"
    elif [ ! -e "$local_copy" ]; then echo "run.sh: $config names weights $local_copy for $encoder, which do not exist" >&2; exit 2
    fi
  done
  if [ -n "$fetch" ]; then
    fva weights fetch --encoders "${fetch#,}"  # each published source through its library's download
  else
    echo "   every weight is a local copy named in $config"
  fi
fi

if run_stage 1; then
  echo "== stage 1: manifests -> $M, folds -> $WORK/folds"
  mkdir -p "$M"
  if ! done_before manifests; then
    fva manifest --dataset $V4 --root "$DATA_ROOT" --subset train --out "$M/train.jsonl"
    fva manifest --dataset $V4 --root "$DATA_ROOT" --subset test --out "$M/dev.jsonl"
    [ -n "$DATA_EVAL" ] && fva manifest --dataset $V4 --root "$DATA_EVAL" --subset test --out "$M/eval.jsonl"
    fva folds --manifest "$M/train.jsonl" --k "$HEADS_FOLDS" --out "$WORK/folds"
    # the gender track's dev lists (what its selection reads); one line when the identities have no genders
    fva folds --manifest "$M/train.jsonl" --k "$HEADS_FOLDS" --out "$WORK/folds-same-gender" --negatives same-gender
    mark manifests
  fi
fi

if run_stage 2; then
  echo "== stage 2: features ($ENCODERS) -> $WORK/cache"
  for part in train $SETS; do
    done_before "extract-$part" && continue
    cache=$(cache_of "$part")
    # shellcheck disable=SC2046,SC2086
    launch extract --manifest "$M/$part.jsonl" --cache "$cache" --encoders "${ENCODERS// /,}" $WEIGHTS_ARGS \
      --workers "$DEVICES_WORKERS" --no-progress $(device_arg) $OPTIONS_EXTRACT
    subset=train; [ "$part" = train ] || subset=test
    for encoder in $ENCODERS; do
      fva cache validate "$cache/$V4/$subset-full/$encoder" --manifest "$M/$part.jsonl" >/dev/null
    done
    mark "extract-$part"
  done
fi

train_heads() {  # NAME CONFIG TRACK EXTRA...: train (or resume) one experiment, selected on the track's impostors
  local name=$1 cfg=$2 track=$3; shift 3
  done_before "$name-$track" && return 0
  local resume=""
  [ -f "$WORK/exp/$name-$track/experiment.json" ] && resume=--resume
  # shellcheck disable=SC2086
  fva train-head --fold all --cache "$WORK/cache" --dataset $V4 --split full --config "$cfg" \
    --folds "$WORK/folds/folds.json" --workers "$HEADS_WORKERS" --select-on "$(select_on "$track")" \
    --exp "$WORK/exp/$name-$track" $resume "$@"
  mark "$name-$track"
}

if run_stage 3; then
  echo "== stage 3: the organisers' baseline ($HEADS_BASELINE) per track -> $WORK/exp/baseline-<track>"
  for track in $FLAG_TRACKS; do
    # shellcheck disable=SC2086
    train_heads baseline "$HEADS_BASELINE" "$track" $OPTIONS_BASELINE
  done
fi

if run_stage 4; then
  echo "== stage 4: systems (${HEADS_SYSTEMS:-none}) per track -> $WORK/exp/<system>-<track>"
  for system in ${HEADS_SYSTEMS//,/ }; do
    for track in $FLAG_TRACKS; do
      # shellcheck disable=SC2086
      train_heads "$(name_of "$system")" "$system" "$track" $OPTIONS_SYSTEMS
    done
  done
fi

if run_stage 5; then
  echo "== stage 5: per-track selection ($HEADS_SELECTION of $SYSTEMS) -> $WORK/submission-<set>.zip"
  for part in $SETS; do
    if ! done_before "submission-$part"; then
      fva recipe flag-plan --work "$WORK" --trials "$(lists_of "$part")" --cache "$(cache_of "$part")" \
        --systems "$SYSTEMS" --selection "$HEADS_SELECTION" --out "$WORK/plan-$part.yaml"
      gt=()  # the organisers' ground truth of the dev set, where given
      if [ "$part" = dev ] && [ -n "$DATA_GROUND_TRUTH" ]; then gt=(--ground-truth "$DATA_GROUND_TRUTH"); fi
      fva submission make --plan "$WORK/plan-$part.yaml" --out "$WORK/submission-$part.zip" "${gt[@]}"
      fva recipe flag-table --work "$WORK" --systems "$SYSTEMS" > "$WORK/dev_eers.md"
      mark "submission-$part"
    fi
  done
  echo "== dev EERs per system and track (mean over the folds; English: FLAG trains on English only)"
  cat "$WORK/dev_eers.md"
fi

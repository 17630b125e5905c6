# What the recipes' run.sh share (sourced, not run): options, stage selection, done-markers, launching fva.

# parse_options LAST_STAGE DEFAULT_CONFIG HELP_LINES "$@": sets stage (0), stop_stage (LAST_STAGE) and config
# from --stage N, --stop-stage M, --config FILE; -h/--help prints the caller's header lines HELP_LINES (sed range)
parse_options() {
  stage=0 stop_stage=$1 config=$2
  local help_lines=$3
  shift 3
  while [ $# -gt 0 ]; do
    case "$1" in
      --stage) stage=$2; shift 2 ;;
      --stop-stage) stop_stage=$2; shift 2 ;;
      --config) config=$2; shift 2 ;;
      -h|--help) sed -n "${help_lines}p" "$0"; exit 0 ;;
      *) echo "run.sh: unknown option $1 (use --config FILE --stage N --stop-stage M)" >&2; exit 2 ;;
    esac
  done
}

run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# done_before NAME: true (and says so) when the item NAME finished in an earlier run ($DONE/NAME exists)
done_before() { if [ -f "$DONE/$1" ]; then echo "   $1: done before, skipped"; return 0; fi; return 1; }
mark() { touch "$DONE/$1"; }
# fva, or torchrun over fva with DEVICES_NPROC processes (encoder training, extraction)
launch() { if [ "$DEVICES_NPROC" -gt 1 ]; then torchrun --nproc-per-node "$DEVICES_NPROC" -m fva.cli "$@"; else fva "$@"; fi; }
device_arg() { if [ -n "$DEVICES_DEVICE" ]; then echo "--device $DEVICES_DEVICE"; fi; }

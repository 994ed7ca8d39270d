#!/usr/bin/env bash
# The container's entrypoint: `docker run [--gpus all] IMAGE [COMMAND [OPTIONS]]` runs
# `repro COMMAND OPTIONS`, with three defaults that make the image's promise hold:
#   - no COMMAND: `all` (the whole study, resumable);
#   - list, all, prune, fetch, doctor without --profile or --study: --profile "$REPRO_PROFILE"
#     (paper in the CUDA image, tiny in the CPU image);
#   - all, prune, doctor without --out: --out "$REPRO_OUT" (/results, the results volume);
#   - every command but fetch: HF_HUB_OFFLINE=1 unless set, so a run reads only the cache
#     that `fetch` filled and a missing file is a clear error instead of a download.
# `repro` is exec'd, so it is PID 1's process and receives docker stop's SIGTERM itself.
# `--help` lists the commands; an unknown command is a one-line error with exit code 2.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  set -- all
fi

has_option() {
  local name=$1 arg
  shift
  for arg in "$@"; do
    if [[ $arg == "$name" || $arg == "$name="* ]]; then
      return 0
    fi
  done
  return 1
}

extra=()
case $1 in
  list | all | prune | fetch | doctor)
    if ! has_option --profile "$@" && ! has_option --study "$@"; then
      extra+=(--profile "${REPRO_PROFILE:-tiny}")
    fi
    ;;
esac
case $1 in
  all | prune | doctor)
    if ! has_option --out "$@"; then
      extra+=(--out "${REPRO_OUT:-/results}")
    fi
    ;;
esac
if [[ $1 != fetch ]]; then
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
fi

exec repro "$@" "${extra[@]}"

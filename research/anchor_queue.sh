#!/usr/bin/env bash
# The anchor study's runs (docs/experiments/anchor.md), niced, PARALLEL at a time (default 2: on
# 2 cores two runs of ours each step at 0.6 steps/s, one alone at 0.73): each is skipped once its
# result file exists, and a stopped one resumes from its last checkpoint.
#
#   PEER_PYTHON=... WAVJEPA_SRC=... research/anchor_queue.sh /path/to/workdirs [STEPS:SEED ...]
#
# Run it from the repository root (better: from a git worktree of a fixed commit, so that edits
# to the working copy never change a running study). PEER_PYTHON is a python with torch's CPU
# build and WAVJEPA_SRC the extracted peer (../shared/tools/peer-learning/README.md); FSDD_DIR
# defaults to ../shared/data/fsdd/recordings; PEER_TOOL (learn_peer.py) must be set where the
# worktree is not beside ../shared. Plans default to every budget of the study, in
# the order it runs them: all four systems at a budget with seed 0, then seed 1, then the next.
set -uo pipefail
runs=${1:?give a folder for the workdirs}; shift
mkdir -p "$runs"
plans=${*:-250:0 250:1 750:0 750:1 3000:0 3000:1 7500:0}
: "${PEER_PYTHON:?set PEER_PYTHON}" "${WAVJEPA_SRC:?set WAVJEPA_SRC}"
fsdd=--fsdd_dir=${FSDD_DIR:-../shared/data/fsdd/recordings}
results=research/results/anchor
long="--config.batch_size=8 --config.dataset.crop_seconds=2.01
      --config.masking.num_context_drop_spans=13 --config.masking.spans_per_target_group=5"

parallel=${PARALLEL:-2}
# torch's threads: one a run when runs share the 2 cores (PEER_THREADS overrides). With two
# threads beside a run of ours the peer stepped at 3.9 s/step, against 0.92 alone.
peer="--peer_threads=${PEER_THREADS:-$(( parallel > 1 ? 1 : 2 ))}"

run() {  # run RESULT_FILE COMMAND...: the command with --json=RESULT_FILE, unless it exists,
  local out=$1; shift  # in the background once fewer than $parallel runs are going.
  [ -f "$out" ] && return
  while (( $(jobs -rp | wc -l) >= parallel )); do wait -n; done
  echo "$(date +%T) start $out"
  (
    log="$runs/$(basename "$out" .json).log"
    if nice -n 10 "$@" --json="$out" >> "$log" 2>&1; then
      echo "$(date +%T) done $out"
    else
      echo "$(date +%T) FAILED $out (see $log)"
    fi
  ) &
}

for plan in $plans; do
  steps=${plan%:*} seed=${plan#*:}
  every=$(( steps <= 750 ? (steps < 250 ? steps : 250) : (steps <= 3000 ? 750 : 1500) ))
  common="--config=configs/quickstart.py --config.seed=$seed --steps=$steps --probe_every=$every"
  name=${steps}steps_seed$seed
  run $results/wavjepa_scaled_ema_8x2.01s_$name.json python -m research.anchor_learning \
      $common "$peer" --workdir="$runs/wavjepa_scaled_${steps}_s$seed" $fsdd
  # shellcheck disable=SC2086  # $long is words on purpose.
  run $results/ours_8x2.01s_$name.json python -m research.learning $common $long \
      --workdir="$runs/ours_long_${steps}_s$seed" $fsdd
  run $results/ours_32x0.51s_$name.json python -m research.learning $common \
      --workdir="$runs/ours_q_${steps}_s$seed" $fsdd
  run $results/wavjepa_own_ema_8x2.01s_$name.json python -m research.anchor_learning \
      $common "$peer" --ema_end_step=100000 --workdir="$runs/wavjepa_own_${steps}_s$seed" $fsdd
done
wait

#!/usr/bin/env bash
# Which lever moves Meta-World push and pick-place? On a lent GPU machine, ACT variants trained
# side by side (one process each, all on the one GPU) on the protocol's demonstrations (50
# noisy-expert demonstrations, seed 0) and each evaluated on the protocol's 50 episodes of seed 0
# (on that machine's CPUs). One JSON line per variant. Two sweeps (BENCHMARKS.md, Meta-World):
# - sweep 1: the default network; the transformer reading a 4x4 or the full 8x8 token grid of
#   each image (`--model.image-tokens`); a wider encoder; three times the steps; four times the
#   demonstrations.
# - sweep 2: keypoints on a 16x16 token grid (`--model.encoder.patch 4`) and a narrower camera
#   (WORKSPACE_VIEW re-aimed at (0, 0.75, 0.1), fovy 25 or 30 instead of 50: objects about 2x or
#   1.7x as wide in pixels; run from a copy of the tree with that line replaced).
# Carry .whl (gpu_check.sh's wheels plus metaworld 3.1.1) and .gl as for gpu_check.sh:
#   bash experiments/benchmarks/gpu_metaworld_levers.sh 2
# Smoke test on a CPU (tiny budget; the figures mean nothing):
#   DEVICE=cpu STEPS=20 EPISODES=2 DEMOS=2 bash experiments/benchmarks/gpu_metaworld_levers.sh 2
# A training still running at TRAIN_DEADLINE seconds is stopped and its last checkpoint (one per
# 500 steps) evaluated: the line's "steps" says how far it got (sweep 1's 3x-steps variants
# cannot finish within the default deadline). WORK must not exist yet: nothing is reused.
set -uo pipefail
SWEEP=${1:?name the sweep: 1 or 2}
OUT=${OUT:-/tmp/gpu_levers}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-3000}
EPISODES=${EPISODES:-50}
DEMOS=${DEMOS:-50}
TRAIN_DEADLINE=${TRAIN_DEADLINE:-300}
WORK=${WORK:-/tmp/levers}
if [ -e "$WORK" ]; then echo "$WORK exists: remove it or set WORK to a new folder" >&2; exit 2; fi
mkdir -p "$OUT" "$WORK/logs"
if [ "$DEVICE" = cuda ]; then
  source experiments/benchmarks/gpu_setup.sh
  export PYTHONPATH=/tmp/site  # each variant runs from its source tree (`python3 -m` puts it first)
fi
export MUJOCO_GL=egl PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
# name | task | view | demonstrations | extra imitate flags
case $SWEEP in
1) VARIANTS=(
  "push_default|push|default|$DEMOS|"
  "push_tokens4|push|default|$DEMOS|--model.image-tokens 4"
  "push_tokens8|push|default|$DEMOS|--model.image-tokens 8"
  "push_encoder64|push|default|$DEMOS|--model.encoder.width 64"
  "push_tokens8_steps3x|push|default|$DEMOS|--model.image-tokens 8 --train.steps $((3 * STEPS))"
  "push_demos4x|push|default|$((4 * DEMOS))|"
  "pick-place_default|pick-place|default|$DEMOS|"
  "pick-place_tokens4|pick-place|default|$DEMOS|--model.image-tokens 4"
  "pick-place_tokens8|pick-place|default|$DEMOS|--model.image-tokens 8"
  "pick-place_tokens8_steps3x|pick-place|default|$DEMOS|--model.image-tokens 8 --train.steps $((3 * STEPS))") ;;
2) VARIANTS=()
  for task in push pick-place; do VARIANTS+=(
    "${task}_patch4|$task|default|$DEMOS|--model.encoder.patch 4"
    "${task}_fovy25|$task|fovy25|$DEMOS|"
    "${task}_fovy25_patch4|$task|fovy25|$DEMOS|--model.encoder.patch 4"
    "${task}_fovy30_patch4|$task|fovy30|$DEMOS|--model.encoder.patch 4"); done ;;
*) echo "unknown sweep $SWEEP" >&2; exit 2 ;;
esac
source_tree() {  # view -> the source tree that renders it (made once, whole or not at all)
  if [ "$1" = default ]; then echo "$PWD"; return; fi
  local copy=$WORK/tree_$1
  if [ ! -d "$copy" ]; then
    rm -rf "$copy.tmp" && mkdir -p "$copy.tmp" &&
      tar c --exclude=./runs --exclude=./.venv --exclude=./.git --exclude=./.whl --exclude=./.gl . | tar x -C "$copy.tmp" &&
      python3 - "$copy.tmp/envs/metaworld_tasks.py" "${1#fovy}" <<'PY' && mv "$copy.tmp" "$copy" || { echo "cannot make the $1 tree" >&2; exit 1; }
import re, sys
path, fovy = sys.argv[1:]
source = open(path).read()
view = f"WORKSPACE_VIEW = CameraPose(position=(0.6, 0.25, 0.7), target=(0.0, 0.75, 0.1), fovy={float(fovy)})"
source, n = re.subn(r"^WORKSPACE_VIEW = .*$", view, source, flags=re.M)
assert n == 1, "WORKSPACE_VIEW not found"
open(path, "w").write(source)
PY
  fi
  echo "$copy"
}
SECONDS=0
for v in "${VARIANTS[@]}"; do  # each view's tree, made before anything runs in the background
  IFS='|' read -r name task view demos flags <<<"$v"
  source_tree "$view" >/dev/null || exit 1
done
declare -A COLLECTED
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name task view demos flags <<<"$v"
  data=${task}_${view}_$demos
  [ -n "${COLLECTED[$data]:-}" ] && continue
  COLLECTED[$data]=1
  (cd "$(source_tree "$view")" && python3 -m experiments.cli collect --task "metaworld:$task-v3" --policy noisy-expert --episodes "$demos" \
    --workers 4 --out "$WORK/$data" --json >"$WORK/logs/collect_$data.json" 2>"$WORK/logs/collect_$data.log") &
done
wait
echo "{\"collect_wall_s\": $SECONDS}"

train() {  # one variant (name, task, view, demos, flags set by for_each_variant)
  # shellcheck disable=SC2086  # flags are words
  timeout "$TRAIN_DEADLINE" python3 -m experiments.cli imitate --data "$WORK/${task}_${view}_$demos" --policy act --out "$WORK/$name" \
    --train.device "$DEVICE" --train.steps "$STEPS" --train.threads 1 $flags --json >/dev/null 2>"$WORK/logs/imitate_$name.log"
}
evaluate() {
  timeout 200 python3 -m experiments.cli policy-eval --run "$WORK/$name" --episodes "$EPISODES" --seeds 0 --no-baselines --no-videos \
    --json >"$WORK/logs/eval_$name.json" 2>"$WORK/logs/eval_$name.log"
}
for_each_variant() {  # run a stage for every variant side by side, each in its view's tree
  local s=$SECONDS
  for v in "${VARIANTS[@]}"; do
    IFS='|' read -r name task view demos flags <<<"$v"
    (cd "$(source_tree "$view")" && "$1") &
  done
  wait
  echo "{\"${1}_wall_s\": $((SECONDS - s))}"
}
for_each_variant train
for_each_variant evaluate
for v in "${VARIANTS[@]}"; do
  name=${v%%|*}
  PYTHONPATH=$PWD:${PYTHONPATH:-} python3 - "$WORK" "$name" <<'PY'
import json, sys
from pathlib import Path
from worldmodel.checkpoint import read_metadata
from envs.errors import UserError
work, name = sys.argv[1:]
line = {"variant": name}
try:
    line["steps"] = read_metadata(Path(work, name, "policy", "checkpoint.safetensors"))["step"]
    metrics = json.load(open(f"{work}/{name}/policy/metrics.json"))  # written when training finishes
    line |= {k: round(metrics[m], 4) if isinstance(metrics[m], float) else metrics[m] for k, m in
             [("train_wall_s", "wall_s_this_session"), ("action_l1", "loss/action_l1"), ("spread", "collapse/relative_std"), ("collapsed", "collapsed")]}
except (OSError, ValueError, KeyError, UserError) as error:
    line["training"] = f"unfinished ({error})"
try:
    result = json.load(open(f"{work}/logs/eval_{name}.json"))
    line |= {"success": result["success_rate"], "ci95": result["ci95"], "episodes": result["n"], "demonstrations": result["demonstrations"]}
except (OSError, ValueError, KeyError) as error:
    line["evaluation"] = f"missing ({error})"
print(json.dumps(line))
PY
done
echo "{\"gpu_metaworld_levers_wall_s\": $SECONDS}"
tar czf "$OUT/logs_levers$SWEEP.tgz" -C "$WORK/logs" .

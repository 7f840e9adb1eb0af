#!/usr/bin/env bash
# Is PushT imitation limited by the training budget? On a lent GPU, after gpu_check.sh (which
# installs the carried wheels into /tmp/site): the default ACT policy on 100 scripted PushT
# demonstrations trained for the default 3,000 steps and for STEPS (default 12,000) steps, side by
# side on the same CUDA machine, each evaluated on the usual 150 policy-eval episodes (CPU).
#   bash experiments/benchmarks/gpu_imitation_budget.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
STEPS=${STEPS:-12000}
export PYTHONPATH=/tmp/site:$PWD MUJOCO_GL=egl PYTHONUNBUFFERED=1
DATA=/tmp/pt_demos
SECONDS=0
timeout 60 python3 -m experiments.cli collect --task push-t --policy expert --episodes 100 --workers 8 --out $DATA --json
for steps in 3000 $STEPS; do
  s=$SECONDS
  timeout 200 python3 -m experiments.cli imitate --data $DATA --policy act --out /tmp/pt_act_$steps --train.device cuda \
    --train.steps $steps --train.checkpoint-every 100000 --json 2>"$OUT/imitate_pt_$steps.log"
  echo "{\"imitate_push_t_act_${steps}_steps_wall_s\": $((SECONDS - s))}"
  timeout 90 python3 -m experiments.cli policy-eval --run /tmp/pt_act_$steps --episodes 50 --seeds 0,1,2 --no-videos --json 2>/dev/null
done
echo "{\"gpu_imitation_budget_wall_s\": $SECONDS}"

#!/usr/bin/env bash
# Is PushT imitation limited by the training budget? On a lent GPU: the default ACT policy on 100
# scripted PushT demonstrations trained for the default 3,000 steps and for STEPS (default 8,000)
# steps, side by side on the same CUDA machine, each evaluated on the usual 150 policy-eval
# episodes (on that machine's CPU). Carry .whl and .gl as for gpu_check.sh; about 45 steps/s on
# an H100, so the default needs about 6 minutes.
#   bash experiments/benchmarks/gpu_imitation_budget.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
STEPS=${STEPS:-8000}
LOG=/tmp/gpu_budget_logs  # stderr of every step, packed into $OUT/logs_budget.tgz at the end
mkdir -p "$OUT" $LOG
source experiments/benchmarks/gpu_setup.sh
export PYTHONPATH=/tmp/site:$PWD MUJOCO_GL=egl PYTHONUNBUFFERED=1
DATA=/tmp/pt_demos
SECONDS=0
timeout 60 python3 -m experiments.cli collect --task push-t --policy expert --episodes 100 --workers 8 --out $DATA --json 2>"$LOG/collect.log"
for steps in 3000 $STEPS; do
  s=$SECONDS
  # a checkpoint every 1,000 steps: a run cut by the timeout resumes when the script is run again
  timeout $((steps / 30 + 60)) python3 -m experiments.cli imitate --data $DATA --policy act --out /tmp/pt_act_$steps \
    --train.device cuda --train.steps $steps --train.checkpoint-every 1000 --json 2>"$LOG/imitate_$steps.log"
  echo "{\"imitate_push_t_act_${steps}_steps_wall_s\": $((SECONDS - s))}"
  timeout 90 python3 -m experiments.cli policy-eval --run /tmp/pt_act_$steps --episodes 50 --seeds 0,1,2 --no-videos --json 2>"$LOG/policy_eval_$steps.log"
done
echo "{\"gpu_imitation_budget_wall_s\": $SECONDS}"
tar czf "$OUT/logs_budget.tgz" -C $LOG .

#!/usr/bin/env bash
# The CUDA path in one short script, for a lent GPU machine (see BENCHMARKS.md "GPU check").
# Run from the repository root on the device, with .whl (mujoco, gymnasium, tyro and their
# needs for Python 3.12) and .gl (EGL loader debs) carried:
#   bash experiments/benchmarks/gpu_check.sh
# It collects a TwoRoom dataset with EGL rendering, measures bf16 matmul throughput, pretrains
# the default encoder on CUDA in fp32 and under bf16 autocast, runs the same under torchrun
# (DDP, nccl, one GPU), probes the result, measures training throughput against the matmul
# rate, trains a world model on CUDA and plans with it (planning runs on the CPU, its target),
# trains an ACT-JEPA policy on CUDA under bf16 and evaluates it, profiles an ACT training run
# (steps/s, where host and device time go: $OUT/imitation_profile.txt), and prints one JSON line
# of figures per step.
set -uo pipefail  # no -e: every step runs and reports, a failing one too
OUT=${OUT:-/tmp/gpu_check}
LOG=/tmp/gpu_logs  # every step's stderr; packed into $OUT/logs_check.tgz at the end (8 files come back at most)
mkdir -p "$OUT" $LOG
source experiments/benchmarks/gpu_setup.sh
export PYTHONPATH=/tmp/site:$PWD MUJOCO_GL=egl PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
DATA=/tmp/gpu_data
SECONDS=0
timeout 60 python3 -m experiments.cli collect --task two-room --policy noisy-expert --episodes 100 --workers 8 --out $DATA --json
python3 - <<'PY'
import json, time, torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3): x @ x
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): x @ x
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 10
print(json.dumps({"bf16_matmul_tflops": round(2 * 8192**3 / dt / 1e12, 1)}))
PY
for mode in fp32 bf16; do
  flag=""; [ $mode = bf16 ] && flag="--train.bf16"
  s=$SECONDS
  timeout 90 python3 -m experiments.cli pretrain --data $DATA --out /tmp/gpu_run_$mode --train.device cuda --train.steps 600 $flag --json 2>"$LOG/pretrain_$mode.log"
  echo "{\"pretrain_${mode}_wall_s\": $((SECONDS - s))}"
  python3 -m experiments.cli probe --run /tmp/gpu_run_$mode --data $DATA --json 2>"$LOG/probe_$mode.log"
done
timeout 60 torchrun --standalone --nproc-per-node 1 -m experiments.cli pretrain --data $DATA --out /tmp/gpu_run_ddp \
  --train.device cuda --train.bf16 --train.steps 100 --json 2>"$LOG/pretrain_ddp.log"
s=$SECONDS
timeout 120 python3 -m experiments.cli train-wm --data $DATA --encoder /tmp/gpu_run_fp32 --out /tmp/gpu_run_fp32 --train.device cuda --train.steps 1000 --json 2>"$LOG/train_wm.log"
echo "{\"train_wm_wall_s\": $((SECONDS - s))}"
s=$SECONDS
timeout 60 python3 -m experiments.cli train-distance --run /tmp/gpu_run_fp32 --train.device cuda --json 2>"$LOG/train_distance.log"
echo "{\"train_distance_wall_s\": $((SECONDS - s))}"
python3 -m experiments.cli rollout-eval --run /tmp/gpu_run_fp32 --data $DATA --videos 0 --json 2>"$LOG/rollout_eval.log"
timeout 60 python3 -m experiments.cli plan-eval --run /tmp/gpu_run_fp32 --pairs 20 --seeds 0 --videos 0 --json 2>"$LOG/plan_eval.log"
s=$SECONDS
timeout 90 python3 -m experiments.cli imitate --data $DATA --out /tmp/gpu_policy --train.device cuda --train.bf16 --train.steps 500 --json 2>"$LOG/imitate.log"
echo "{\"imitate_act_jepa_500_steps_wall_s\": $((SECONDS - s))}"
python3 -m experiments.cli policy-eval --run /tmp/gpu_policy --episodes 10 --seeds 0 --no-videos --json 2>"$LOG/policy_eval.log"
timeout 120 python3 -m experiments.benchmarks.imitation_profile --data $DATA --device cuda --steps 600 >"$OUT/imitation_profile.txt" 2>"$LOG/imitation_profile.log"
head -1 "$OUT/imitation_profile.txt"
timeout 60 python3 -m experiments.benchmarks.train_throughput --device cuda --steps 10 2>"$LOG/throughput.log" | head -14
echo "{\"gpu_check_wall_s\": $SECONDS}"
tar czf "$OUT/logs_check.tgz" -C $LOG .

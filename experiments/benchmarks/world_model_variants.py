"""World-model variants side by side on one dataset and encoder: action conditioning (AdaLN,
token, both), latent kind (frame vector, pooled token grid), history. Each variant is trained
with the same budget and scored by `jepa rollout-eval` on the held-out episodes.

    python -m experiments.benchmarks.world_model_variants --data DIR --encoder RUN --out DIR [--steps 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from experiments.cli import main as jepa
from experiments.report import markdown_table
from experiments.rollout_eval import RolloutEval

VARIANTS = {  # name -> train-wm options
    "adaln (default)": [],
    "token": ["--model.predictor.action-mode", "token"],
    "both": ["--model.predictor.action-mode", "both"],
    "history 3": ["--model.predictor.history", "3"],
    "tokens 4x4": ["--model.latent", "tokens"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        run = os.path.join(args.out, name.split(" ")[0] + ("_" + name.split(" ")[1] if " " in name and "(" not in name else ""))
        began = time.perf_counter()
        code = jepa(["train-wm", "--data", args.data, "--encoder", args.encoder, "--out", run, "--train.steps", str(args.steps),
                     "--json", *VARIANTS[name]])
        if code:
            sys.exit(code)
        wall = time.perf_counter() - began
        r = RolloutEval(run=run, data=args.data, videos=0, json=True)()
        k = r["env_steps"].index(25)
        rows.append({"variant": name, "latent": f"{r['latent_error'][k]:.4f}", "ratio": f"{r['latent_error'][k] / r['copy_last_error'][k]:.3f}",
                     "shuffled": f"{r['shuffled_action_error'][k]:.4f}", "position": f"{r['position_error'][k]:.4f}",
                     "tolerance": r["success_tolerance"], "wall": f"{wall:.0f}"})
        print(rows[-1], file=sys.stderr)
    print(f"data {args.data}, encoder {args.encoder}, {args.steps} steps; errors at 25 env steps on held-out episodes")
    print(markdown_table(rows, {"variant": "variant", "latent": "latent error", "ratio": "/ copy-last", "shuffled": "shuffled actions",
                                "position": "position error", "tolerance": "tolerance", "wall": "train s"}))


if __name__ == "__main__":
    main()

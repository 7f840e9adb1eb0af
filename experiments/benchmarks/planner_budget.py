"""Success versus planner budget (samples x iterations) for CEM, MPPI and the gradient planner,
on one trained run, under the evaluation protocol (same pairs for every budget).

    python -m experiments.benchmarks.planner_budget --run RUN [--pairs 50] [--seeds 0]
"""

from __future__ import annotations

import argparse
import sys

from experiments.plan_commands import PlanEval
from experiments.report import markdown_table

BUDGETS = {  # planner -> (samples, iterations)
    "cem": [(100, 3), (150, 4), (200, 5), (300, 10)],
    "mppi": [(100, 3), (150, 4), (200, 5), (300, 10)],
    "grad": [(16, 20)],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--setting", default="default")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--planners", default="cem,mppi,grad")
    args = parser.parse_args()
    rows = []
    for planner in args.planners.split(","):
        for samples, iterations in BUDGETS[planner]:
            evaluation = PlanEval(run=args.run, setting=args.setting, pairs=args.pairs, seeds=args.seeds, floor=False,
                                  ceiling_pairs=0, videos=0, save=False, json=True)
            evaluation.mpc.planner = planner
            budget = getattr(evaluation.mpc, planner)
            budget.samples, budget.iterations = samples, iterations
            result = evaluation()
            rows.append({"planner": planner, "budget": f"{samples} x {iterations}",
                         "success": f"{result['success_rate']:.0%} [{result['ci95'][0]:.0%}, {result['ci95'][1]:.0%}]",
                         "median": f"{1000 * result['plan_time_s_median']:.1f}", "p90": f"{1000 * result['plan_time_s_p90']:.1f}",
                         "distance": f"{result['mean_final_distance']:.2f}"})
            print(rows[-1], file=sys.stderr)
    print(f"run {args.run}, setting {args.setting}, {args.pairs} pairs x seeds {args.seeds}")
    print(markdown_table(rows, {"planner": "planner", "budget": "samples x iterations", "success": "success (95% CI)",
                                "median": "plan ms median", "p90": "plan ms p90", "distance": "final distance / tolerance"}))


if __name__ == "__main__":
    main()

"""The `jepa` command: one subcommand per dataclass, parsed with tyro.

Bad input raises `UserError`, printed here as one line on stderr (exit 2), never a traceback.
"""

from __future__ import annotations

import json
import sys


def _commands() -> dict:
    from experiments.data_commands import Collect, ExportMinari, Tasks
    from experiments.distance_commands import TrainDistance
    from experiments.expert_commands import TrainExpert
    from experiments.imitate_commands import imitate
    from experiments.plan_commands import PlanEval
    from experiments.policy_eval_commands import PolicyEval
    from experiments.pretrain_commands import Pretrain, Probe
    from experiments.quickstart import Quickstart
    from experiments.rollout_eval import RolloutEval
    from experiments.wm_commands import TrainWM

    return {"tasks": Tasks, "collect": Collect, "export-minari": ExportMinari, "pretrain": Pretrain, "probe": Probe,
            "train-wm": TrainWM, "rollout-eval": RolloutEval, "train-distance": TrainDistance,
            "plan-eval": PlanEval, "quickstart": Quickstart, "train-expert": TrainExpert, "imitate": imitate,
            "policy-eval": PolicyEval}


def parse(argv: list[str]):
    """The command `argv` asks for, not yet run (`jepa imitate --policy NAME` is the subcommand
    `jepa imitate NAME`, whose config carries that policy's own defaults)."""
    import tyro

    if argv[:1] == ["imitate"]:
        from experiments.imitate_commands import policy_as_subcommand

        argv = argv[:1] + policy_as_subcommand(argv[1:])
    return tyro.extras.subcommand_cli_from_dict(_commands(), prog="jepa", args=argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jepa` console script."""
    from infra.errors import UserError

    try:
        command = parse(sys.argv[1:] if argv is None else list(argv))
        result = command()
        if getattr(command, "json", False):
            print(json.dumps(result))
        return 0
    except UserError as exc:
        print(f"jepa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jepa: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Small report helpers shared by commands and benchmarks: tables and one-line summaries."""

from __future__ import annotations


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of `rows` with the given {key: header} columns, in order."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[key]) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def plan_summary(result: dict) -> str:
    """One line a person reads of a `jepa plan-eval` result: success with interval, floor, ceiling, time per plan."""
    ceiling = "n/a" if result["ceiling"] is None else f"{result['ceiling']:.0%} ({result['ceiling_episodes']} episodes)"
    floor = "n/a" if result["floor"] is None else f"{result['floor']:.0%}"
    return (f"{result['task']} {result['setting']} {result['planner']}: success {result['success_rate']:.0%} "
            f"[{result['ci95'][0]:.0%}, {result['ci95'][1]:.0%}] over {result['episodes']} episodes | random floor {floor} | "
            f"simulator ceiling {ceiling} | plan {1000 * result['plan_time_s_median']:.1f} ms median, "
            f"{1000 * result['plan_time_s_p90']:.1f} ms p90"
            + (f" | the prior's policy alone {result['policy_alone']:.0%}" if result.get("policy_alone") is not None else "")
            + "".join(f" | {kind}: {part['success_rate']:.0%} of {part['episodes']}" for kind, part in result.get("success_by_start", {}).items()))

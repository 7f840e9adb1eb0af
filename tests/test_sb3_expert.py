"""`jepa train-expert`: a state-based stable-baselines3 expert, saved without pickle, that records demonstrations."""

import json

import numpy as np

from envs.dataset import EpisodeDataset
from experiments.cli import main


def test_sb3_expert_trains_saves_without_pickle_and_records_demonstrations(tmp_path, capsys):
    run = tmp_path / "sac"
    assert main(["train-expert", "--task", "reacher", "--out", str(run), "--steps", "150", "--net", "16", "16",
                 "--eval-episodes", "2", "--eval-seeds", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"success_rate", "ci95", "episodes", "seeds"} <= set(result)
    assert sorted(p.name for p in (run / "expert").iterdir() if p.is_file()) == ["eval.json", "expert.json", "policy.safetensors"]
    assert main(["collect", "--task", "reacher", "--policy", f"sb3:{run}", "--episodes", "2", "--steps", "5", "--out", str(tmp_path / "demos")]) == 0
    dataset = EpisodeDataset(tmp_path / "demos")
    assert dataset.attrs["policy"] == f"sb3:{run}" and np.abs(dataset.actions).max() <= 1
    weights = (run / "expert" / "policy.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train-expert", "--task", "reacher", "--out", str(run), "--steps", "200", "--net", "16", "16"]) == 2
    assert "holds an expert trained otherwise (differs in steps)" in capsys.readouterr().err
    assert (run / "expert" / "policy.safetensors").read_bytes() == weights


"""Episode datasets: round trip, window sampler, determinism across workers, bad files."""

import json

import h5py
import numpy as np
import pytest

from envs import UserError
from envs.collect import CollectSpec, collect
from envs.dataset import FILENAME, EpisodeDataset, WindowSampler
from experiments.cli import main


def test_round_trip_and_sampler(tiny_dataset):
    data = EpisodeDataset(tiny_dataset)
    assert data.task == "two-room" and data.num_episodes == 4
    assert data.frames.shape == (44, 64, 64, 3) and data.actions.shape == (44, 2)
    assert np.all(data.actions[data.episode(0)][-1] == 0), "last action of an episode is padding"
    assert data.goal_frames.shape == (4, 64, 64, 3)
    sampler = WindowSampler(data, window=4)
    frames, actions = sampler.load(sampler.draw(8, np.random.default_rng(0)))
    assert frames.shape == (8, 4, 64, 64, 3) and frames.dtype == np.uint8
    assert actions.shape == (8, 3, 2)
    # every window lies inside one episode: its frames are consecutive frames of the file
    first = np.flatnonzero((data.frames == frames[0, 0]).all(axis=(1, 2, 3)))[0]
    assert np.array_equal(frames[0], data.frames[first: first + 4])


def test_sampler_rejects_windows_longer_than_episodes(tiny_dataset):
    with pytest.raises(UserError, match="long enough"):
        WindowSampler(EpisodeDataset(tiny_dataset), window=12)


def test_same_data_whatever_the_number_of_workers():
    spec = CollectSpec(task="reacher", policy="noisy-expert", steps=6, seed=11)
    one = list(collect(spec, 3, workers=1))
    two = list(collect(spec, 3, workers=2))
    for a, b in zip(one, two):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)


def test_collect_cli_json_and_files(tmp_path, capsys):
    out = tmp_path / "d"
    code = main(["collect", "--task", "cube", "--policy", "expert", "--episodes", "2", "--steps", "40",
                 "--out", str(out), "--video", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 2 and result["frames"] == 82 and result["frames_per_s"] > 0
    assert 0.0 <= result["success_rate"] <= 1.0
    assert (out / FILENAME).exists() and (out / "episodes.mp4").stat().st_size > 0
    with h5py.File(out / FILENAME) as f:
        assert f.attrs["format"] == "jepa-worlds/episodes" and json.loads(f.attrs["config"])["task"] == "cube"


def test_tasks_cli_lists_all_tasks(capsys):
    assert main(["tasks", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"two-room", "reacher", "push-t", "push-t-fixed", "cube",
                                                        "dmc:reacher-easy", "gym-pusht:push-t", "gym-pusht:push-t-fixed",
                                                        "ogbench:cube-single"}


@pytest.mark.parametrize("argv, message", [
    (["collect", "--task", "pushT", "--out", "X"], "unknown task"),
    (["collect", "--policy", "oracle", "--out", "X"], "unknown policy"),
    (["collect", "--image-size", "4", "--episodes", "1", "--out", "X"], "image size"),
    (["collect", "--episodes", "0", "--out", "X"], "at least 1"),
])
def test_bad_collect_arguments_give_one_line_errors(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_missing_truncated_and_foreign_files_give_user_errors(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="jepa collect"):
        EpisodeDataset(tmp_path / "nowhere")
    path = tiny_dataset / FILENAME
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="truncated|corrupt"):
        EpisodeDataset(tiny_dataset)
    path.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(UserError, match="corrupt"):
        EpisodeDataset(tiny_dataset)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(UserError, match="not a jepa-worlds"):
        EpisodeDataset(tiny_dataset)


def test_failed_collect_leaves_the_old_dataset_intact(tiny_dataset, monkeypatch):
    before = (tiny_dataset / FILENAME).read_bytes()

    def broken(*args, **kwargs):
        yield from collect(CollectSpec(task="two-room", steps=10), 1)
        raise RuntimeError("worker died")

    monkeypatch.setattr("experiments.data_commands.collect", broken)
    with pytest.raises(RuntimeError):
        main(["collect", "--episodes", "3", "--steps", "10", "--out", str(tiny_dataset)])
    assert (tiny_dataset / FILENAME).read_bytes() == before
    assert not list(tiny_dataset.glob("*.tmp"))


def test_minari_buffers_follow_minaris_episode_layout(tiny_dataset):
    from envs.minari_export import minari_buffers

    buffers = minari_buffers(EpisodeDataset(tiny_dataset))
    assert len(buffers) == 4
    first = buffers[0]
    assert first["observations"]["pixels"].shape == (11, 64, 64, 3)  # T + 1 observations
    assert first["actions"].shape == (10, 2) and first["rewards"].shape == (10,)
    assert first["truncations"][-1] and not first["terminations"].any()


def test_minari_export_without_minari_says_what_to_install(tiny_dataset, capsys):
    try:
        import minari  # noqa: F401
        pytest.skip("minari is installed")
    except ImportError:
        pass
    assert main(["export-minari", "--data", str(tiny_dataset)]) == 2
    assert "pip install 'minari[create,hdf5]'" in capsys.readouterr().err


def test_incomplete_writer_replaces_nothing(tiny_dataset):
    from envs.dataset import DatasetWriter

    before = (tiny_dataset / FILENAME).read_bytes()
    episode = next(iter(collect(CollectSpec(task="two-room", steps=10), 1)))
    writer = DatasetWriter(tiny_dataset, 2, 11, episode, {"task": "two-room"})
    writer.add(episode)
    with pytest.raises(UserError, match="1 of 2 episodes"):
        writer.close()
    assert (tiny_dataset / FILENAME).read_bytes() == before and not list(tiny_dataset.glob("*.tmp"))

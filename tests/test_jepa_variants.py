"""The JEPA variants beyond V-JEPA: known answers for MC-JEPA's flow warp and DMT-JEPA's
neighbour targets, and each variant's pretrain -> probe -> train-wm -> plan-eval at tiny budgets."""

import json

import numpy as np
import pytest
import torch

from envs import make_task
from envs.dataset import EpisodeDataset
from experiments.cli import main
from tests.test_world_model import PLAN_TINY, PRETRAIN_TINY, WM_TINY, make_dataset
from worldmodel.encoders import EncoderConfig
from worldmodel.jepa import JEPAConfig
from worldmodel.motion import FlowHead, flow_losses, warp
from worldmodel.neighbour_targets import neighbour_targets
from worldmodel.point_cloud import unproject


def test_warp_with_the_true_motion_gives_back_the_earlier_frame():
    earlier = torch.rand(2, 3, 16, 16)
    later = torch.roll(earlier, shifts=(2, 3), dims=(2, 3))  # everything moved 3 px right and 2 px down
    flow = torch.tensor([3.0, 2.0]).reshape(1, 2, 1, 1).expand(2, -1, 16, 16)
    warped, valid = warp(later, flow)
    assert torch.allclose(warped[..., :14, :13], earlier[..., :14, :13], atol=1e-5)
    assert valid[..., :14, :13].all() and not valid[..., 14:, :].any() and not valid[..., :, 13:].any()
    ramp = torch.arange(16.0).expand(1, 1, 16, 16)  # value = x: half a pixel of flow reads half a unit further
    half, _ = warp(ramp, torch.tensor([0.5, 0.0]).reshape(1, 2, 1, 1).expand(1, -1, 16, 16))
    assert torch.allclose(half[..., :15], ramp[..., :15] + 0.5, atol=1e-5)


def test_flow_loss_is_lowest_at_the_true_motion():
    """The photometric loss that trains the flow head is smallest where its flow is the frames' own motion."""
    frames = torch.rand(1, 1, 3, 16, 16)
    frames = torch.cat([frames, torch.roll(frames, shifts=(0, 2), dims=(3, 4))], 1)  # [1, 2, 3, H, W]: 2 px to the right
    head = FlowHead(dim=4, grid=4, image_size=16)
    losses = {}
    for shift in (0.0, 1.0, 2.0, 3.0):
        head.net[-1].bias.data = torch.tensor([shift / 4, 0.0])  # one unit of the head's output = one token = 4 px
        losses[shift] = flow_losses(head, torch.zeros(1, 2, 16, 4), frames)[0].item()
    assert min(losses, key=losses.get) == 2.0 and losses[2.0] < 1e-5


def test_neighbour_targets_average_within_an_object_only():
    torch.manual_seed(0)
    grid, dim = 6, 8
    left = torch.zeros(grid, grid, dtype=torch.bool)
    left[:, : grid // 2] = True
    direction = torch.where(left[..., None], torch.eye(dim)[0], torch.eye(dim)[1])  # two objects: left and right halves
    features = (direction + 0.2 * torch.randn(grid, grid, dim)).reshape(1, 1, grid * grid, dim)
    assert torch.equal(neighbour_targets(features, grid, k=1, radius=1, temperature=0.1), features)  # itself is its most similar
    targets = neighbour_targets(features, grid, k=4, radius=1, temperature=1.0).reshape(grid, grid, dim)
    other = lambda x: (x * torch.where(left[..., None], torch.eye(dim)[1], torch.eye(dim)[0])).sum(-1)  # noqa: E731
    raw = features.reshape(grid, grid, dim)
    assert (other(targets).abs() < 0.35).all()  # nothing taken from the other half
    assert (targets - direction).norm(dim=-1).mean() < 0.8 * (raw - direction).norm(dim=-1).mean()  # noise averaged out


@pytest.mark.parametrize("objective", ["dmt-jepa", "mc-jepa"])
def test_variant_runs_pretrain_probe_train_wm_plan_eval(tmp_path, capsys, objective):
    data, run = make_dataset(tmp_path / "data"), tmp_path / "run"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--objective", objective, "--train.steps", "2", *PRETRAIN_TINY]) == 0
    metrics = json.loads((run / "encoder" / "metrics.json").read_text())
    assert ("loss/photometric" in metrics) == (objective == "mc-jepa")
    assert main(["probe", "--run", str(run), "--data", str(data), "--train-frames", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["objective"] == objective
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "2", *WM_TINY]) == 0
    assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--no-save", "--json"]) == 0


def test_mc_jepa_needs_single_frame_tokens():
    with pytest.raises(Exception, match="tubelet 1"):
        JEPAConfig(objective="mc-jepa", clip_frames=4, encoder=EncoderConfig(tubelet=2))


def test_t_jepa_pretrains_on_state_vectors_and_is_probed_beside_them(tmp_path, capsys):
    data, run = make_dataset(tmp_path / "data"), tmp_path / "run"
    argv = ["pretrain", "--data", str(data), "--out", str(run), "--objective", "t-jepa", "--model.state-moments", "2",
            "--train.steps", "3", *PRETRAIN_TINY]
    assert main(argv) == 0
    assert main(["probe", "--run", str(run), "--data", str(data), "--train-frames", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["objective"] == "t-jepa" and set(result["vector_r2"]) == set(result["r2"])
    wm = tmp_path / "wm"
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(wm), "--train.steps", "2", "--model.proprio", *WM_TINY]) == 0
    assert main(["plan-eval", "--run", str(wm), *PLAN_TINY, "--no-save", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["state"] == ["latent", "proprio"]
    assert main(["imitate", "--data", str(data), "--encoder", str(run), "--out", str(tmp_path / "p"), "--policy", "act-jepa"]) == 2
    assert "t-jepa encoder of state vectors" in capsys.readouterr().err
    proprio_only = tmp_path / "proprio_only"
    assert main(["pretrain", "--data", str(data), "--out", str(proprio_only), "--objective", "t-jepa", "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(proprio_only), "--out", str(tmp_path / "w2"), *WM_TINY]) == 2
    assert "--model.state-moments" in capsys.readouterr().err


def test_t_jepa_world_model_reads_a_goal_images_proprio_from_its_moments(tmp_path):
    """A t-jepa state is the pooled tokens of (proprio, colour moments): it changes with the proprio,
    and a goal image alone gets its proprio from the ridge read-out of its moments."""
    from experiments.runs import load_world_model

    data, run = make_dataset(tmp_path / "data"), tmp_path / "run"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--objective", "t-jepa", "--model.state-moments", "2",
                 "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "2", *WM_TINY]) == 0
    model, _ = load_world_model(run)
    dataset = EpisodeDataset(data)
    pixels, proprio = torch.from_numpy(np.array(dataset.frames[:4]))[:, None], torch.from_numpy(np.array(dataset.proprio[:4]))[:, None]
    observed, shifted = model.raw_latent(pixels, proprio), model.raw_latent(pixels, proprio + 1.0)
    assert observed.shape == (4, 1, 1, model.latent_shape[1]) and not torch.allclose(observed, shifted)
    read = model.readout_inputs(pixels) @ model.proprio_readout[:-1] + model.proprio_readout[-1]  # [4, 1, P]
    assert torch.allclose(model.raw_latent(pixels), model.raw_latent(pixels, read), atol=1e-5)


def test_t_jepa_masks_features_and_trains_a_step():
    from worldmodel.tabular_jepa import TabularJEPA

    cfg = JEPAConfig(objective="t-jepa", proprio_dim=3, state_moments=1, predictor_width=16,
                     encoder=EncoderConfig(image_size=16, patch=4, width=16))
    model = TabularJEPA(cfg)
    frames, proprio = torch.randint(0, 255, (6, 16, 16, 3), dtype=torch.uint8), torch.randn(6, 3)
    model.vectors.fit(frames, proprio)
    assert model.vectors(frames, proprio).shape == (6, 3 + 10) and model.encoder(model.vectors(frames, proprio)).shape == (6, 13, 16)
    loss, _ = model({"frames": frames, "proprio": proprio}, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.weight.grad.abs().sum() > 0 and model.target.weight.grad is None


def test_unproject_known_answers():
    depth = np.full((4, 4), 2.0, np.float32)
    flat = unproject(depth, {"orthographic": True, "focal": 10.0, "centre": 1.5})  # 10 pixels per metre
    assert np.allclose(flat[0, 3], [0.15, -0.15, 2.0]) and np.allclose(flat[..., 2], 2.0)
    ray = unproject(np.full((4, 4), 4.0, np.float32), {"orthographic": False, "focal": 2.0, "centre": 1.5})
    assert np.allclose(ray[3, 0], [-3.0, 3.0, 4.0])  # 1.5 px off the centre at a focal of 2 px: 0.75 of the depth


def test_rendered_depth_unprojects_onto_the_table():
    """The cube's perspective camera: the points of its depth image, taken back to the world frame
    with the camera's pose, put the table's top (z = 0) where the most pixels are; PushT's
    orthographic camera sees the table 1 m below it and the block above the table."""
    env = make_task("cube")
    env.reset(seed=0)
    points = unproject(env.depth_image(), env.depth_camera()).reshape(-1, 3)
    camera = env.model.camera(env.camera).id
    to_world = env.data.cam_xmat[camera].reshape(3, 3)
    world = env.data.cam_xpos[camera] + (points * [1, -1, -1]) @ to_world.T  # MuJoCo's camera looks down its -z, y up
    heights, counts = np.unique(np.round(world[:, 2], 3), return_counts=True)
    assert abs(heights[counts.argmax()]) < 2e-3
    env.close()
    top = make_task("push-t")  # an orthographic camera 1 m above the table, the block's top 2 cm above it
    top.reset(seed=0)
    depth = np.round(top.depth_image(), 3)
    assert np.median(depth) == 1.0 and depth.min() >= 0.97 and depth.max() <= 1.0 and (depth < 0.99).mean() > 0.01
    top.close()


def test_3d_jepa_pretrains_on_point_maps_and_needs_depth(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--task", "push-t", "--policy", "random", "--episodes", "3", "--steps", "12", "--depth", "--out", str(data)]) == 0
    dataset = EpisodeDataset(data)
    assert dataset.depth.shape == dataset.frames.shape[:3] and dataset.depth_camera["orthographic"]
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--objective", "3d-jepa", "--train.steps", "2", *PRETRAIN_TINY]) == 0
    capsys.readouterr()
    assert main(["probe", "--run", str(run), "--data", str(data), "--train-frames", "20", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["points_r2"]) >= {"block_cos", "block_sin"}
    plain = make_dataset(tmp_path / "plain")
    assert main(["pretrain", "--data", str(plain), "--out", str(tmp_path / "x"), "--objective", "3d-jepa", *PRETRAIN_TINY]) == 2
    assert "--depth" in capsys.readouterr().err
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(tmp_path / "wm"), "--train.steps", "2", *WM_TINY]) == 2
    assert "depth point maps" in capsys.readouterr().err
    assert main(["collect", "--task", "gym-pusht:push-t", "--episodes", "1", "--steps", "2", "--depth", "--out", str(tmp_path / "g")]) == 2
    assert "renders no depth" in capsys.readouterr().err

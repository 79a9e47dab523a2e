import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import DataError, ParamsError
from pipeline.genre.frames import (
    FEATURE_NAMES, N_FEATURES, FrameConfig, Standardizer, check_frames, clip_frames, corpus_frames, fit_length,
    signal_frames,
)

from .conftest import SR, synth_clip, write_corpus

CFG = FrameConfig(seconds=2.0)


def _sine(freq: float, seconds: float = 2.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def test_layout_is_33_named_features():
    assert N_FEATURES == 33 == 13 + 1 + 12 + 7
    assert FEATURE_NAMES[13] == "spectral_centroid" and FEATURE_NAMES[14] == "chroma_0"
    assert FEATURE_NAMES[-1] == "contrast_6"


def test_shape_dtype_and_finite():
    features = signal_frames(synth_clip("metal", np.random.default_rng(0)), CFG)
    # centred frames: 1 + floor(2 s * 22050 / 512) = 1 + 86
    assert features.shape == (87, 33) == (CFG.n_frames, N_FEATURES)
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_columns_mean_what_they_say():
    a440 = signal_frames(_sine(440.0), CFG)
    centroid = a440[5:-5, FEATURE_NAMES.index("spectral_centroid")]
    assert np.all(np.abs(centroid - 440.0) < 0.05 * 440.0)
    chroma = a440[5:-5, 14:26]
    assert np.all(chroma.argmax(axis=1) == 9)  # librosa chroma starts at C: A is bin 9
    loud, quiet = signal_frames(_sine(440.0, amp=0.8), CFG), signal_frames(_sine(440.0, amp=0.05), CFG)
    assert loud[:, 0].mean() > quiet[:, 0].mean() + 10  # mfcc_0 follows log energy
    # a tone is peaky, white noise is flat: spectral contrast of the tone is larger in its band
    noise = signal_frames(np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1, CFG)
    assert a440[:, 26:33].max(axis=1).mean() > noise[:, 26:33].max(axis=1).mean()


def test_fit_length_centre_crops_and_loops():
    y = np.arange(10.0)
    assert fit_length(y, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert fit_length(y[:3], 7).tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    with pytest.raises(ValueError):
        fit_length(y[:0], 4)


def test_clip_frames_matches_signal_and_fixes_length(tmp_path):
    y = synth_clip("pop", np.random.default_rng(1), 2.0)
    sf.write(tmp_path / "exact.wav", y, SR, subtype="FLOAT")
    np.testing.assert_allclose(clip_frames(tmp_path / "exact.wav", CFG), signal_frames(y, CFG), rtol=1e-4, atol=1e-3)
    sf.write(tmp_path / "short.wav", y[: SR // 2], SR)
    sf.write(tmp_path / "long.flac", np.tile(y, 3), SR)
    # a 44.1 kHz file is resampled to the fixed rate
    sf.write(tmp_path / "hi.wav", np.repeat(y, 2), 2 * SR)
    for name in ("short.wav", "long.flac", "hi.wav"):
        features = clip_frames(tmp_path / name, CFG)
        assert features.shape == (87, 33) and np.isfinite(features).all(), name


def test_undecodable_file_is_named(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 100)
    with pytest.raises(DataError, match="broken.wav"):
        clip_frames(tmp_path / "broken.wav", CFG)


def test_corpus_frames_sorted_and_pool_equals_serial(tmp_path):
    root = write_corpus(tmp_path, per_class=1, seed=3, genres=("jazz", "metal", "classical"), seconds=1.0)
    paths = [str(p) for p in root.rglob("*.wav")]
    cfg = FrameConfig(seconds=1.0)
    order, serial = corpus_frames(list(reversed(sorted(paths))), cfg, workers=1, progress=False)
    assert order == sorted(paths)
    _, pooled = corpus_frames(paths, cfg, workers=2, progress=False)
    assert np.array_equal(serial, pooled)
    assert serial.shape == (3, cfg.n_frames, 33) and serial.dtype == np.float32
    np.testing.assert_array_equal(serial[1], clip_frames(order[1], cfg))
    with pytest.raises(DataError, match="listed twice"):
        corpus_frames(paths + paths[:1], cfg, workers=1, progress=False)
    with pytest.raises(ParamsError, match="workers"):
        corpus_frames(paths, cfg, workers=-1, progress=False)


def test_standardizer_matches_numpy_and_survives_constant_features():
    rng = np.random.default_rng(0)
    frames = rng.normal(3.0, 2.0, size=(4, 5, 33)).astype(np.float32)
    frames[..., 7] = 1.5  # constant feature
    scaler = Standardizer.fit(frames)
    flat = frames.reshape(-1, 33).astype(np.float64)
    np.testing.assert_allclose(scaler.mean, flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.delete(scaler.std, 7), np.delete(flat.std(axis=0), 7), rtol=1e-5)
    z = scaler.transform(frames)
    assert np.isfinite(z).all() and z.dtype == np.float32
    np.testing.assert_allclose(np.delete(z.reshape(-1, 33).std(axis=0), 7), 1.0, rtol=1e-4)
    assert np.all(z[..., 7] == 0)


def test_check_frames_errors():
    with pytest.raises(DataError, match="expected frames of shape"):
        check_frames(np.zeros((3, 33)), "x")
    with pytest.raises(DataError, match="32 features per frame, expected 33"):
        check_frames(np.zeros((1, 2, 32)), "x")
    bad = np.zeros((3, 2, 33))
    bad[2, 1, 5] = np.nan
    with pytest.raises(DataError, match="clip 2 holds NaN"):
        check_frames(bad, "x")


def test_config_validation():
    with pytest.raises(ParamsError, match="hop_length"):
        FrameConfig(hop_length=4096).validate()
    with pytest.raises(ParamsError, match="seconds"):
        FrameConfig(seconds=0.01).validate()
    assert FrameConfig(seconds=30.0).n_frames == 1 + 661500 // 512

"""Music embedding (musicnn / VGGish) on real audio files written here: WAV, MP3, AAC/M4A.

TensorFlow runs in this test process; openSMILE tests live in test_smile.py, and `smile_functionals`
moves its own work to a spawned process when TensorFlow is loaded, so both files may share one pytest run.
"""
from __future__ import annotations

from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import MediaError, ParamsError
from pipeline.features.mediacheck import SILENCE_RMS, BadMedia
from pipeline.features.music import (MusicEmbeddingConfig, embed_music, gpu_present, load_audio, musicnn_logmel,
                                     patches, vggish_logmel, vggish_variables)


def synth_song(path, *, seconds=6.0, sr=44100, bpm=100.0, root=57, minor=False, drums=1.0, harmonics=6,
               gain=0.5, seed=0, fmt=None, subtype=None) -> str:
    """A stereo song: one chord per bar (I-V-vi-IV, or a minor progression) of decaying harmonic tones,
    a bass note per bar, and kick / snare / hi-hat hits on the eighth notes; peak-normalised to `gain`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros((n, 2))
    beat = 60.0 / bpm
    prog = [(0, 3, 7), (8, 12, 15), (3, 7, 10), (10, 14, 17)] if minor else [(0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)]
    for b in range(int(np.ceil(seconds / (4 * beat)))):
        s0, s1 = int(b * 4 * beat * sr), min(n, int((b + 1) * 4 * beat * sr))
        tt = t[: s1 - s0]
        env = np.exp(-tt * 1.5) * (1 - np.exp(-tt * 80))
        for j, step in enumerate(prog[b % 4]):
            f = 440.0 * 2 ** ((root + step - 69) / 12)
            tone = sum(np.sin(2 * np.pi * k * f * tt + rng.uniform(0, 2 * np.pi)) / k ** 1.2 for k in range(1, harmonics + 1))
            out[s0:s1, j % 2] += 0.25 * env * tone
        bass = 440.0 * 2 ** ((root + prog[b % 4][0] - 12 - 69) / 12)
        out[s0:s1] += (0.35 * np.sin(2 * np.pi * bass * tt) * np.exp(-tt * 0.8))[:, None]
    for k in range(int(seconds / beat * 2)):
        s = int(k * beat / 2 * sr)
        tt = t[: min(n - s, int(0.25 * sr))]
        if k % 4 == 0:  # kick: falling sine sweep
            hit = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 18)
        elif k % 4 == 2:  # snare: noise burst
            hit = 0.6 * rng.standard_normal(tt.size) * np.exp(-tt * 25)
        else:  # hi-hat: differentiated (high-passed) noise click
            hit = 0.25 * np.diff(rng.standard_normal(tt.size + 1)) * np.exp(-tt * 90)
        out[s:s + tt.size] += drums * hit[:, None]
    out *= gain / np.max(np.abs(out))
    sf.write(path, out.astype(np.float32), sr, format=fmt, subtype=subtype)
    return str(path)


def write_m4a(path, wav_path) -> str:
    """Re-encode a WAV as AAC in an MP4 container (libsndfile cannot read it: the PyAV path)."""
    y, sr = sf.read(wav_path, dtype="float32", always_2d=True)
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=sr, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y.T), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return str(path)


def write_silent_video(path) -> str:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="rgb24") for i in range(5)]
        for packet in [p for f in frames for p in stream.encode(f)] + list(stream.encode(None)):
            c.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("songs")
    a = dict(bpm=100, seed=1, drums=1.0)
    return {
        "a_loud": synth_song(d / "a.wav", **a, gain=0.99),  # mel power peaks ~80: float16 musicnn overflows
        "a_mp3": synth_song(d / "a.mp3", **a, gain=0.99, fmt="MP3", subtype="MPEG_LAYER_III"),
        "a_quiet": synth_song(d / "a_quiet.wav", **a, gain=0.01, subtype="PCM_24"),  # -40 dBFS
        "a_variant": synth_song(d / "a_var.wav", bpm=104, seed=7, drums=1.0, gain=0.7, root=59),
        "ballad": synth_song(d / "b.flac", bpm=66, seed=2, drums=0.0, minor=True, harmonics=2, root=45),
        "metal": synth_song(d / "c.wav", bpm=160, seed=3, drums=4.0, harmonics=12, root=64, gain=0.99),
    }


@pytest.fixture(scope="module")
def embedded(songs):
    return embed_music(songs, MusicEmbeddingConfig())


def test_float32_logmel_matches_reference_where_musicnn_float16_overflows(songs):
    y = load_audio(songs["a_loud"])
    mel = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=16000, n_fft=512, hop_length=256, n_mels=96)
    reference = np.log10(10000 * mel + 1).T
    ours = musicnn_logmel(y)
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    with np.errstate(over="ignore"):  # musicnn's own recipe on the same clip: inf, hence NaN features
        float16_path = np.log10(10000 * mel.T.astype(np.float16) + 1)
    assert np.isinf(float16_path).any()


def test_patches_cover_the_clip_and_repeat_pad_short_ones():
    spec = np.arange(10, dtype=np.float32)[:, None]
    p = patches(spec, 4)
    assert p[:, :, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]  # last patch end-aligned
    assert patches(spec[:3], 4)[:, :, 0].tolist() == [[0, 1, 2, 0]]
    assert patches(spec[:8], 4).shape == (2, 4, 1)


def test_vggish_logmel_shape_and_mel_band_of_a_tone():
    sr, f0 = 16000, 1000.0
    y = (0.5 * np.sin(2 * np.pi * f0 * np.arange(sr) / sr)).astype(np.float32)
    spec = vggish_logmel(y)
    assert spec.shape == (1 + (sr - 400) // 160, 64)
    edges = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)
    expected = int(np.argmin(np.abs(edges[1:-1] - 1127 * np.log1p(f0 / 700))))
    assert int(np.argmax(spec.mean(axis=0))) == expected


def test_load_audio_decodes_every_format_to_the_same_16k_mono_music(songs, tmp_path):
    m4a = write_m4a(tmp_path / "a.m4a", songs["a_loud"])
    ref = musicnn_logmel(load_audio(songs["a_loud"]))
    assert abs(len(load_audio(songs["a_loud"])) - 6 * 16000) <= 1
    for path in (songs["a_mp3"], m4a):
        spec = musicnn_logmel(load_audio(path))
        assert abs(spec.shape[0] - ref.shape[0]) <= 12  # codec priming delay: under 0.2 s
        n = min(len(spec), len(ref))
        lag = max(range(8), key=lambda k: np.corrcoef(spec[k:n].ravel(), ref[: n - k].ravel())[0, 1])
        assert np.corrcoef(spec[lag:n].ravel(), ref[: n - lag].ravel())[0, 1] > 0.95, path


def test_embedding_is_128d_finite_on_loud_and_quiet_music_and_deterministic(songs, embedded):
    ids, X, failures = embedded
    assert ids == sorted(songs) and X.shape == (len(songs), 128) and X.dtype == np.float32
    assert np.isfinite(X).all() and len(failures) == 0
    assert np.abs(X).sum(axis=1).min() > 1.0  # no degenerate all-zero row
    pair = {k: songs[k] for k in ("a_quiet", "metal")}
    once = embed_music(pair, MusicEmbeddingConfig(batch_size=1))[1]  # other batching, same values
    np.testing.assert_allclose(once, X[[ids.index("a_quiet"), ids.index("metal")]], rtol=1e-4, atol=1e-5)
    assert embed_music(pair, MusicEmbeddingConfig(batch_size=1))[1].tobytes() == once.tobytes()


def test_embedding_separates_different_music_and_keeps_similar_music_close(embedded):
    ids, X, _ = embedded
    e = {i: x / np.linalg.norm(x) for i, x in zip(ids, X)}
    sim = lambda a, b: float(e[a] @ e[b])  # noqa: E731
    assert sim("a_loud", "a_mp3") > 0.99  # same song, lossy codec
    assert sim("a_loud", "a_variant") > sim("a_loud", "ballad") + 0.2  # re-voiced, re-tempo'd version
    assert sim("ballad", "metal") < 0.5
    # log-mel inputs are not gain-invariant: a -40 dB copy lands near other soft music, not near its twin
    assert sim("a_quiet", "ballad") > sim("a_quiet", "a_loud")


@pytest.mark.parametrize("model,layer,dim", [("MSD_vgg", "pool4", 6 * 128), ("MSD_vgg", "taggram", 50),
                                             ("MSD_musicnn", "mean_pool", 561 + 3 * 64)])
def test_layer_selection_sets_the_dimension(songs, model, layer, dim):
    one = {"m": songs["ballad"]}
    ids, X, _ = embed_music(one, MusicEmbeddingConfig(model=model, layer=layer))
    assert X.shape == (1, dim) and np.isfinite(X).all()
    if layer == "taggram":
        assert ((X > 0) & (X < 1)).all()  # averaged sigmoid tag probabilities


def test_musicnn_accepts_other_input_lengths_vgg_does_not(songs):
    ids, X, _ = embed_music({"m": songs["a_variant"]}, MusicEmbeddingConfig(model="MTT_musicnn", layer="penultimate",
                                                                          input_length=1.0))
    assert X.shape == (1, 200) and np.isfinite(X).all()
    with pytest.raises(ParamsError, match="accepts only 3.0"):
        MusicEmbeddingConfig(model="MSD_vgg", input_length=1.0).validate()
    with pytest.raises(ParamsError, match="not a layer of MSD_vgg"):
        MusicEmbeddingConfig(layer="penultimate").validate()


def test_bad_media_are_all_named_in_one_error_or_skipped(songs, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(rng.bytes(4000))
    (tmp_path / "notes.mp3").write_text("not music " * 50)
    sf.write(tmp_path / "silent.wav", np.zeros(3 * 44100), 44100)
    sf.write(tmp_path / "hum.wav", np.full(44100, SILENCE_RMS / 2) * np.sin(np.arange(44100)), 44100)
    sf.write(tmp_path / "header_only.wav", np.zeros(0), 44100)
    mp3 = Path(songs["a_mp3"]).read_bytes()
    (tmp_path / "cut.mp3").write_bytes(mp3[:200])
    bad = {name: str(tmp_path / f) for name, f in [("empty", "empty.wav"), ("corrupt", "corrupt.wav"),
                                                    ("text", "notes.mp3"), ("silent", "silent.wav"),
                                                    ("hum", "hum.wav"), ("header", "header_only.wav"),
                                                    ("cut", "cut.mp3"), ("missing", "gone.wav")]}
    bad["video"] = write_silent_video(tmp_path / "clip.mp4")
    good = {"ok_m4a": write_m4a(tmp_path / "ok.m4a", songs["a_variant"]), "ok_wav": songs["ballad"]}
    with pytest.raises(MediaError) as err:
        embed_music({**good, **bad}, MusicEmbeddingConfig())
    message = str(err.value)
    assert f"{len(bad)} of {len(bad) + 2}" in message
    for name, path in bad.items():
        assert f"{name} ({path})" in message
    assert "ok_m4a" not in message and "ok_wav" not in message

    ids, X, failures = embed_music({**good, **bad}, MusicEmbeddingConfig(), on_error="skip")
    assert ids == ["ok_m4a", "ok_wav"] and X.shape == (2, 128) and np.isfinite(X).all()
    assert list(failures.columns) == ["music_id", "path", "reason"]
    reasons = dict(zip(failures.music_id, failures.reason))
    assert sorted(reasons) == sorted(bad)
    assert reasons["empty"].startswith("empty file") and reasons["missing"] == "file not found"
    assert reasons["silent"].startswith("silent") and reasons["hum"].startswith("silent")
    assert "no audio stream" in reasons["video"] and "no audio samples" in reasons["header"]
    assert "corrupt" in reasons["corrupt"] and reasons["cut"].startswith(("cannot decode", "too short"))
    assert "media.on_error: skip" in message and "\n" not in message


def test_quiet_but_real_music_is_not_called_silent(songs, tmp_path):
    y = load_audio(songs["a_quiet"])
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) > 5 * SILENCE_RMS
    hiss = 0.3 * SILENCE_RMS * np.random.default_rng(0).standard_normal(16000)  # -90 dBFS noise floor
    sf.write(tmp_path / "hiss.wav", hiss.astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(BadMedia, match="silent: RMS"):
        load_audio(tmp_path / "hiss.wav")


def test_vggish_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match="vggish_checkpoint is not set.*MSD_vgg"):
        MusicEmbeddingConfig(model="vggish", layer="embedding").validate()
    with pytest.raises(ParamsError, match=f"{tmp_path / 'nope.ckpt'}: no TensorFlow checkpoint"):
        embed_music({}, MusicEmbeddingConfig(model="vggish", layer="embedding",
                                             vggish_checkpoint=str(tmp_path / "nope.ckpt")))


def _save_checkpoint(prefix: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> str:
    from pipeline.features.music import _tensorflow

    tf = _tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.default_rng(seed)
        for name, shape in shapes.items():  # He-scaled weights keep activations finite through 8 layers
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            scale = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.01
            tf.compat.v1.Variable((rng.standard_normal(shape) * scale).astype(np.float32), name=name)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(sess, str(prefix))


def test_vggish_checkpoint_with_wrong_variables_is_named(tmp_path):
    ckpt = _save_checkpoint(tmp_path / "wrong", {"vggish/conv1/weights": (3, 3, 1, 32)}, seed=0)
    cfg = MusicEmbeddingConfig(model="vggish", layer="embedding", vggish_checkpoint=ckpt)
    with pytest.raises(ParamsError, match=r"vggish/conv1/weights \(expected shape \(3, 3, 1, 64\), found \(3, 3, 1, 32\)\)"):
        embed_music({}, cfg)


@pytest.mark.slow
def test_vggish_from_a_local_checkpoint(songs, tmp_path):
    """A full-size VGGish checkpoint (random weights, ~290 MB): restored, 128-d, weights actually used."""
    first = _save_checkpoint(tmp_path / "one" / "vggish_model.ckpt", vggish_variables(), seed=1)
    clips = {k: songs[k] for k in ("a_loud", "ballad")}
    ids, X, _ = embed_music(clips, MusicEmbeddingConfig(model="vggish", layer="embedding", vggish_checkpoint=first))
    assert X.shape == (2, 128) and np.isfinite(X).all() and not np.allclose(X[0], X[1])
    ids, fc1, _ = embed_music(clips, MusicEmbeddingConfig(model="vggish", layer="fc1",
                                                          vggish_checkpoint=str(tmp_path / "one")))
    assert fc1.shape == (2, 4096) and (fc1 >= 0).all()
    second = _save_checkpoint(tmp_path / "two" / "vggish_model.ckpt", vggish_variables(), seed=2)
    X2 = embed_music(clips, MusicEmbeddingConfig(model="vggish", layer="embedding", vggish_checkpoint=second))[1]
    assert not np.allclose(X, X2)


@pytest.mark.skipif(gpu_present(), reason="the test is about CPU-only machines; with an NVIDIA driver present, TensorFlow probing CUDA is expected")
def test_tensorflow_logs_no_cuda_error_on_a_cpu_machine():
    """Before: every extract_music run printed 'failed call to cuInit: ... CUDA error' on this CPU machine."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    code = "from pipeline.features.music import _tensorflow; tf = _tensorflow(); tf.compat.v1.Session(); print('ok')"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    assert "cuInit" not in run.stderr and "CUDA error" not in run.stderr, run.stderr[-2000:]

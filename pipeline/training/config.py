"""The training loop's settings (params group `train.loop`), shared by teacher, student and baselines."""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import ParamsError

PRECISIONS = ("fp32", "bf16")
# Truth-free model selection (docs/architecture.md section 10), each a weighting of the scheme's validation videos
# (training/data.py):
# val: lambda_v as the papers (the uploaders' confounded choices); ips: lambda_v / P(u's taste picks g(m)), so
# taste-driven choices count less; diverse: only videos of the validation uploaders with the most even taste
# (drawn like T_diverse). Every run records all three; `select` is the one early stopping keeps.
CRITERIA = ("val", "ips", "diverse")


@dataclass
class TrainConfig:
    """The papers' defaults, plus how the batch adapts to small training sets."""

    seed: int = 0
    epochs: int = 100
    batch_size: int = 1024  # the papers' batch; the largest one used (see effective_batch_size)
    min_steps_per_epoch: int = 16  # small sets: the batch shrinks so that an epoch takes at least this many steps
    min_batch_size: int = 32  # ... but never below this (the ranking loss needs in-batch negatives)
    lr: float = 1e-3
    weight_decay: float = 1e-3  # Adam's L2 penalty, as in the papers' code
    patience: int = 10  # evaluations without improvement before stopping
    eval_every: int = 1  # epochs between validation evaluations
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int = 0  # torch CPU threads the training stages use; 0: every core
    val_k: int = 25  # model selection on validation Recall@val_k (papers: 25)
    standardize: bool = True  # fit each input modality's mean/std on the training rows (stored in the model)
    # fp32: IEEE float32 throughout. bf16: training steps multiply in bfloat16 (training.loop.step_precision;
    # validation and the teacher's posteriors stay fp32); faster on CPUs with AVX512-BF16 or AMX.
    precision: str = "fp32"
    select: str = "val"  # the validation criterion early stopping keeps (CRITERIA); PGC runs always use val

    def validate(self) -> None:
        if self.select not in CRITERIA:
            raise ParamsError(f"train.loop.select={self.select!r}: expected one of {CRITERIA}")
        for name in ("epochs", "batch_size", "min_steps_per_epoch", "min_batch_size", "patience", "eval_every",
                     "val_k"):
            if getattr(self, name) < 1:
                raise ParamsError(f"train.loop.{name}={getattr(self, name)}: expected >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.threads < 0:
            raise ParamsError(f"train.loop: lr={self.lr} must be > 0, weight_decay={self.weight_decay} and "
                              f"threads={self.threads} >= 0")
        if self.precision not in PRECISIONS:
            raise ParamsError(f"train.loop.precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ParamsError(f"train.loop.device={self.device!r}: expected auto, cpu or cuda[:n]")

    def effective_batch_size(self, n_pairs: int) -> int:
        """batch_size, shrunk so that n_pairs give at least min_steps_per_epoch steps, floored at min_batch_size.

        TT-150k's 117k pairs keep the papers' 1024 (115 steps per epoch); 358 pairs would get one Adam step
        per epoch at 1024 and stop early after a few dozen steps, so they get batches of 32 (12 steps).
        """
        fitted = math.ceil(max(n_pairs, 1) / self.min_steps_per_epoch)
        return max(1, min(self.batch_size, max(self.min_batch_size, fitted), max(n_pairs, 1)))

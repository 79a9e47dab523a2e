"""The truth guard: once a training process calls forbid_truth_reads(), no reader can open truth files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

READERS = {
    "open": "open(P('compat.npy'), 'rb').read()",
    "pathlib": "__import__('pathlib').Path(P('compat.npy')).read_bytes()",
    "numpy.load": "np.load(P('compat.npy'))",
    "numpy.memmap": "np.load(P('compat.npy'), mmap_mode='r')",
    "numpy.fromfile": "np.fromfile(P('compat.npy'))",
    "pandas.read_parquet": "pd.read_parquet(P('latents.parquet'))",
    "pandas.read_csv": "pd.read_csv(P('table.csv'))",
    "pyarrow.parquet.read_table": "pq.read_table(P('latents.parquet'))",
    "pyarrow.parquet.ParquetFile": "pq.ParquetFile(P('latents.parquet')).read()",
    "pyarrow.dataset": "ds.dataset(P('latents.parquet')).to_table()",
    "pyarrow.memory_map": "pa.memory_map(P('compat.npy')).read()",
    "torch.load": "torch.load(P('model.pt'))",
    "os.listdir": "os.listdir(P(''))",
}

PRELUDE = """
import os, sys
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds, torch
root = sys.argv[1]
P = lambda name: os.path.join(root, 'truth', name) if name else os.path.join(root, 'truth')
{setup}
from pipeline.truth import forbid_truth_reads
forbid_truth_reads()
print(pd.read_parquet(os.path.join(root, 'ok.parquet')).shape)  # other files stay readable
try:
    {read}
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
print('READ IT')
"""

SETUP = """
import numpy as np, pandas as pd, torch
t = os.path.join(root, 'truth'); os.makedirs(t, exist_ok=True)
np.save(os.path.join(t, 'compat.npy'), np.ones(3))
pd.DataFrame({'a': [1]}).to_parquet(os.path.join(t, 'latents.parquet'))
pd.DataFrame({'a': [1]}).to_parquet(os.path.join(root, 'ok.parquet'))
pd.DataFrame({'a': [1]}).to_csv(os.path.join(t, 'table.csv'))
torch.save({'x': 1}, os.path.join(t, 'model.pt'))
"""


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_is_refused_in_a_training_process(reader, tmp_path):
    code = PRELUDE.format(setup=SETUP, read=READERS[reader])
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3, (reader, r.stdout[-500:], r.stderr[-2000:])
    assert "(1, 1)" in r.stdout and "READ IT" not in r.stdout
    assert "DataError" in r.stdout and "must not" in r.stdout, r.stdout


def test_no_training_stage_depends_on_a_folder_that_holds_truth():
    """The defence that holds (pipeline/truth.py): truth lives under data/world and data/raw, and no training
    stage lists either among its deps, so a training command reads only what split and the extractors wrote."""
    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    for name in ("train_teacher", "train_student", "baselines", "sweep"):
        deps = [str(d) for d in stages[name]["deps"]]
        holding = [d for d in deps if d.split("/")[:2] in (["data", "world"], ["data", "raw"]) or "truth" in d
                   and not d.endswith("truth.py")]
        assert holding == [], f"{name} depends on {holding}, which hold the simulated world's truth"
        assert "data/dataset" in deps and "data/features/video" in deps

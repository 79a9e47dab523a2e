"""Read .npy files of a release that the project did not write, without ever executing their contents.

Object arrays (`train.npy`, `100neg/*.npy` of the public code) are pickles. `np.load(allow_pickle=True)`
runs whatever callable a pickle names, so a crafted file could run a shell command during `ingest`. Here
the header is read with numpy.lib.format, numeric payloads go through `np.load(allow_pickle=False)`, and
object payloads through an unpickler that can build only numpy arrays, dtypes, numpy scalars and builtin
values/containers; any other global is refused with a DataError naming the file (docs/architecture.md section 9).
"""
from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from pipeline.errors import DataError

try:  # numpy >= 2 moved the core modules; pickles written by numpy 1.x still name numpy.core.*
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Python 2 pickles (protocol 2) write bytes as `_codecs.encode(str, 'latin1')`; nothing else is needed."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 bytes "
                                     "literals are admitted")
    return codecs.encode(text, "latin1")


_BUILTINS = ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "set", "slice",
             "str", "tuple")
# (module, name) -> the object the unpickler may hand out: what numpy's pickles of object arrays need
ALLOWED: dict[tuple[str, str], object] = {("builtins", n): getattr(builtins, n) for n in _BUILTINS}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED[(_mod, "_reconstruct")] = _multiarray._reconstruct
    ALLOWED[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    ALLOWED[(_mod, "_frombuffer")] = _numeric._frombuffer  # pickle protocol 5 arrays
ALLOWED[("numpy", "ndarray")] = np.ndarray
ALLOWED[("numpy", "dtype")] = np.dtype
ALLOWED[("_codecs", "encode")] = _latin1_encode


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside ALLOWED."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose find_class admits only ALLOWED; everything else raises RefusedGlobal."""

    def find_class(self, module: str, name: str):
        # Python 2 names (__builtin__.int, ...) -> Python 3 ones; the tables map only to Python 2 module names
        key = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if key not in ALLOWED:
            raise RefusedGlobal(f"{module}.{name}")
        return ALLOWED[key]


def _header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(f)
        if version in ((2, 0), (3, 0)):  # 3.0 differs from 2.0 only by a utf-8 header, ascii for plain dtypes
            return npy_format.read_array_header_2_0(f)
    except ValueError as e:
        raise DataError(f"{path}: not a .npy file ({e})") from e
    raise DataError(f"{path}: .npy format version {version} is not supported; expected 1.0, 2.0 or 3.0")


def load_array(path: str | Path, mmap: bool = False) -> np.ndarray:
    """The array stored in `path`; object arrays are unpickled by RestrictedUnpickler, nothing is executed.

    `mmap` memory-maps numeric arrays (a TT-150k visual matrix is 1.2 GB); object arrays are always read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing")
    with open(path, "rb") as f:
        shape, _, dtype = _header(f, path)
        if dtype.hasobject:
            try:
                arr = RestrictedUnpickler(f, encoding="latin1").load()
            except RefusedGlobal as e:
                raise DataError(f"{path}: refused to unpickle {e}; a release's object arrays may hold only numpy "
                                "arrays, numpy scalars and builtin values (loading never executes data)") from e
            except Exception as e:  # a corrupt pickle can raise nearly anything
                raise DataError(f"{path}: unreadable object array ({type(e).__name__}: {e})") from e
            if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                raise DataError(f"{path}: the pickled payload is a {type(arr).__name__} {getattr(arr, 'shape', '')}, "
                                f"not the array of shape {tuple(shape)} its header declares")
            return arr
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable numeric array ({e})") from e

"""Safe reading of pickled data files: CIFAR-N human label files and CIFAR python batches.

Neither format may be read with an unrestricted unpickler: a pickle can call any importable
function. Both readers here allow only the numpy globals that rebuild plain arrays (and the
`_codecs.encode` helper protocol-2 pickles use for bytes); anything else is refused with a
`DataError` before it runs.

CIFAR-N files (https://github.com/UCSC-REAL/cifar-10-100n, folder `data/`) are `torch.save`d
dicts of N-long int64 numpy arrays in CIFAR's original training order (N = 50,000):
`CIFAR-10_human.pt` has `clean_label, aggre_label, worse_label, random_label1..3`;
`CIFAR-100_human.pt` has `clean_label, noisy_label` plus Python lists
`clean_coarse_label, noisy_coarse_label`.
"""

from __future__ import annotations

import codecs
import os
import pickle
import zipfile
from typing import IO, Any

import numpy as np
import torch

from reset_tune.data.files import require_file
from reset_tune.errors import DataError

CIFAR_TRAIN_SIZE = 50_000
CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n (folder data/)"

# File key -> returned key. "worse_label" is CIFAR-10N's name for the "worst" label set.
_CIFAR10N_KEYS = {
    "clean_label": "clean",
    "aggre_label": "aggre",
    "worse_label": "worst",
    "random_label1": "random1",
    "random_label2": "random2",
    "random_label3": "random3",
}
_CIFAR100N_KEYS = {"clean_label": "clean", "noisy_label": "noisy"}

_NUMERIC_DTYPE_CLASSES = tuple(
    getattr(np.dtypes, name)
    for name in (
        "BoolDType",
        "Int8DType",
        "Int16DType",
        "Int32DType",
        "Int64DType",
        "UInt8DType",
        "UInt16DType",
        "UInt32DType",
        "UInt64DType",
        "Float16DType",
        "Float32DType",
        "Float64DType",
    )
)

# numpy's stubs leave out the private `_core` package that the pickles name.
_reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
_scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]

# torch.load(weights_only=True) allow-list. Files written under numpy 1.x name the array
# rebuilders `numpy.core.multiarray.*` (numpy 2.x: `numpy._core.multiarray.*`), so both names
# are mapped to the same functions. BUILD on a dtype checks the dtype's *class*
# (e.g. numpy.dtypes.Int64DType), hence the numeric dtype classes; object dtypes stay refused.
_TORCH_SAFE_GLOBALS: list[Any] = [
    _reconstruct,
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
    _scalar,
    (_scalar, "numpy.core.multiarray.scalar"),
    np.ndarray,
    np.dtype,
    *_NUMERIC_DTYPE_CLASSES,
]

# (module, name) -> object for the restricted pickle.Unpickler.
_PICKLE_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (only numpy array rebuilders are)"
            ) from None


def safe_pickle_load(fileobj: IO[bytes], *, source: str = "pickle") -> Any:
    """Unpickles `fileobj` allowing only plain containers, numbers, bytes and numpy arrays.

    Uses latin1 decoding of Python 2 byte strings, as the CIFAR python batches need (their keys
    come back as `str`, their array bytes intact). Raises `DataError` naming `source` on any
    refused global or malformed stream.
    """
    try:
        return _RestrictedUnpickler(fileobj, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot read {source} safely: {exc}") from None


def _torch_load_numpy(path: str) -> Any:
    require_file(
        path,
        "label file",
        f"; download it from the CIFAR-N project ({CIFAR_N_URL}: CIFAR-10_human.pt or "
        "CIFAR-100_human.pt) and pass its path with --label-file",
    )
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, zip errors, ...
        if not zipfile.is_zipfile(path):
            reason = "it is not a file written by torch.save"
        else:
            reason = _torch_load_reason(exc)
        raise DataError(
            f"cannot read label file {path!r} safely (only dicts of numpy arrays and lists are "
            f"accepted): {reason}"
        ) from None


def _torch_load_reason(exc: Exception) -> str:
    """The specific cause inside torch.load's message, without its advice to drop weights_only
    (which would execute the file's code)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            line = line.removeprefix("WeightsUnpickler error:").strip()
            return line.split(" Please use")[0].split(" was not an allowed global")[0]
    for line in lines:
        if "weights_only" not in line and not line.startswith(("Weights only", "Check the")):
            return f"{type(exc).__name__}: {line}"
    return type(exc).__name__


def _label_array(
    content: dict, key: str, path: str, *, expected_length: int, num_classes: int
) -> np.ndarray:
    try:
        array = np.asarray(content[key])
    except (ValueError, TypeError):  # ragged or otherwise non-array content
        array = np.asarray(None)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"label file {path!r}: key {key!r} must be a 1-D integer array, "
            f"but got dtype {array.dtype} with shape {array.shape}"
        )
    if array.shape[0] != expected_length:
        raise DataError(
            f"label file {path!r}: key {key!r} has {array.shape[0]} labels, "
            f"expected {expected_length} (one per CIFAR training image, in the original order)"
        )
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        bad = int(array[(array < 0) | (array >= num_classes)][0])
        raise DataError(
            f"label file {path!r}: key {key!r} contains class {bad}, "
            f"expected classes 0..{num_classes - 1}"
        )
    return array.astype(np.int64, copy=True)


def _load_label_dict(
    path: str | os.PathLike, keys: dict[str, str], *, expected_length: int, num_classes: int
) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    content = _torch_load_numpy(path)
    if not isinstance(content, dict):
        raise DataError(
            f"label file {path!r} must hold a dict of label arrays, "
            f"but holds a {type(content).__name__}"
        )
    missing = [key for key in keys if key not in content]
    if missing:
        raise DataError(
            f"label file {path!r} lacks key(s) {', '.join(missing)} "
            f"(has: {', '.join(sorted(map(str, content)))}); is it the right CIFAR-N file?"
        )
    return {
        out: _label_array(
            content, key, path, expected_length=expected_length, num_classes=num_classes
        )
        for key, out in keys.items()
    }


def load_cifar10n_labels(
    path: str | os.PathLike, *, expected_length: int = CIFAR_TRAIN_SIZE
) -> dict[str, np.ndarray]:
    """Reads `CIFAR-10_human.pt`: {"clean", "aggre", "worst", "random1", "random2", "random3"}.

    Each value is an int64 array of `expected_length` labels in 0..9, in CIFAR-10's training order.
    """
    return _load_label_dict(path, _CIFAR10N_KEYS, expected_length=expected_length, num_classes=10)


def load_cifar100n_labels(
    path: str | os.PathLike, *, expected_length: int = CIFAR_TRAIN_SIZE
) -> dict[str, np.ndarray]:
    """Reads `CIFAR-100_human.pt`: {"clean", "noisy"} (fine labels; the coarse lists are unused).

    Each value is an int64 array of `expected_length` labels in 0..99, in CIFAR-100's training
    order.
    """
    return _load_label_dict(path, _CIFAR100N_KEYS, expected_length=expected_length, num_classes=100)

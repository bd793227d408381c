"""Reads the tensors of a torch checkpoint (a `torch.save` zip of float tensors) with numpy alone.

The FSMN VAD ships its weights as model.pt; importing torch only to read 1.7 MB of floats cost the
VAD worker ~2.5 s of every server start. A checkpoint is a zip holding `<name>/data.pkl` (a pickle
of the state dict, whose tensors point at storages by key), `<name>/data/<key>` (each storage's raw
bytes) and `<name>/byteorder`. The unpickler below accepts only the few globals a plain state dict
uses, like `torch.load(weights_only=True)`; anything else is refused, never run.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage's bytes, read lazily: only the tensors built from it touch them."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, dtype: np.dtype[Any], key: str, numel: int) -> None:
        self.archive, self.name, self.dtype, self.numel = archive, f"{prefix}/data/{key}", dtype, numel

    def array(self, byteorder: str) -> npt.NDArray[Any]:
        raw = self.archive.read(self.name)
        if len(raw) != self.numel * self.dtype.itemsize:
            raise ValueError(f"{self.name}: {len(raw)} bytes for {self.numel} x {self.dtype}")
        return np.frombuffer(raw, dtype=self.dtype.newbyteorder("<" if byteorder == "little" else ">"))


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> tuple[_Storage, int, tuple[int, ...], tuple[int, ...]]:
    return storage, offset, tuple(size), tuple(stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


class _Unpickler(pickle.Unpickler):
    _GLOBALS = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[module, name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _Storage(self._archive, self._prefix, storage_type.dtype, str(key), int(numel))


def load_state_dict(path: Path | str) -> dict[str, npt.NDArray[Any]]:
    """name -> array (a copy, in the tensor's shape and dtype) for every tensor in the checkpoint."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: not a torch checkpoint zip (data.pkl entries: {pickles})")
        prefix = pickles[0].removesuffix("/data.pkl")
        try:
            byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
        except KeyError:
            byteorder = "little"  # checkpoints older than the byteorder record are little-endian
        entries = _Unpickler(archive.read(pickles[0]), archive, prefix).load()
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: holds a {type(entries).__name__}, not a state dict")
        tensors = {}
        for name, entry in entries.items():
            storage, offset, size, stride = entry
            flat = storage.array(byteorder)
            last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
            if offset < 0 or last >= len(flat) or min(stride, default=0) < 0:
                raise ValueError(f"{path}: tensor {name} lies outside its storage")
            view = np.lib.stride_tricks.as_strided(
                flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
            )
            tensors[str(name)] = np.array(view, dtype=view.dtype.newbyteorder("="))
        return tensors

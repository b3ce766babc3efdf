"""Safe reading and atomic writing of ``.safetensors`` files (adapters, checkpoints, caches).

Only the safetensors format is ever read. Pickle-based files (``.bin``, ``.ckpt``, ``.pt``) are refused by
their magic bytes *before* anything is deserialised, and truncated files are caught from the header (the
data offsets must fit inside the file) before safetensors touches the tensor data.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# A safetensors header larger than this is not an adapter (or not safetensors at all).
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}

_CONVERT_HINT = (
    "Only .safetensors files are loaded (pickle files can run arbitrary code). Convert it in a trusted "
    'environment first, e.g. `python -c "import torch, safetensors.torch as st; '
    "st.save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\"` or kohya sd-scripts' "
    "networks/convert_lora.py"
)


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one tensor, read from the header only."""

    dtype: str
    shape: tuple[int, ...]


@dataclass
class SafetensorsHeader:
    """The parsed header of a safetensors file: tensor infos and the ``__metadata__`` strings."""

    path: Path
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def sniff_pickle(first_bytes: bytes) -> str | None:
    """Name the pickle-based container that ``first_bytes`` starts with, or None if it is not one."""
    if first_bytes[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save format, i.e. pickle inside)"
    if len(first_bytes) >= 2 and first_bytes[0] == 0x80 and first_bytes[1] in (2, 3, 4, 5):
        return "a Python pickle"
    return None


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file without loading any tensor data.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is a pickle/zip, not safetensors, or truncated; the message says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        kind = sniff_pickle(head)
        if kind is not None:
            raise ValueError(
                f"{path.name} is {kind}, not safetensors; refusing to unpickle it. {_CONVERT_HINT}"
            )
        if len(head) < 8:
            raise ValueError(f"{path.name} is truncated or empty ({size} bytes); download it again")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER_BYTES:
            raise ValueError(
                f"{path.name} is not a safetensors file (its first 8 bytes are not a header length); "
                "only .safetensors files are read"
            )
        if 8 + n > size:
            raise ValueError(
                f"{path.name} is truncated: header needs {8 + n} bytes, file has {size}; download it again"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path.name} is not a safetensors file (unreadable header: {err}); {_CONVERT_HINT}"
        ) from err
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} is not a safetensors file (header is not a JSON object)")
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            tensors[name] = TensorInfo(dtype=str(info["dtype"]), shape=tuple(int(d) for d in info["shape"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path.name}: malformed header entry for {name!r}; the file is damaged"
            ) from err
        data_end = max(data_end, int(end))
    if 8 + n + data_end > size:
        raise ValueError(
            f"{path.name} is truncated: tensors need {8 + n + data_end} bytes, file has {size}; download it again"
        )
    return SafetensorsHeader(path=path, file_size=size, tensors=tensors, metadata=metadata)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Validate ``path`` with :func:`read_header`, then load all tensors (CPU) and the metadata."""
    from safetensors.torch import load_file

    header = read_header(path)
    return load_file(str(path), device="cpu"), header.metadata


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: str | os.PathLike) -> None:
    """chmod a ``mkstemp`` file (created 0600) to what a plain ``open()`` would give (0666 minus umask)."""
    os.chmod(path, 0o666 & ~_current_umask())


def save_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` atomically: a temp file in the same folder, then ``os.replace``.

    On any failure the temp file is removed and an existing ``path`` is left untouched.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=metadata or None)
        give_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("wrote %s (%d tensors)", path, len(tensors))
    return path


def tensor_nbytes(info: TensorInfo) -> int:
    """Bytes taken by one tensor, from its header entry."""
    count = 1
    for d in info.shape:
        count *= d
    return count * _DTYPE_BYTES.get(info.dtype, 4)

"""Read pickles that hold only plain data: containers, strings, numbers and numpy arrays.

Dataset files such as CIFAR-100's `train` or miniImageNet's `mini-imagenet-cache-*.pkl` are
pickles, and unpickling runs whatever callables the file names. This unpickler resolves only
the few numpy functions that rebuild arrays, dtypes and scalars (under their numpy 1 and 2
module names) and refuses every other global, so a hostile file raises `UserError` instead of
running code.

Example:
    >>> with open("cifar-100-python/meta", "rb") as handle:
    ...     meta = load_data_pickle(handle, "cifar-100-python/meta", encoding="bytes")
"""
from __future__ import annotations

import codecs
import pickle
from typing import IO, Any, Callable

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

from episodes.errors import UserError, fail


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol 0-2 pickles store `bytes` as `_codecs.encode(text, "latin1")`; any other codec
    # (zlib, base64, ...) is not something a data file needs.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _ForbiddenGlobal(f"_codecs.encode with the codec {encoding!r}")
    return text.encode("latin-1")


# (module, name) -> object, for the module names numpy 1 and numpy 2 write into pickles.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    **{(module, container.__name__): container
       for module in ("builtins", "__builtin__") for container in (set, frozenset, bytes, bytearray)},
}


class _DataUnpickler(pickle.Unpickler):
    """An unpickler whose globals are limited to `ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def load_data_pickle(handle: IO[bytes], source: str, encoding: str = "ASCII") -> Any:
    """Unpickle a plain-data file, refusing anything that could run code.

    Args:
        handle: binary file object positioned at the start of the pickle.
        source: the file's name as the user knows it, for error messages.
        encoding: how Python 2 `str` objects are decoded (`"bytes"` keeps them as bytes, as
            CIFAR's Python 2 pickles need; `"latin1"` for Python 2 pickles of numpy arrays).
    """
    try:
        return _DataUnpickler(handle, encoding=encoding).load()
    except _ForbiddenGlobal as error:
        raise fail(f"{source} is not a plain data pickle: it asks to call {error}, which a dataset "
                   f"file never needs, so it may be malicious and was not loaded.",
                   "Delete it and get the dataset file again from its original source.") from None
    except UserError:
        raise
    except (Exception, MemoryError) as error:  # truncated or garbled bytes fail in many ways
        reason = " ".join(str(error).split())
        raise fail(f"{source} could not be read as a pickle ({type(error).__name__}: {reason}); "
                   f"the file is truncated or corrupt.",
                   "Download or copy the dataset file again and check its size.") from None

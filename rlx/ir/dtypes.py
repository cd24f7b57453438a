"""Tensor element types and their NumPy counterparts (bf16 through ml_dtypes)."""
from __future__ import annotations

from enum import Enum

import ml_dtypes
import numpy as np

from rlx.errors import DTypeError


class DType(str, Enum):
    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    i16 = "i16"
    i8 = "i8"
    u64 = "u64"
    u32 = "u32"
    u16 = "u16"
    u8 = "u8"
    bool = "bool"

    def __str__(self) -> str:
        return self.value

    @property
    def np(self) -> np.dtype:
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.f64, DType.f32, DType.f16, DType.bf16)

    @property
    def is_int(self) -> bool:
        return self in _INTS


_NUMPY = {
    DType.f64: np.dtype(np.float64),
    DType.f32: np.dtype(np.float32),
    DType.f16: np.dtype(np.float16),
    DType.bf16: np.dtype(ml_dtypes.bfloat16),
    DType.i64: np.dtype(np.int64),
    DType.i32: np.dtype(np.int32),
    DType.i16: np.dtype(np.int16),
    DType.i8: np.dtype(np.int8),
    DType.u64: np.dtype(np.uint64),
    DType.u32: np.dtype(np.uint32),
    DType.u16: np.dtype(np.uint16),
    DType.u8: np.dtype(np.uint8),
    DType.bool: np.dtype(np.bool_),
}
_INTS = frozenset((DType.i64, DType.i32, DType.i16, DType.i8, DType.u64, DType.u32, DType.u16, DType.u8))
_FROM_NUMPY = {v: k for k, v in _NUMPY.items()}
_ALIASES = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
            "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8", "uint64": "u64",
            "uint32": "u32", "uint16": "u16", "uint8": "u8", "bool_": "bool", "double": "f64", "float": "f32",
            "half": "f16"}


def as_dtype(value: "DType | str | np.dtype | type") -> DType:
    """Normalize a dtype spelled as rlx, NumPy or a NumPy type; raise DTypeError if unknown."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        name = _ALIASES.get(value, value)
        try:
            return DType(name)
        except ValueError:
            raise DTypeError(f"unknown dtype {value!r}; expected one of "
                             f"{', '.join(d.value for d in DType)}") from None
    try:
        return _FROM_NUMPY[np.dtype(value)]
    except (KeyError, TypeError):
        raise DTypeError(f"unsupported dtype {value!r}") from None

"""rlx.ir: shapes, dtypes, the op registry, MIR graphs, the reference interpreter, HIR."""
from rlx.ir import ops as _ops  # noqa: F401  (registers the shipped ops)
from rlx.ir import region as _region  # noqa: F401
from rlx.ir.dtypes import DType, as_dtype
from rlx.ir.graph import Graph, Node, Value
from rlx.ir.interpret import bind_dims, interpret, random_arrays
from rlx.ir.registry import REGISTRY, AttrSpec, OpDef, TensorType, get_op, register
from rlx.ir.shapes import DimBinding, broadcast_shapes

__all__ = ["DType", "as_dtype", "Graph", "Node", "Value", "interpret", "random_arrays", "bind_dims",
           "REGISTRY", "AttrSpec", "OpDef", "TensorType", "get_op", "register", "DimBinding",
           "broadcast_shapes"]

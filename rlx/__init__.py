"""rlx: an ML graph compiler whose optimizer is an e-graph."""
from rlx.errors import RlxError
from rlx.ir import DimBinding, DType, Graph, interpret

from rlx import hir, models  # noqa: E402  (after the IR they build on)
from rlx.pipeline import CompileResult, compile  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Graph", "DType", "DimBinding", "interpret", "hir", "models", "compile", "CompileResult",
           "RlxError", "__version__"]

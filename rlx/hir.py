"""HIR blocks (``rlx.hir.Module``); the implementation lives in ``rlx.ir.hir``."""
from rlx.ir.hir import ACTIVATIONS, POLICIES, Block, HValue, Module, Policy

__all__ = ["Module", "HValue", "Block", "Policy", "POLICIES", "ACTIVATIONS"]

"""Fused ops a user declares in rule files, and the unfused programs they fuse: shared by
tests/test_kernels.py and bench/user_ops.py. Each file is what a compiler engineer would
write; none of them is shipped."""
from __future__ import annotations

from pathlib import Path

import rlx

RULES = {
    "scale_mask_softmax.rlx": '''
ruleset fusion

fused scale_mask_softmax(x, m; scale: float = 1.0) "softmax(x * scale + mask) over the last axis" {
    softmax(add(mul(x, scale), m); axis=-1)
}

rule scale_mask_softmax "softmax(x * c + m)":
    softmax(add(mul(x, scalar(c)), m); axis=-1) => scale_mask_softmax(x, m; scale=c)
    where dtype(m) == dtype(x) "the mask is not additive"
''',
    "bias_residual_layer_norm.rlx": '''
ruleset fusion

fused bias_residual_layer_norm(x, b, r, w, beta; eps: float = 1e-5) "s = x + b + r; (s, layer_norm(s))" {
    s = add(add(x, b), r)
    (s, layer_norm(s, w, beta; eps=eps))
}

rule bias_residual_layer_norm "layer_norm of a biased residual sum; the sum is kept too":
    layer_norm(add(add(x, b), r) as s, w, beta; axis=-1, eps=e) => bias_residual_layer_norm(x, b, r, w, beta; eps=e) -> (s, root)
    where rank(b) == 1 "bias is not a vector", dim(b, 0) == dim(x, -1) "bias length differs"
''',
    "gated_gelu.rlx": '''
ruleset fusion

fused gated_gelu(x, wu, wg) "(x·wu) * gelu(x·wg): the gate on the right" {
    mul(matmul(x, wu), gelu(matmul(x, wg)))
}

rule gated_gelu "(x·wu) * gelu(x·wg)":
    mul(matmul(x, wu), gelu(matmul(x, wg))) => gated_gelu(x, wu, wg)
    where rank(wu) == 2 "up weight is not a matrix", rank(wg) == 2 "gate weight is not a matrix",
          dim(wu, -1) == dim(wg, -1) "widths differ"
''',
}

# A fused op no skeleton fits (a reduction over the first axis): it runs as its definition.
UNFIT = '''
ruleset fusion

fused column_normalize(x) "x divided by its column sums" {
    div(x, sum(x; axes=[0], keepdims=true))
}

rule column_normalize "x / sum(x, axis 0)":
    div(x, sum(x; axes=[0], keepdims=true)) => column_normalize(x)
'''


def write_rules(directory: Path, texts: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (texts or RULES).items():
        (directory / name).write_text(text)
    return directory


def scale_mask_softmax(b=1, h=4, s=16) -> rlx.Graph:
    g = rlx.Graph("scale_mask_softmax")
    x, m = g.input("x", (b, h, s, s)), g.input("m", (s, s))
    g.output(y=g.softmax(g.add(g.mul(x, 0.125), m), axis=-1))
    return g


def bias_residual_layer_norm(rows=16, d=32) -> rlx.Graph:
    g = rlx.Graph("bias_residual_layer_norm")
    x, r = g.input("x", (rows, d)), g.input("r", (rows, d))
    b, w, beta = g.param("b", (d,)), g.param("w", (d,)), g.param("beta", (d,))
    s = g.add(g.add(x, b), r)
    g.output(s=s, y=g.layer_norm(s, w, beta))
    return g


def gated_gelu(rows=16, d=32, f=64) -> rlx.Graph:
    g = rlx.Graph("gated_gelu")
    x = g.input("x", (rows, d))
    wu, wg = g.param("wu", (d, f)), g.param("wg", (d, f))
    g.output(y=g.mul(g.matmul(x, wu), g.gelu(g.matmul(x, wg))))
    return g


MODELS = {"scale_mask_softmax": scale_mask_softmax, "bias_residual_layer_norm": bias_residual_layer_norm,
          "gated_gelu": gated_gelu}

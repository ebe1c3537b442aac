"""quantize family: ``ops.quantize`` / ``ops.dequantize``, per tensor and per
channel, against torch's ``quantize_per_tensor`` / ``quantize_per_channel`` /
``dequantize``, and against a plain float32 copy between preallocated tensors.

Impls: "slimtorch" and "torch" allocate their output; "slimtorch_out" writes
into a preallocated ``out=`` tensor, as the copy does. Baseline: torch.
Bandwidth: quantize and dequantize move 5 bytes per element (4 read + 1
written, or 1 + 4), the copy 8, so slimtorch_out's share of the copy's
bandwidth is ``5/8 * (x vs copy)``.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import grid
from slimtorch import ops

SIZES = grid([1 << 20, 16 << 20, 64 << 20], [1 << 20])
CHANNELS = 1024  # per-channel cases: a [n / 1024, 1024] weight, quantized per row (axis 0)
OPS = ["quantize_per_tensor", "quantize_per_channel", "dequantize_per_tensor", "dequantize_per_channel"]
IMPLS = ["torch", "slimtorch", "slimtorch_out"]

pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning")


def _data(n: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(n))


def make_fn(op: str, n: int, impl: str):
    """The call to time: ``op`` on ``n`` elements the ``impl`` way."""
    if op == "copy":
        src, dst = _data(n), torch.empty(n)
        return lambda: dst.copy_(src)
    per_channel = op.endswith("per_channel")
    x = _data(n).reshape(-1, CHANNELS) if per_channel else _data(n)
    axis = 0 if per_channel else None
    if per_channel:
        scale, zero_point = ops.choose_qparams(x, axis=0)
    else:
        scale, zero_point = torch.tensor(0.03), torch.tensor(3, dtype=torch.int32)
    if op.startswith("quantize"):
        if impl == "torch":
            if per_channel:
                scale64, zero_point64 = scale.double(), zero_point.long()
                return lambda: torch.quantize_per_channel(x, scale64, zero_point64, 0, torch.qint8)
            return lambda: torch.quantize_per_tensor(x, 0.03, 3, torch.qint8)
        out = torch.empty(x.shape, dtype=torch.int8) if impl == "slimtorch_out" else None
        return lambda: ops.quantize(x, scale, zero_point, axis=axis, out=out)
    if impl == "torch":
        if per_channel:
            return torch.quantize_per_channel(x, scale.double(), zero_point.long(), 0, torch.qint8).dequantize
        return torch.quantize_per_tensor(x, 0.03, 3, torch.qint8).dequantize
    q = ops.quantize(x, scale, zero_point, axis=axis)
    out = torch.empty(x.shape) if impl == "slimtorch_out" else None
    return lambda: ops.dequantize(q, scale, zero_point, axis=axis, out=out)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n >> 20}M")
@pytest.mark.parametrize("op", OPS)
def test_quantize_ops(bench, op, n):
    candidates = {impl: make_fn(op, n, impl) for impl in IMPLS}
    candidates["copy"] = make_fn("copy", n, "copy")
    bench({"op": op, "n": f"{n >> 20}M"}, candidates, baseline="torch", also=("copy",))

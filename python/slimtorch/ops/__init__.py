"""The op layer: the only door to native code.

Each op validates its arguments (``TypeError``/``ValueError`` naming the
argument), allocates outputs with torch, and dispatches through a
``torch.library`` op ``slimtorch::<name>`` with a fake implementation, so the
ops work under ``torch.compile(fullgraph=True)`` and ``torch.export``. Eager
calls on plain CPU tensors go straight to the native kernel (decided in
``slimtorch.ops._dispatch``). Kernels are registered per backend by
:mod:`slimtorch.ops.backends`, with the pure-torch reference as the fallback.
"""

import sys

from slimtorch._native import build_info
from slimtorch.ops import backends  # noqa: F401  (registers the kernels)
from slimtorch.ops._dispatch import cpu_bf16_status

# Each op family's public names, as its module's __all__ lists them.
from slimtorch.ops.qgemm import *  # noqa: F403
from slimtorch.ops.quantize import *  # noqa: F403
from slimtorch.ops.select import *  # noqa: F403
from slimtorch.ops.spmm import *  # noqa: F403
from slimtorch.ops.threshold import *  # noqa: F403

# By module name: the attribute ``ops.quantize`` is the function, not the module.
__all__ = ["build_info", "cpu_bf16_status"] + [
    name for family in ("threshold", "select", "quantize", "spmm", "qgemm")
    for name in sys.modules[f"{__name__}.{family}"].__all__
]

"""Pure-torch versions of every op: the oracle the tests compare kernels
against, and the fallback where no native kernel exists for a device.

Each function is the shortest obviously-correct statement of the op's
contract; speed is not a goal here.
"""

from slimtorch.reference import qgemm
from slimtorch.reference.quantize import MIN_SCALE, choose_qparams, dequantize, quantize
from slimtorch.reference.select import magnitude_masks, magnitude_threshold
from slimtorch.reference.spmm import sparse_linear, sparse_linear_dynamic, sparse_linear_grad_input, sparse_to_dense
from slimtorch.reference.threshold import prune_mask, threshold_

__all__ = [
    "MIN_SCALE",
    "choose_qparams",
    "dequantize",
    "magnitude_masks",
    "magnitude_threshold",
    "prune_mask",
    "quantize",
    "sparse_linear",
    "sparse_linear_dynamic",
    "sparse_linear_grad_input",
    "sparse_to_dense",
    "threshold_",
    "qgemm",  # a module: its functions share names with ops in other families
]

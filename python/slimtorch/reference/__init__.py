"""Pure-torch versions of every op: the oracle the tests compare kernels
against, and the fallback where no native kernel exists for a device.

Each function is the shortest obviously-correct statement of the op's
contract; speed is not a goal here.
"""

from slimtorch.reference.spmm import sparse_linear, sparse_linear_grad_input, sparse_to_dense
from slimtorch.reference.threshold import prune_mask, threshold_

__all__ = ["prune_mask", "threshold_"]
__all__ += ["sparse_linear", "sparse_linear_grad_input", "sparse_to_dense"]

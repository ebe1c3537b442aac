"""Pure-torch versions of every op: the oracle the tests compare kernels
against, and the fallback where no native kernel exists for a device.

Each function is the shortest obviously-correct statement of the op's
contract; speed is not a goal here.
"""

from slimtorch.reference import qgemm
from slimtorch.reference.threshold import prune_mask, threshold_

__all__ = ["prune_mask", "threshold_"]
__all__ += ["qgemm"]

"""slimtorch: prune and quantize PyTorch models into layers that run faster."""

from importlib.metadata import PackageNotFoundError, version

from slimtorch import nn, ops, reference
from slimtorch.structured import prune_channels

try:
    __version__ = version("slimtorch")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["nn", "ops", "prune_channels", "reference", "__version__"]

"""slimtorch: prune and quantize PyTorch models into layers that run faster."""

from importlib.metadata import PackageNotFoundError, version

from slimtorch import nn, ops, reference

try:
    __version__ = version("slimtorch")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["nn", "ops", "reference", "__version__"]

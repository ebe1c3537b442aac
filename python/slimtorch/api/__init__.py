"""The model-level API: prune, quantize, compress, save/load and summarize whole models."""

from slimtorch.api.compress import CompressConfig, CompressReport, compress_
from slimtorch.api.export import export_chain
from slimtorch.api.pruning import AGPSchedule, PruneReport, prune_, strip_
from slimtorch.api.quantization import (
    ActivationRange,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    QATLinear,
    calibrate,
    convert_qat_,
    prepare_qat_,
)
from slimtorch.api.serialization import load_, save
from slimtorch.api.summary import LayerSummary, ModelSummary, summary

__all__ = ["CompressConfig", "CompressReport", "compress_", "export_chain",
           "AGPSchedule", "PruneReport", "prune_", "strip_",
           "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver", "MSEObserver",
           "ActivationRange", "calibrate", "QATLinear", "prepare_qat_", "convert_qat_",
           "save", "load_", "LayerSummary", "ModelSummary", "summary"]

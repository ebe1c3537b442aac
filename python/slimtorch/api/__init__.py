"""The model-level API: prune, quantize, compress, save/load and summarize whole models."""

from slimtorch.api.pruning import AGPSchedule, PruneReport, prune_, strip_
from slimtorch.api.serialization import load_, save
from slimtorch.api.summary import LayerSummary, ModelSummary, summary

__all__ = ["AGPSchedule", "PruneReport", "prune_", "strip_", "save", "load_", "LayerSummary", "ModelSummary", "summary"]

"""The model-level API: prune, quantize, compress, save/load and summarize whole models."""

from slimtorch.api.pruning import AGPSchedule, PruneReport, prune_, strip_
from slimtorch.api.summary import LayerSummary, ModelSummary, summary

__all__ = ["AGPSchedule", "PruneReport", "prune_", "strip_", "LayerSummary", "ModelSummary", "summary"]

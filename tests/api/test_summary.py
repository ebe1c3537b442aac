"""summary(): per-layer numbers, totals, table and data."""

from __future__ import annotations

import pytest
import torch
from _api_models import make_bert, make_mlp
from torch import nn

import slimtorch


def test_dense_mlp_numbers():
    model = make_mlp()
    s = slimtorch.summary(model)
    assert [row.name for row in s.layers] == ["0", "2", "4"]
    row = s.layers[0]
    assert (row.type, row.shape, row.dtype) == ("Linear", (32, 12), "float32")
    assert row.bytes == (32 * 12 + 32) * 4 == row.dense_bytes and row.ratio == 1.0
    assert s.bytes == sum(p.numel() * 4 for p in model.parameters())
    assert s.sparsity == 0.0 and s.ratio == 1.0


def test_pruned_and_stripped_sparsity_and_bytes():
    model = make_mlp()
    slimtorch.prune_(model, 0.75)
    s = slimtorch.summary(model)
    n = 12 * 32 + 32 * 17 + 17 * 3
    assert s.sparsity == pytest.approx(round(0.75 * n) / n)
    masks = n  # one bool byte per weight until strip_
    assert s.bytes == sum(p.numel() * 4 for p in model.parameters()) + masks
    assert s.ratio < 1.0 and [row.type for row in s.layers] == ["Linear"] * 3
    slimtorch.strip_(model)
    s2 = slimtorch.summary(model)
    assert s2.sparsity == s.sparsity and s2.ratio == 1.0


def test_half_precision_ratio_and_other_layers():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 4).half())
    s = slimtorch.summary(model)
    assert [row.type for row in s.layers] == ["Embedding", "LayerNorm", "Linear"]
    assert s.layers[2].dtype == "float16" and s.layers[2].ratio == 2.0
    assert s.layers[1].weight_numel == 4  # LayerNorm weight counts toward sparsity (ones here)


def test_table_and_data():
    model = make_bert()
    slimtorch.prune_(model, 0.5)
    s = slimtorch.summary(model)
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["name", "type", "shape"]
    assert lines[-1].startswith("total") and f"{s.bytes:,}" in lines[-1]
    assert "encoder.layer.0.attention.self.query" in text and "64x64" in text
    data = s.to_dict()
    assert data["total"]["bytes"] == s.bytes and len(data["layers"]) == len(s.layers)
    row = next(r for r in data["layers"] if r["name"] == "encoder.layer.0.intermediate.dense")
    assert row["shape"] == (128, 64) and row["sparsity"] > 0


def test_bad_argument():
    with pytest.raises(TypeError, match="^model"):
        slimtorch.summary(torch.zeros(3))

"""Small models shared by the API tests (imported by name: pytest puts tests/api on sys.path)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 17), nn.ReLU(), nn.Linear(17, 3))


def make_bert(seed: int = 0) -> nn.Module:
    """A tiny BERT-style encoder built from a config (no download)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100, max_position_embeddings=32)
    return transformers.BertModel(config).eval()


def bert_input(batch: int = 2, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(7))

"""Small models for the structured-pruning tests and benchmarks (shared so the
benchmark measures the same architectures the tests check)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def mlp(d_in: int = 16, hidden: tuple[int, ...] = (64, 32), d_out: int = 8) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = (d_in, *hidden)
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], d_out))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, and a 1x1 conv + BN
    shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + shortcut)


class ResNetLike(nn.Module):
    """Stem, an identity block, a downsampling block, a two-branch block
    joined by ``torch.cat``, global pooling, flatten into a Linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.branch_a = nn.Conv2d(2 * width, width, 1)
        self.branch_b = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(2 * width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


class AttentionEncoder(nn.Module):
    """A pre-norm-free transformer layer built on nn.MultiheadAttention."""

    def __init__(self, d_in: int = 8, d_model: int = 32, heads: int = 4, ffn: int = 64, d_out: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Linear(ffn, d_model))
        self.head = nn.Linear(d_model, d_out)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x)
        h = self.norm(h + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0])
        return self.head(h + self.ffn(h))


def bert(
    hidden: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 128, vocab: int = 100, attn: str = "sdpa"
):
    """A randomly initialised transformers BertModel built from a config (no download)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
        attn_implementation=attn,
    )
    return BertModel(config).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

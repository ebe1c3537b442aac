"""Distillation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.distill import CombinedLoss, EmbeddingLoss, FeatureLoss, KDLoss


def _kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, T: float) -> float:
    """sum_i p_i (log p_i - log q_i), averaged over rows, in float64."""
    total = 0.0
    for s_row, t_row in zip(student.double().tolist(), teacher.double().tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p, q = math.exp(t / T) / zt, math.exp(s / T) / zs
            total += p * (math.log(p) - math.log(q))
    return total / len(student)


def _ce_by_hand(student: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for row, y in zip(student.double().tolist(), targets.tolist()):
        total += math.log(sum(math.exp(v) for v in row)) - row[y]
    return total / len(student)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=g) * 2, torch.randn(5, 4, generator=g) * 2, torch.tensor([0, 3, 1, 1, 2])


def test_kd_tiny_values_by_hand() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher probabilities 3/4, 1/4
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert KDLoss(1.0, 0.0)(s, t).item() == pytest.approx(expected, rel=1e-6)
    # alpha = 1: cross-entropy of uniform logits is log 2
    assert KDLoss(3.0, 1.0)(s, t, torch.tensor([1])).item() == pytest.approx(math.log(2), rel=1e-6)


def test_kd_t1_alpha0_is_kl(logits) -> None:
    s, t, y = logits
    assert KDLoss(1.0, 0.0)(s, t).item() == pytest.approx(_kl_by_hand(s, t, 1.0), rel=1e-5)
    assert KDLoss(1.0, 0.0)(s, t, y).item() == pytest.approx(_kl_by_hand(s, t, 1.0), rel=1e-5)


@pytest.mark.parametrize("T", [0.5, 2.0, 4.0, 10.0])
def test_kd_scaled_by_t_squared(logits, T: float) -> None:
    s, t, _ = logits
    assert KDLoss(T, 0.0)(s, t).item() == pytest.approx(T * T * _kl_by_hand(s, t, T), rel=1e-5)


def test_kd_alpha1_is_cross_entropy(logits) -> None:
    s, t, y = logits
    assert KDLoss(4.0, 1.0)(s, t, y).item() == pytest.approx(_ce_by_hand(s, y), rel=1e-5)


def test_kd_mixture(logits) -> None:
    s, t, y = logits
    T, a = 3.0, 0.25
    expected = (1 - a) * T * T * _kl_by_hand(s, t, T) + a * _ce_by_hand(s, y)
    assert KDLoss(T, a)(s, t, y).item() == pytest.approx(expected, rel=1e-5)


def test_kd_identical_logits_zero_and_gradient_flows(logits) -> None:
    s, _, _ = logits
    student = s.clone().requires_grad_()
    assert KDLoss(2.0, 0.0)(student, s).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.zeros(5, 4)
    loss = KDLoss(2.0, 0.0)(student, other)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kd_sequence_logits_and_bf16(logits) -> None:
    s, t, y = logits
    flat = KDLoss(2.0, 0.5)(s, t, y)
    seq = KDLoss(2.0, 0.5)(s.reshape(1, 5, 4), t.reshape(1, 5, 4), y.reshape(1, 5))
    assert torch.allclose(flat, seq)
    low = KDLoss(2.0, 0.5)(s.bfloat16(), t.bfloat16(), y)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(flat.item(), rel=0.05)


@pytest.mark.parametrize("kwargs, error, start", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"temperature": float("inf")}, ValueError, "temperature"),
    ({"temperature": "4"}, TypeError, "temperature"),
    ({"alpha": 1.5}, ValueError, "alpha"),
    ({"alpha": -0.1}, ValueError, "alpha"),
    ({"alpha": None}, TypeError, "alpha"),
])
def test_kd_bad_arguments(kwargs, error, start) -> None:
    with pytest.raises(error, match=f"^{start}"):
        KDLoss(**kwargs)


def test_kd_bad_inputs(logits) -> None:
    s, t, y = logits
    with pytest.raises(ValueError, match="^teacher_logits"):
        KDLoss()(s, t[:, :3], y)
    with pytest.raises(ValueError, match="^targets"):
        KDLoss(alpha=0.5)(s, t, None)
    with pytest.raises(ValueError, match="^targets"):
        KDLoss(alpha=0.5)(s, t, y[:3])
    with pytest.raises(TypeError, match="^targets"):
        KDLoss(alpha=0.5)(s, t, y.float())
    with pytest.raises(TypeError, match="^student_logits"):
        KDLoss()(s.long(), t, y)
    with pytest.raises(TypeError, match="^teacher_logits"):
        KDLoss()(s, [1, 2], y)


class _Net(nn.Module):
    def __init__(self, hidden: int, conv_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, conv_channels, 3, padding=1)
        self.fc = nn.Linear(conv_channels * 16, hidden)
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        h = self.conv(x)
        return self.head(self.act(self.fc(h.flatten(1))))


def test_feature_loss_projection_gets_gradients() -> None:
    torch.manual_seed(0)
    student, teacher = _Net(6, 2), _Net(10, 5)
    loss = FeatureLoss(student, teacher, {"conv": "conv", "act": "act"},
                       example_input=torch.zeros(1, 1, 4, 4))
    assert set(loss.projections) == {"0", "1"}  # 2 -> 5 channels, 6 -> 10 features
    assert isinstance(loss.projections["0"].linear, nn.Linear)
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        teacher(x)
    student(x)
    value = loss()
    value.backward()
    for name, p in list(loss.named_parameters()) + list(student.named_parameters()):
        if name.startswith("head"):
            continue  # after the hooked layers: no hint gradient
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())


def test_feature_loss_value_by_hand() -> None:
    student, teacher = nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 2))
    loss = FeatureLoss(student, teacher, [("0", "0")])  # width from out_features: 4 -> 2
    x = torch.randn(5, 3)
    t = teacher(x).detach()
    s = student(x)
    value = loss()
    proj = loss.projections["0"].linear
    expected = ((s @ proj.weight.T + proj.bias - t) ** 2).mean()
    assert torch.allclose(value, expected)


def test_feature_loss_same_width_no_projection_and_channels_last() -> None:
    student, teacher = nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 4))
    loss = FeatureLoss(student, teacher, {"0": "0"}, channel_dim=-1)
    assert len(list(loss.parameters())) == 0
    x = torch.randn(2, 7, 3)  # [N, L, C]
    t, s = teacher(x), student(x)
    assert torch.allclose(loss(), F.mse_loss(s, t))
    loss.remove()
    student(x)
    with pytest.raises(RuntimeError, match="no output recorded"):
        loss()


def test_feature_loss_bad_arguments() -> None:
    student, teacher = nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(ValueError, match="^layers: student has no layer named 'x'"):
        FeatureLoss(student, teacher, {"x": "0"})
    with pytest.raises(ValueError, match="^layers: teacher has no layer named 'y'"):
        FeatureLoss(student, teacher, {"0": "y"})
    with pytest.raises(ValueError, match="^layers"):
        FeatureLoss(student, teacher, {})
    with pytest.raises(TypeError, match="^layers"):
        FeatureLoss(student, teacher, "0")
    with pytest.raises(TypeError, match="^layers"):
        FeatureLoss(student, teacher, [("0", 1)])
    with pytest.raises(ValueError, match="^example_input"):
        FeatureLoss(student, teacher, {"1": "1"})  # ReLU has no width attribute
    with pytest.raises(TypeError, match="^student"):
        FeatureLoss("student", teacher, {"0": "0"})
    with pytest.raises(TypeError, match="^channel_dim"):
        FeatureLoss(student, teacher, {"0": "0"}, channel_dim=1.0)
    with pytest.raises(ValueError, match="^channel_dim"):
        FeatureLoss(student, teacher, {"1": "1"}, channel_dim=3, example_input=torch.zeros(1, 3))


def test_embedding_loss_cosine_and_mse() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # cosines 1, 0, -1 -> mean(1 - cos) = (0 + 1 + 2) / 3
    assert EmbeddingLoss("cosine")(s, t).item() == pytest.approx(1.0)
    assert EmbeddingLoss("mse")(s, t).item() == pytest.approx(((s - t) ** 2).mean().item())
    # [N, L, D] sequences are compared position by position
    assert EmbeddingLoss()(s.unsqueeze(0), t.unsqueeze(0)).item() == pytest.approx(1.0)


def test_embedding_loss_projection() -> None:
    loss = EmbeddingLoss("cosine", student_dim=3, teacher_dim=5)
    s = torch.randn(4, 3, requires_grad=True)
    loss(s, torch.randn(4, 5)).backward()
    assert s.grad is not None and loss.projection.weight.grad is not None
    with pytest.raises(ValueError, match="^student_output"):
        loss(torch.randn(4, 4), torch.randn(4, 5))
    assert EmbeddingLoss(student_dim=4, teacher_dim=4).projection is None


def test_embedding_loss_bad_arguments() -> None:
    with pytest.raises(ValueError, match="^distance"):
        EmbeddingLoss("l1")
    with pytest.raises(TypeError, match="^distance"):
        EmbeddingLoss(1)
    with pytest.raises(ValueError, match="^student_dim"):
        EmbeddingLoss(student_dim=0, teacher_dim=3)
    with pytest.raises(ValueError, match="^teacher_dim"):
        EmbeddingLoss(student_dim=3)
    with pytest.raises(ValueError, match="^teacher_output"):
        EmbeddingLoss()(torch.randn(2, 3), torch.randn(2, 4))


def test_combined_loss() -> None:
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    combined = CombinedLoss([(0.5, KDLoss(2.0, 0.0)), (2.0, EmbeddingLoss("mse"))])
    expected = 0.5 * KDLoss(2.0, 0.0)(s, t) + 2.0 * EmbeddingLoss("mse")(s, t)
    assert torch.allclose(combined(s, t, y), expected)
    with pytest.raises(ValueError, match="^terms"):
        CombinedLoss([])
    with pytest.raises(TypeError, match="^terms"):
        CombinedLoss([(1.0, lambda s, t, y: s.sum())])
    with pytest.raises(TypeError, match="^terms"):
        CombinedLoss([KDLoss()])


def test_embedding_loss_mean_pooling_ignores_padding() -> None:
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, -9.0]],
                      [[2.0, 2.0], [5.0, 5.0], [-3.0, 7.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 4.0]],
                      [[0.0, 1.0], [8.0, 8.0], [1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # pooled: s -> [0.5, 0.5], [2, 2]; t -> [1, 0], [0, 1]; cosines 1/sqrt(2) each
    loss = EmbeddingLoss("cosine", pooling="mean")
    assert loss(s, t, {"attention_mask": mask}).item() == pytest.approx(1 - 2**-0.5)
    changed = s.clone()
    changed[0, 2], changed[1, 1:] = 100.0, -100.0  # padding positions only
    assert loss(changed, t, {"attention_mask": mask}).item() == pytest.approx(1 - 2**-0.5)
    # Without a mask every token counts.
    assert EmbeddingLoss("mse", pooling="mean")(s, t).item() == pytest.approx(
        ((s.mean(1) - t.mean(1)) ** 2).mean().item())
    # A row without tokens is a zero vector, not NaN.
    empty = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert torch.isfinite(loss(s, t, {"attention_mask": empty}))


def test_embedding_loss_reads_hugging_face_and_tuple_outputs() -> None:
    from types import SimpleNamespace

    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = {"attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    loss = EmbeddingLoss(pooling="mean")
    expected = loss(s, t, mask)
    assert loss(SimpleNamespace(last_hidden_state=s), (t, "extra"), mask).item() == pytest.approx(expected.item())


def test_embedding_loss_pooling_bad_arguments() -> None:
    with pytest.raises(ValueError, match="^pooling"):
        EmbeddingLoss(pooling="max")
    with pytest.raises(TypeError, match="^pooling"):
        EmbeddingLoss(pooling=1)
    loss = EmbeddingLoss(pooling="mean")
    with pytest.raises(ValueError, match="^targets: attention_mask"):
        loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), {"attention_mask": torch.ones(2, 4)})
    with pytest.raises(ValueError, match="^student_output"):
        loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="^teacher_output"):
        loss(torch.randn(2, 3, 4), torch.randn(2, 5, 4))

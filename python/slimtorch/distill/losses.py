"""Distillation losses.

Every loss here is an ``nn.Module`` called as
``loss(student_output, teacher_output, targets)`` and returns a scalar tensor;
this is the protocol :class:`slimtorch.distill.Distiller` uses, so losses can be
summed with :class:`CombinedLoss`. Losses are computed in float32 whatever the
dtype of their inputs (bf16 autocast included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch._checks import check_choice, check_fraction, check_real

__all__ = ["KDLoss", "FeatureLoss", "EmbeddingLoss", "CombinedLoss"]


def _check_output(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    return value


class KDLoss(nn.Module):
    """Hinton et al. knowledge distillation loss.

    ``loss = (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))
    + alpha * cross_entropy(s, targets)``

    where ``s``/``t`` are the student/teacher logits and ``T`` the temperature.
    The KL term is averaged over samples (``batchmean``, the true KL per
    sample) and multiplied by ``T**2`` so its gradient keeps the same scale
    whatever the temperature. ``alpha`` is the weight of the hard-label term:
    ``alpha=0`` is pure distillation (``targets`` may be ``None``),
    ``alpha=1`` is plain cross-entropy.

    Logits of shape ``[..., C]`` (e.g. per-token logits) are flattened to
    ``[N, C]``; ``targets`` then has the leading shape ``[...]``.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5) -> None:
        super().__init__()
        temperature = check_real("temperature", temperature, allow_inf=False)
        if temperature <= 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature}")
        self.temperature = temperature
        self.alpha = check_fraction("alpha", alpha)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        student_logits = _check_output("student_logits", student_logits)
        teacher_logits = _check_output("teacher_logits", teacher_logits)
        if student_logits.ndim < 1 or student_logits.shape != teacher_logits.shape:
            raise ValueError(f"teacher_logits: expected the shape of student_logits "
                             f"{tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}")
        classes = student_logits.shape[-1]
        s = student_logits.float().reshape(-1, classes)
        t = teacher_logits.float().reshape(-1, classes)
        T = self.temperature
        total = s.new_zeros(())
        if self.alpha < 1.0:
            kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1),
                          reduction="batchmean", log_target=True)
            total = total + (1.0 - self.alpha) * (T * T) * kl
        if self.alpha > 0.0:
            if targets is None:
                raise ValueError("targets: required when alpha > 0 (the hard-label term); got None")
            if not isinstance(targets, torch.Tensor):
                raise TypeError(f"targets: expected a torch.Tensor, got {type(targets).__name__}")
            if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
                raise TypeError(f"targets: expected an integer class-index tensor, got {targets.dtype}")
            if tuple(targets.shape) != tuple(student_logits.shape[:-1]):
                raise ValueError(f"targets: expected shape {tuple(student_logits.shape[:-1])}, "
                                 f"got {tuple(targets.shape)}")
            ce = F.cross_entropy(s, targets.reshape(-1).long())
            total = total + self.alpha * ce
        return total


def _module_width(module: nn.Module) -> int | None:
    for attribute in ("out_features", "out_channels", "num_features", "embedding_dim"):
        value = getattr(module, attribute, None)
        if isinstance(value, int):
            return value
    return None


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"layers: a hooked layer returned {type(output).__name__}; expected a tensor "
                    "(or a tuple whose first element is one)")


class _ChannelProjection(nn.Module):
    """A learnable linear map over one dimension (a 1x1 convolution for
    channels-first features, a Linear layer for channels-last ones)."""

    def __init__(self, in_width: int, out_width: int, channel_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_width, out_width)
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moved = torch.movedim(x, self.channel_dim, -1)
        return torch.movedim(self.linear(moved.to(self.linear.weight.dtype)), -1, self.channel_dim)


class FeatureLoss(nn.Module):
    """FitNets-style hint loss between named intermediate layers.

    Forward hooks on ``student`` and ``teacher`` record the outputs of the named
    layers during their forward passes; calling the loss compares each student
    feature with its teacher feature by mean squared error (averaged over the
    layer pairs). Where the widths (size along ``channel_dim``) differ, a
    learnable projection (a linear map over the channel dimension, i.e. a 1x1
    convolution for ``[N, C, H, W]`` features) maps the student feature to the
    teacher width. Its parameters belong to this loss: give them to the
    optimizer too (``Distiller`` checks this).

    Args:
        student, teacher: the two models (only hooks are registered; they are
            not stored as submodules).
        layers: ``{student_layer_name: teacher_layer_name}`` or a sequence of
            ``(student_layer_name, teacher_layer_name)`` pairs; names as in
            ``named_modules()``.
        channel_dim: the width dimension of the features (1 for ``[N, C]`` and
            ``[N, C, H, W]``; -1 for channels-last ``[N, L, C]``).
        example_input: an input for both models; when given, one forward pass
            (in eval mode, without gradients) measures the widths. Without it
            the widths come from the layers' ``out_features`` /
            ``out_channels`` / ``num_features`` / ``embedding_dim``.

    Call :meth:`remove` to take the hooks off the models.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module,
                 layers: Mapping[str, str] | Sequence[tuple[str, str]], *,
                 channel_dim: int = 1, example_input: Any = None) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student: expected an nn.Module, got {type(student).__name__}")
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: expected an nn.Module, got {type(teacher).__name__}")
        pairs = self._check_layers(layers)
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise TypeError(f"channel_dim: expected an int, got {type(channel_dim).__name__}")
        self.channel_dim = channel_dim
        self.pairs = pairs
        student_modules = dict(student.named_modules())
        teacher_modules = dict(teacher.named_modules())
        for s_name, t_name in pairs:
            if s_name not in student_modules:
                raise ValueError(f"layers: student has no layer named {s_name!r}")
            if t_name not in teacher_modules:
                raise ValueError(f"layers: teacher has no layer named {t_name!r}")
        self._student_features: dict[str, torch.Tensor] = {}
        self._teacher_features: dict[str, torch.Tensor] = {}
        self._handles = []
        for s_name, t_name in pairs:
            self._handles.append(student_modules[s_name].register_forward_hook(
                self._recorder(self._student_features, s_name)))
            self._handles.append(teacher_modules[t_name].register_forward_hook(
                self._recorder(self._teacher_features, t_name)))
        widths = self._widths(student, teacher, student_modules, teacher_modules, example_input)
        self.projections = nn.ModuleDict()
        for index, (s_width, t_width) in enumerate(widths):
            if s_width != t_width:
                self.projections[str(index)] = _ChannelProjection(s_width, t_width, channel_dim)

    @staticmethod
    def _check_layers(layers: object) -> list[tuple[str, str]]:
        if isinstance(layers, Mapping):
            pairs = list(layers.items())
        elif isinstance(layers, Sequence) and not isinstance(layers, str):
            pairs = [tuple(p) if isinstance(p, (tuple, list)) else p for p in layers]
        else:
            raise TypeError(f"layers: expected a mapping or a sequence of (student, teacher) name "
                            f"pairs, got {type(layers).__name__}")
        if not pairs:
            raise ValueError("layers: expected at least one (student, teacher) layer pair")
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
                raise TypeError(f"layers: expected (student_name, teacher_name) string pairs, got {pair!r}")
        return pairs

    @staticmethod
    def _recorder(store: dict[str, torch.Tensor], name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            store[name] = _first_tensor(output)
        return hook

    def _widths(self, student, teacher, student_modules, teacher_modules, example_input):
        if example_input is not None:
            modes = [(m, m.training) for m in (student, teacher)]
            try:
                with torch.no_grad():
                    for model in (student, teacher):
                        model.eval()
                        model(example_input)
            finally:
                for model, mode in modes:
                    model.train(mode)
            widths = []
            for s_name, t_name in self.pairs:
                s_feat, t_feat = self._student_features[s_name], self._teacher_features[t_name]
                for name, feat in ((s_name, s_feat), (t_name, t_feat)):
                    if feat.ndim == 0 or not -feat.ndim <= self.channel_dim < feat.ndim:
                        raise ValueError(f"channel_dim: {self.channel_dim} is out of range for the "
                                         f"{feat.ndim}-d output of layer {name!r}")
                widths.append((s_feat.shape[self.channel_dim], t_feat.shape[self.channel_dim]))
            self._student_features.clear()
            self._teacher_features.clear()
            return widths
        widths = []
        for s_name, t_name in self.pairs:
            s_width = _module_width(student_modules[s_name])
            t_width = _module_width(teacher_modules[t_name])
            for name, width in ((s_name, s_width), (t_name, t_width)):
                if width is None:
                    raise ValueError(f"example_input: needed to measure the width of layer {name!r} "
                                     "(it has no out_features/out_channels/num_features/embedding_dim)")
            widths.append((s_width, t_width))
        return widths

    def remove(self) -> None:
        """Removes the forward hooks from both models."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def forward(self, student_output: Any = None, teacher_output: Any = None,
                targets: Any = None) -> torch.Tensor:
        """Hint loss of the features recorded by the last forward passes
        (the arguments are accepted for the loss protocol and ignored)."""
        total = None
        try:
            for index, (s_name, t_name) in enumerate(self.pairs):
                if s_name not in self._student_features:
                    raise RuntimeError(f"FeatureLoss: no output recorded for student layer {s_name!r}; "
                                       "run the student forward before the loss")
                if t_name not in self._teacher_features:
                    raise RuntimeError(f"FeatureLoss: no output recorded for teacher layer {t_name!r}; "
                                       "run the teacher forward before the loss")
                s_feat = self._student_features[s_name]
                t_feat = self._teacher_features[t_name].detach()
                # nn.ModuleDict has no .get()
                projection = self.projections[str(index)] if str(index) in self.projections else None  # noqa: SIM401
                if projection is not None:
                    s_feat = projection(s_feat)
                if s_feat.shape != t_feat.shape:
                    raise ValueError(f"layers: student layer {s_name!r} gives shape {tuple(s_feat.shape)} "
                                     f"(after projection) but teacher layer {t_name!r} gives "
                                     f"{tuple(t_feat.shape)}")
                term = F.mse_loss(s_feat.float(), t_feat.float())
                total = term if total is None else total + term
        finally:
            # Never let a stale feature from an earlier batch be reused.
            self._student_features.clear()
            self._teacher_features.clear()
        return total / len(self.pairs)


def _hidden_states(name: str, output: Any) -> torch.Tensor:
    """The tensor of an encoder's output: itself, a Hugging Face output's
    ``last_hidden_state``, or the first element of a tuple."""
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return _check_output(name, hidden)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return _check_output(name, output[0])
    return _check_output(name, output)


def _mean_pool(hidden: torch.Tensor, targets: Any) -> torch.Tensor:
    """Mean over the tokens of ``hidden [..., tokens, D]``; padding excluded
    when ``targets`` is a mapping with an ``attention_mask [..., tokens]``."""
    if hidden.ndim < 2:
        raise ValueError(f"student_output: pooling='mean' needs [..., tokens, D], got shape {tuple(hidden.shape)}")
    mask = targets.get("attention_mask") if isinstance(targets, Mapping) else None
    if mask is None:
        return hidden.float().mean(dim=-2)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets: attention_mask must be a tensor of shape {tuple(hidden.shape[:-1])}, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    weights = mask.to(torch.float32).unsqueeze(-1)
    # A row with no token counts as one token of zeros, never a division by zero.
    return (hidden.float() * weights).sum(dim=-2) / weights.sum(dim=-2).clamp_min(1.0)


class EmbeddingLoss(nn.Module):
    """Distance between student and teacher embeddings (encoder outputs).

    ``distance="cosine"``: mean of ``1 - cos(s, t)`` over all vectors along the
    last dimension; ``"mse"``: mean squared error. Outputs have shape
    ``[..., D]``; a Hugging Face output's ``last_hidden_state`` or the first
    tensor of a tuple output is used. ``pooling="mean"`` compares sentence
    embeddings instead of token vectors: the mean over the tokens
    (``[..., tokens, D] -> [..., D]``), counting only the tokens whose
    ``attention_mask`` is 1 when ``targets`` is a mapping holding one (the
    tokenizer batch :class:`Distiller` passes for mapping batches). When the
    widths differ, pass ``student_dim`` and ``teacher_dim``: a learnable
    linear projection maps the student embedding to the teacher width (give
    its parameters to the optimizer).
    """

    def __init__(self, distance: str = "cosine", *, pooling: str | None = None, student_dim: int | None = None,
                 teacher_dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(distance, str):
            raise TypeError(f"distance: expected 'cosine' or 'mse', got {type(distance).__name__}")
        if distance not in ("cosine", "mse"):
            raise ValueError(f"distance: expected 'cosine' or 'mse', got {distance!r}")
        if pooling is not None and not isinstance(pooling, str):
            raise TypeError(f"pooling: expected None or 'mean', got {type(pooling).__name__}")
        if pooling is not None:
            check_choice("pooling", pooling, ("mean",))
        self.pooling = pooling
        for name, dim in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
                raise ValueError(f"{name}: expected None or an int >= 1, got {dim!r}")
        if (student_dim is None) != (teacher_dim is None):
            raise ValueError("teacher_dim: student_dim and teacher_dim must be given together")
        self.distance = distance
        self.projection = (nn.Linear(student_dim, teacher_dim)
                           if student_dim is not None and student_dim != teacher_dim else None)

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}" + (f", pooling={self.pooling!r}" if self.pooling else "")

    def forward(self, student_output: Any, teacher_output: Any, targets: Any = None) -> torch.Tensor:
        s = _hidden_states("student_output", student_output)
        t = _hidden_states("teacher_output", teacher_output).detach()
        if self.pooling == "mean":
            if s.shape[:-1] != t.shape[:-1]:
                raise ValueError(f"teacher_output: expected the tokens of student_output {tuple(s.shape[:-1])}, "
                                 f"got shape {tuple(t.shape)}")
            s, t = _mean_pool(s, targets), _mean_pool(t, targets)
        if self.projection is not None:
            if s.ndim == 0 or s.shape[-1] != self.projection.in_features:
                raise ValueError(f"student_output: expected last dimension {self.projection.in_features} "
                                 f"(student_dim), got shape {tuple(s.shape)}")
            s = self.projection(s.to(self.projection.weight.dtype))
        if s.ndim == 0 or s.shape != t.shape:
            raise ValueError(f"teacher_output: expected the shape of the (projected) student output "
                             f"{tuple(s.shape)}, got {tuple(t.shape)}")
        s, t = s.float(), t.float()
        if self.distance == "mse":
            return F.mse_loss(s, t)
        return (1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)).mean()


class CombinedLoss(nn.Module):
    """A weighted sum of losses that follow the same protocol, e.g.
    ``CombinedLoss([(1.0, KDLoss(4, 0.5)), (0.1, FeatureLoss(...))])``."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not isinstance(terms, Sequence) or isinstance(terms, str) or not terms:
            raise ValueError("terms: expected a non-empty sequence of (weight, loss) pairs")
        weights = []
        losses = []
        for i, term in enumerate(terms):
            if not (isinstance(term, (tuple, list)) and len(term) == 2):
                raise TypeError(f"terms: entry {i} is not a (weight, loss) pair")
            weight = check_real(f"terms[{i}] weight", term[0], allow_inf=False)
            if not isinstance(term[1], nn.Module):
                raise TypeError(f"terms: entry {i} loss is a {type(term[1]).__name__}; expected an nn.Module")
            weights.append(weight)
            losses.append(term[1])
        self.weights = weights
        self.losses = nn.ModuleList(losses)

    def forward(self, student_output: Any, teacher_output: Any, targets: Any = None) -> torch.Tensor:
        total = None
        for weight, loss in zip(self.weights, self.losses):
            term = weight * loss(student_output, teacher_output, targets)
            total = term if total is None else total + term
        return total

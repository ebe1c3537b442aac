"""Int8Linear: an ``nn.Linear`` with per-output-channel symmetric int8 weights,
run on slimtorch's int8 kernels (:mod:`slimtorch.ops.qgemm`).

Modes:

* ``"dynamic"``: each input row is quantized on the fly to asymmetric uint8
  (per-row scale and zero point), multiplied exactly in int32, and rescaled
  in float. A row with NaN/Inf gives a NaN output row.
* ``"static"``: as dynamic, with one activation scale and zero point given
  up front (from calibration).
* ``"weight_only"``: float activations; the kernel converts the int8 weight
  in registers. NaN/Inf propagate as in ``nn.Linear``.

The state_dict holds ``weight_int8`` (int8 ``[out, in]``), ``weight_scale``
(float32 ``[out]``), ``bias`` (float32 ``[out]``, if any) and, in static mode,
``input_scale`` / ``input_zero_point``; the kernel layout and column sums are
rebuilt from them on construction and after ``load_state_dict``.

The weights are frozen; the layer is differentiable with respect to its input
(straight-through for the integer modes, see :mod:`slimtorch.ops.qgemm`).
"""

from __future__ import annotations

import torch
from torch import nn

from slimtorch import _native
from slimtorch.ops import qgemm as qops
from slimtorch._checks import FLOAT_DTYPES

__all__ = ["Int8Linear"]

MODES = ("dynamic", "weight_only", "static")
_FLOAT32_BUFFERS = ("weight_scale", "bias", "input_scale")


def _check_features(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value}")
    return value


def _repack_after_load(module: Int8Linear, incompatible_keys) -> None:
    # A module-level function, not a lambda, so that the layer stays picklable.
    module._repack()


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored as int8 per output channel.

    Build one from a trained layer with :meth:`from_dense`; the constructor
    makes a layer with zero weights, ready for ``load_state_dict``.

    Args:
        in_features, out_features: sizes, as ``nn.Linear``.
        bias: whether the layer has a bias.
        mode: ``"dynamic"``, ``"weight_only"`` or ``"static"``.
        x_scale, x_zero_point: the activation scale (> 0) and uint8 zero point
            in [0, 255]; required in static mode, rejected otherwise.
        device: where the buffers live.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 mode: str = "dynamic", x_scale: float | None = None,
                 x_zero_point: int | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features = _check_features("in_features", in_features)
        self.out_features = _check_features("out_features", out_features)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
        self.mode = mode
        if mode != "weight_only" and in_features > qops.MAX_K:
            raise ValueError(f"in_features: at most {qops.MAX_K} fit exact int32 accumulation "
                             f"in mode {mode!r}, got {in_features} (use mode='weight_only')")
        if mode == "static":
            if x_scale is None or x_zero_point is None:
                raise ValueError("x_scale: static mode needs x_scale and x_zero_point (from calibration)")
            scale, zero_point = qops.check_scale(x_scale), qops.check_zero_point(x_zero_point)
        elif x_scale is not None or x_zero_point is not None:
            raise ValueError(f"x_scale: only static mode takes x_scale / x_zero_point, mode is {mode!r}")
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None)
        if mode == "static":
            self.register_buffer("input_scale", torch.tensor(scale, dtype=torch.float32, device=device))
            self.register_buffer("input_zero_point", torch.tensor(zero_point, dtype=torch.int32, device=device))
        self.register_load_state_dict_post_hook(_repack_after_load)
        self._repack()

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, mode: str = "dynamic", x_scale: float | None = None,
                   x_zero_point: int | None = None) -> Int8Linear:
        """Quantize ``linear`` (per output channel, symmetric int8) into an Int8Linear
        on the same device. ``x_scale`` / ``x_zero_point``: static mode only."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode=mode,
                    x_scale=x_scale, x_zero_point=x_zero_point, device=linear.weight.device)
        q, scale = qops.qgemm_quantize_weight(linear.weight.detach())
        with torch.no_grad():
            layer.weight_int8.copy_(q)
            layer.weight_scale.copy_(scale)
            if linear.bias is not None:
                if not bool(torch.isfinite(linear.bias).all()):
                    raise ValueError("linear: bias contains NaN or Inf")
                layer.bias.copy_(linear.bias.detach().float())
        layer._repack()
        return layer

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` (float32) with the dequantized weight ``q * scale``."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                           device=self.weight_int8.device)
        with torch.no_grad():
            linear.weight.copy_(self.weight_int8.float() * self.weight_scale[:, None])
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def _repack(self) -> None:
        """Rebuild the kernel layout and column sums from the persistent buffers."""
        for name in ("weight_int8", "weight_scale", "bias"):
            value = getattr(self, name)
            expected = (self.out_features, self.in_features) if name == "weight_int8" else (self.out_features,)
            if value is not None and tuple(value.shape) != expected:
                raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
        weight = qops.qgemm_pack_weight(self.weight_int8, self.weight_scale)
        self.register_buffer("packed", weight.packed, persistent=False)
        self.register_buffer("colsum", weight.colsum, persistent=False)
        if self.mode == "static":
            self._x_scale = qops.check_scale(self.input_scale)
            self._x_zero_point = qops.check_zero_point(self.input_zero_point)

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) would round the float32 scales and bias; they
        # follow device moves only.
        before = {name: self._buffers.get(name) for name in _FLOAT32_BUFFERS}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers.get(name)
            if old is not None and new is not None and new.dtype != torch.float32:
                self._buffers[name] = old.to(new.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"input: expected shape [..., {self.in_features}], got {tuple(x.shape)}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"input: expected dtype float32, float16 or bfloat16, got {x.dtype}")
        buffers = self._buffers
        packed, w_scale, bias = buffers["packed"], buffers["weight_scale"], buffers["bias"]
        if x.device != packed.device:
            raise ValueError(f"input: expected a tensor on {packed.device} (the layer's device), got {x.device}")
        mode = self.mode
        # Eager CPU inference calls the native kernel directly: torch.library
        # dispatch alone costs more than a small layer's whole GEMV.
        if (x.dtype is torch.float32 and x.is_cpu and _native.cpu is not None
                and self.in_features > 0 and not (x.requires_grad and torch.is_grad_enabled())
                and not torch.compiler.is_compiling()):
            n = self.out_features
            x2 = x if x.dim() == 2 else x.reshape(-1, self.in_features)
            if not x2.is_contiguous():
                x2 = x2.contiguous()
            m, k = x2.shape
            y = torch.empty(m, n)
            bias_ptr = 0 if bias is None else bias.data_ptr()
            if mode == "weight_only":
                _native.cpu.qlinear_weight_only(x2.data_ptr(), m, k, k, packed.data_ptr(), w_scale.data_ptr(),
                                                bias_ptr, n, y.data_ptr(), n, torch.get_num_threads())
            else:
                static = mode == "static"
                _native.cpu.qlinear_u8s8(x2.data_ptr(), m, k, k, packed.data_ptr(), w_scale.data_ptr(),
                                         buffers["colsum"].data_ptr(), bias_ptr, n, y.data_ptr(), n, static,
                                         self._x_scale if static else 1.0,
                                         self._x_zero_point if static else 0, torch.get_num_threads())
            return y if x.dim() == 2 else y.view(*x.shape[:-1], n)
        if mode == "dynamic":
            return qops._dynamic_op(x, packed, w_scale, buffers["colsum"], bias)
        if mode == "static":
            return qops._static_op(x, packed, w_scale, buffers["colsum"], bias, self._x_scale, self._x_zero_point)
        return qops._weight_only_op(x, packed, w_scale, bias)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, mode={self.mode!r}"
        if self.mode == "static":
            text += f", x_scale={self._x_scale}, x_zero_point={self._x_zero_point}"
        return text

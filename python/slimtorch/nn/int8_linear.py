"""Int8Linear: an ``nn.Linear`` with per-output-channel symmetric int8 weights,
run on slimtorch's int8 kernels (:mod:`slimtorch.ops.qgemm`).

Schemes (:mod:`slimtorch.schemes`):

* ``"int8_dynamic"``: each input row is quantized on the fly to asymmetric
  uint8 (per-row scale and zero point), multiplied exactly in int32, and
  rescaled in float. A row with NaN/Inf gives a NaN output row.
* ``"int8_static"``: as dynamic, with one activation scale and zero point
  given up front (from calibration).
* ``"int8_weight_only"``: float activations; the kernel converts the int8
  weight in registers. NaN/Inf propagate as in ``nn.Linear``.

The state_dict holds ``weight_int8`` (int8 ``[out, in]``), ``weight_scale``
(float32 ``[out]``), ``bias`` (float32 ``[out]``, if any) and, for
``"int8_static"``, ``activation_scale`` / ``activation_zero_point`` (state
dicts with the older keys ``input_scale`` / ``input_zero_point`` load too).
The kernel layout and column sums are rebuilt from them whenever they
change. Every tensor the layer receives is validated as a whole before
anything is replaced; a rejected one leaves the layer as it was.

The weights are frozen; the layer is differentiable with respect to its input
(straight-through for the integer schemes, see :mod:`slimtorch.ops.qgemm`).
"""

from __future__ import annotations

import torch
from torch import nn

from slimtorch import ops
from slimtorch._checks import FLOAT_DTYPES, check_bool, check_int, check_module
from slimtorch.nn._shared import convert_once
from slimtorch.nn.registry import register_layer_class
from slimtorch.schemes import INT8_DYNAMIC, INT8_STATIC, INT8_WEIGHT_ONLY, SCHEMES, check_scheme, deprecated_alias

__all__ = ["Int8Linear"]

_FLOAT32_BUFFERS = ("weight_scale", "bias", "activation_scale")
_OLD_KEYS = {"input_scale": "activation_scale", "input_zero_point": "activation_zero_point"}
_OLD_MODES = {"dynamic": INT8_DYNAMIC, "weight_only": INT8_WEIGHT_ONLY, "static": INT8_STATIC}


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored as int8 per output channel.

    Build one from a trained layer with :meth:`from_dense`; the constructor
    makes a layer with zero weights, ready for ``load_state_dict``.

    Args:
        in_features, out_features: sizes, as ``nn.Linear``.
        bias: whether the layer has a bias.
        scheme: ``"int8_dynamic"``, ``"int8_weight_only"`` or ``"int8_static"``.
        activation_scale, activation_zero_point: the activation scale (> 0)
            and uint8 zero point in [0, 255]; required for ``"int8_static"``,
            rejected otherwise.
        mode, x_scale, x_zero_point: deprecated aliases of ``scheme``
            (``"dynamic"``, ``"weight_only"``, ``"static"``),
            ``activation_scale`` and ``activation_zero_point``.
        device: where the buffers live.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 scheme: str = INT8_DYNAMIC, activation_scale: float | None = None,
                 activation_zero_point: int | None = None, device: torch.device | str | None = None,
                 mode: str | None = None, x_scale: float | None = None, x_zero_point: int | None = None) -> None:
        super().__init__()
        scheme = deprecated_alias("mode", mode, "scheme", scheme, INT8_DYNAMIC, translate=True)
        activation_scale = deprecated_alias("x_scale", x_scale, "activation_scale", activation_scale, None)
        activation_zero_point = deprecated_alias("x_zero_point", x_zero_point, "activation_zero_point",
                                                 activation_zero_point, None)
        self.in_features = check_int("in_features", in_features, minimum=0)
        self.out_features = check_int("out_features", out_features, minimum=0)
        check_bool("bias", bias)
        self.scheme = check_scheme("scheme", scheme, SCHEMES)
        if scheme != INT8_WEIGHT_ONLY and in_features > ops.MAX_K:
            raise ValueError(f"in_features: at most {ops.MAX_K} fit exact int32 accumulation "
                             f"with scheme {scheme!r}, got {in_features} (use scheme='int8_weight_only')")
        buffers = {
            "weight_int8": torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
            "weight_scale": torch.ones(out_features, dtype=torch.float32, device=device),
            "bias": torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None,
        }
        if scheme == INT8_STATIC:
            if activation_scale is None or activation_zero_point is None:
                raise ValueError("activation_scale: scheme 'int8_static' needs activation_scale and "
                                 "activation_zero_point (from calibration)")
            scale = ops.check_activation_scale(activation_scale)
            zero_point = ops.check_activation_zero_point(activation_zero_point)
            buffers["activation_scale"] = torch.tensor(scale, dtype=torch.float32, device=device)
            buffers["activation_zero_point"] = torch.tensor(zero_point, dtype=torch.int32, device=device)
        elif activation_scale is not None or activation_zero_point is not None:
            raise ValueError(f"activation_scale: only scheme 'int8_static' takes activation_scale / "
                             f"activation_zero_point, scheme is {scheme!r}")
        for name, value in buffers.items():
            self.register_buffer(name, value)
        self._install(buffers)

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, scheme: str = INT8_DYNAMIC, activation_scale: float | None = None,
                   activation_zero_point: int | None = None, mode: str | None = None,
                   x_scale: float | None = None, x_zero_point: int | None = None) -> Int8Linear:
        """Quantize ``linear`` (per output channel, symmetric int8) into an
        Int8Linear on the same device. ``activation_scale`` /
        ``activation_zero_point``: ``"int8_static"`` only. ``mode``,
        ``x_scale``, ``x_zero_point``: deprecated aliases."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        scheme = deprecated_alias("mode", mode, "scheme", scheme, INT8_DYNAMIC, translate=True)
        activation_scale = deprecated_alias("x_scale", x_scale, "activation_scale", activation_scale, None)
        activation_zero_point = deprecated_alias("x_zero_point", x_zero_point, "activation_zero_point",
                                                 activation_zero_point, None)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme=scheme,
                    activation_scale=activation_scale, activation_zero_point=activation_zero_point,
                    device=linear.weight.device)
        q, scale = ops.qgemm_quantize_weight(linear.weight.detach())
        given = {"weight_int8": q, "weight_scale": scale}
        if linear.bias is not None:
            if not bool(torch.isfinite(linear.bias).all()):
                raise ValueError("linear: bias contains NaN or Inf")
            given["bias"] = linear.bias.detach().float().clone()
        layer._install(layer._would_be(given))
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

    def share_bias(self, bias: torch.Tensor) -> Int8Linear:
        """Use ``bias`` itself, not a copy, as this layer's bias: a finite
        float32 ``[out_features]`` tensor on the layer's device that another
        module holds too (a masked-LM head's bias tied to its parent's
        parameter). Returns ``self``."""
        if self.bias is None:
            raise ValueError("bias: the layer has no bias")
        state = self._would_be({"bias": bias})  # validates a copy; the tensor itself is then installed
        if bias.dtype != torch.float32:
            raise TypeError(f"bias: expected dtype float32 to share, got {bias.dtype}")
        if bias.device != self.weight_int8.device or not bias.is_contiguous():
            raise ValueError(f"bias: expected a contiguous tensor on {self.weight_int8.device} to share, "
                             f"got {bias.device if bias.is_contiguous() else 'a non-contiguous one'}")
        state["bias"] = bias
        self._install(state)
        return self

    @property
    def mode(self) -> str:
        """Deprecated: the scheme without its ``int8_`` prefix; use :attr:`scheme`."""
        return self.scheme.removeprefix("int8_")

    # ---- internal state ----------------------------------------------------------

    def _persistent(self) -> tuple[str, ...]:
        names = ("weight_int8", "weight_scale", "bias")
        return names + ("activation_scale", "activation_zero_point") if self.scheme == INT8_STATIC else names

    def _would_be(self, given: dict[str, object]) -> dict[str, torch.Tensor | None]:
        """The buffers with ``given`` tensors over the current ones, converted
        and validated as a whole (TypeError/ValueError); the layer itself is
        not touched."""
        device = self.weight_int8.device
        state = {name: self._buffers.get(name) for name in self._persistent()}
        for name, value in given.items():
            if value is None:
                if name != "bias":
                    raise TypeError(f"{name}: expected a tensor, got None")
                state[name] = None
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor, got {type(value).__name__}")
            if name == "weight_int8" and value.dtype != torch.int8:
                raise TypeError(f"weight_int8: expected dtype int8, got {value.dtype}")
            if name in _FLOAT32_BUFFERS and value.dtype not in FLOAT_DTYPES + (torch.float64,):
                raise TypeError(f"{name}: expected a float dtype, got {value.dtype}")
            value = value.detach().to(device, copy=True)  # the caller keeps no handle on the layer's state
            state[name] = value.float() if name in _FLOAT32_BUFFERS else value
        expected = {"weight_int8": (self.out_features, self.in_features), "weight_scale": (self.out_features,),
                    "bias": (self.out_features,), "activation_scale": (), "activation_zero_point": ()}
        for name, value in state.items():
            if value is not None and tuple(value.shape) != expected[name]:
                raise ValueError(f"{name}: expected shape {expected[name]}, got {tuple(value.shape)}")
        if (state["bias"] is not None and given.get("bias") is not None
                and not bool(torch.isfinite(state["bias"]).all())):
            raise ValueError("bias: expected finite values")
        return state

    def _install(self, state: dict[str, torch.Tensor | None]) -> None:
        """Packs ``state`` (validated by the ops) and makes it the layer's:
        buffers and the prepared weight forward reads in one attribute."""
        weight = ops.qgemm_pack_weight(state["weight_int8"], state["weight_scale"])
        activation = None
        if self.scheme == INT8_STATIC:
            activation = ops.ActivationQParams(ops.check_activation_scale(state["activation_scale"]),
                                               ops.check_activation_zero_point(state["activation_zero_point"]))
        bias = state["bias"]
        if bias is not None:
            bias = bias.contiguous()
        for name, value in state.items():
            self._buffers[name] = bias if name == "bias" else value
        self.__dict__["_state"] = (weight, activation, bias)

    def __setattr__(self, name: str, value: object) -> None:
        if "_state" in self.__dict__ and name in self._persistent():
            self._install(self._would_be({name: value}))
            return
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) would round the float32 scales and bias; they
        # follow device moves only.
        # Tensors shared with a tied embedding are converted once for both.
        before = {name: self._buffers.get(name) for name in _FLOAT32_BUFFERS}
        super()._apply(lambda t: convert_once(fn, t), recurse)
        for name, old in before.items():
            new = self._buffers.get(name)
            if old is not None and new is not None and new.dtype != torch.float32:
                self._buffers[name] = convert_once(fn, old, "float32", lambda t, device=new.device: t.to(device))
        self._install({name: self._buffers.get(name) for name in self._persistent()})
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for old, new in _OLD_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        given = {name: state_dict[prefix + name] for name in self._persistent() if prefix + name in state_dict}
        try:
            if "bias" in given and self.bias is None:
                raise ValueError("bias: the layer has no bias")
            self._install(self._would_be(given))
        except (TypeError, ValueError) as error:
            error_msgs.append(f"{prefix or 'Int8Linear'}: invalid int8 weight: {error}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ---- forward -------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, activation, bias = self._state  # one read: a consistent state even while another thread reloads
        # The op validates x (type, shape, dtype, device; errors name x).
        scheme = self.scheme
        if scheme == INT8_DYNAMIC:
            return ops.qlinear_dynamic(x, weight, bias)
        if scheme == INT8_STATIC:
            return ops.qlinear_static(x, weight, activation.scale, activation.zero_point, bias)
        return ops.qlinear_weight_only(x, weight, bias)

    def extra_repr(self) -> str:
        text = (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, scheme={self.scheme!r}")
        if self.scheme == INT8_STATIC:
            activation = self._state[1]
            text += f", activation_scale={activation.scale}, activation_zero_point={activation.zero_point}"
        return text


def _build(init: dict) -> Int8Linear:
    """The empty layer for a file's ``init``; files written before the
    scheme vocabulary recorded ``mode`` / ``x_scale`` / ``x_zero_point``."""
    init = dict(init)
    for old, new in (("mode", "scheme"), ("x_scale", "activation_scale"), ("x_zero_point", "activation_zero_point")):
        if old in init:
            if new in init:
                raise ValueError(f"{old}: an earlier spelling of {new}; a layer records one of them, not both")
            value = init.pop(old)
            init[new] = _OLD_MODES.get(value, "invalid") if old == "mode" else value
    return Int8Linear(**init)


@register_layer_class("Int8Linear", lambda layer: layer.scheme, _build, _OLD_KEYS)
def _init_args(layer: nn.Module) -> dict:
    check_module("layer", layer)
    args = {"in_features": layer.in_features, "out_features": layer.out_features,
            "bias": layer.bias is not None, "scheme": layer.scheme}
    if layer.scheme == INT8_STATIC:  # required by the constructor; load_state_dict then sets the same values
        activation = layer._state[1]
        args.update(activation_scale=activation.scale, activation_zero_point=activation.zero_point)
    return args

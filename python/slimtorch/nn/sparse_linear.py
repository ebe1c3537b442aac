"""SparseLinear: a pruned ``nn.Linear`` stored as packed sparse rows and run
on slimtorch's sparse kernels, or on torch's dense kernel where that is faster.

Dense fallback ("never slower than what it replaces"): the sparse kernels
beat dense only below some density, and that density falls as the batch
grows and rises when the dense weight no longer fits in the last-level
cache. The break-even densities per ISA path come from the data file the
package ships (see :mod:`slimtorch.data`, read by
:func:`slimtorch.ops.sparse_batches`). At the batch sizes where its density
is above the break-even (:attr:`SparseLinear.sparse_batches` says which run
sparse) a layer runs ``F.linear`` on a dense copy of its weight (built
once, never saved); with int8
values on a CPU path with int8 tiles (Intel AMX) the dense copy is the same
int8 weights packed for the qgemm ops instead (see
:func:`slimtorch.ops.sparse_int8_fallback`), for both int8 schemes. The
``dispatch`` attribute overrides the choice (``"sparse"``, ``"dense"``).

Every tensor the layer receives (constructor, ``load_state_dict`` strict or
not, ``assign=True``, attribute assignment, ``.to()``) is validated as a
whole before anything is replaced; a rejected one leaves the layer as it was.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from slimtorch import ops
from slimtorch._checks import FLOAT_DTYPES, check_bool, check_choice, check_fraction, check_int, check_module
from slimtorch.nn.registry import register_layer_class
from slimtorch.schemes import INT8_DYNAMIC, INT8_WEIGHT_ONLY, check_scheme, deprecated_alias

__all__ = ["SparseLinear", "SCHEMES", "DISPATCH"]

# None: float values; "int8_weight_only": int8 values (per-row scales), float
# activations; "int8_dynamic": int8 values times activations quantized per
# row on the fly.
SCHEMES = (None, INT8_WEIGHT_ONLY, INT8_DYNAMIC)
# "auto": sparse at the batches the break-even data says it wins, dense at
# the others; "sparse": always
# the sparse kernel; "dense": always the dense fallback.
DISPATCH = ("auto", "sparse", "dense")

_PACKED = ("row_ptr", "col_idx", "values", "row_scales")
_OLD_ACTIVATIONS = {"float": None, "int8_dynamic": INT8_DYNAMIC}


def _resolve_scheme(scheme: object, activations: object, values_dtype: object) -> tuple[str | None, torch.dtype]:
    """The layer's scheme and values dtype from the constructor arguments
    (``activations``: deprecated alias of ``scheme``)."""
    if activations is not None:
        check_choice("activations", activations, tuple(_OLD_ACTIVATIONS))
        scheme = deprecated_alias("activations", _OLD_ACTIVATIONS[activations], "scheme", scheme, None,
                                  stacklevel=4)
    scheme = check_scheme("scheme", scheme, SCHEMES)
    if values_dtype is not None and values_dtype not in ops.VALUE_DTYPES:
        raise TypeError(f"values_dtype: expected None or one of float32, float16, bfloat16, int8, got {values_dtype}")
    if scheme is None:
        values_dtype = values_dtype or torch.float32
        return (INT8_WEIGHT_ONLY if values_dtype == torch.int8 else None), values_dtype
    if values_dtype not in (None, torch.int8):
        raise ValueError(f"scheme: {scheme!r} stores int8 values, got values_dtype={values_dtype}")
    return scheme, torch.int8


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with a sparse, frozen ``W`` packed as compressed rows.

    Build one with :meth:`from_dense`. Buffers (the whole state_dict besides
    ``bias``): ``row_ptr`` int64 ``[out+1]``, ``col_idx`` int16/int32 ``[nnz]``,
    ``values`` ``[nnz]`` float32/float16/bfloat16/int8, and ``row_scales``
    float32 ``[out]`` for int8 values. ``bias`` is a trainable parameter; the
    weight is frozen, gradients flow to the input and the bias.

    Args:
        in_features, out_features: layer sizes.
        bias: whether the layer has a bias.
        values_dtype: dtype of the stored nonzeros (None: float32, or int8
            for an int8 scheme).
        scheme: ``None`` (values as stored), ``"int8_weight_only"`` (int8
            values, float activations) or ``"int8_dynamic"`` (int8 values;
            each input row quantized to uint8 on the fly and multiplied in
            integers; the gradient with respect to the input passes straight
            through the rounding). Int8 schemes imply int8 values.
        activations: deprecated alias of ``scheme`` (``"float"`` is ``None``).
        device: where the (all-zero) packed weight is created.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        values_dtype: torch.dtype | None = None,
        scheme: str | None = None,
        activations: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        scheme, values_dtype = _resolve_scheme(scheme, activations, values_dtype)
        self.in_features = check_int("in_features", in_features, minimum=0)
        self.out_features = check_int("out_features", out_features, minimum=0)
        check_bool("bias", bias)
        self.scheme = scheme
        self.__dict__["_dispatch"] = "auto"
        index_dtype = torch.int16 if in_features <= ops.spmm.MAX_NARROW_COLS else torch.int32
        scales = torch.ones(out_features, device=device) if values_dtype == torch.int8 else None
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        self._install(ops.SparseWeight(
            torch.zeros(out_features + 1, dtype=torch.int64, device=device),
            torch.empty(0, dtype=index_dtype, device=device),
            torch.empty(0, dtype=values_dtype, device=device),
            scales, in_features,
        ))

    # ---- construction ------------------------------------------------------------

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        *,
        sparsity: float | None = None,
        values_dtype: torch.dtype | None = None,
        scheme: str | None = None,
        activations: str | None = None,
    ) -> SparseLinear:
        """A SparseLinear computing what ``linear`` computes with its zeros dropped.

        Args:
            linear: the ``nn.Linear`` to convert (not modified).
            sparsity: None keeps exactly the zeros already in ``linear.weight``;
                a number in [0, 1] first prunes ``round(sparsity * numel)``
                weights of smallest magnitude.
            values_dtype: None keeps the weight's dtype (int8 for an int8
                scheme); float32, float16 or bfloat16 converts; int8 stores
                symmetric per-output-row int8 ("sparse int8") with float32
                row scales.
            scheme: as in the class; ``activations``: its deprecated alias.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        if values_dtype is None and scheme is None and activations in (None, "float"):
            values_dtype = linear.weight.dtype  # float values as trained
        scheme, values_dtype = _resolve_scheme(scheme, activations, values_dtype)
        weight = linear.weight.detach()
        if sparsity is not None:
            sparsity = check_fraction("sparsity", sparsity)
            keep = ops.magnitude_masks([weight], sparsity)[0]  # exactly round(sparsity * numel) pruned
            weight = torch.where(keep, weight, torch.zeros_like(weight))
        packed = ops.SparseWeight.from_dense(weight, values_dtype)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    values_dtype=packed.values.dtype, scheme=scheme, device=weight.device)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone())
        layer._install(packed)
        return layer

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` with the same weights and a copy of the bias, in
        the bias's dtype (without a bias: float32 for int8 values, else the
        values' dtype)."""
        weight = self.packed().to_dense()
        if self.bias is not None:
            weight = weight.to(self.bias.dtype)
        elif self.values.dtype != torch.int8:
            weight = weight.to(self.values.dtype)
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def packed(self) -> ops.SparseWeight:
        """The packed weight the kernels run (validated when it was installed)."""
        return self._state[0]

    @property
    def nnz(self) -> int:
        return self.packed().nnz

    @property
    def density(self) -> float:
        return self.packed().density

    @property
    def sparse_batches(self) -> ops.SparseBatches:
        """The batch sizes (rows of ``x``, all leading dimensions together)
        at which :meth:`forward` runs the sparse kernel under the current
        :attr:`dispatch`; the dense fallback runs at the others. E.g.
        ``16 in layer.sparse_batches``, or ``str(layer.sparse_batches)``:
        ``"0-16, 129+"``."""
        return self._state[1]

    @property
    def dispatch(self) -> str:
        """``"auto"`` (default: the sparse kernel at the batches where this
        ISA path's break-even data says it wins, see :attr:`sparse_batches`,
        dense at the others), ``"sparse"`` (always the sparse kernel,
        e.g. to time it) or ``"dense"`` (always the dense fallback: ``F.linear``
        on a dense copy, or the int8 tile kernels, see the module docstring)."""
        return self._dispatch

    @dispatch.setter
    def dispatch(self, value: str) -> None:
        check_choice("dispatch", value, DISPATCH)
        self.__dict__["_dispatch"] = value
        self._install(self.packed())

    @property
    def activations(self) -> str:
        """Deprecated: ``"int8_dynamic"`` or ``"float"``; use :attr:`scheme`."""
        return "int8_dynamic" if self.scheme == INT8_DYNAMIC else "float"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, values={str(self.values.dtype).removeprefix('torch.')}, "
                f"density={self.density:.3f}" + (f", scheme={self.scheme!r}" if self.scheme else ""))

    # ---- internal state ------------------------------------------------------------

    def _check_fits(self, weight: ops.SparseWeight) -> None:
        """``weight`` has this layer's shape and values its scheme can run."""
        if weight.in_features != self.in_features or weight.out_features != self.out_features:
            raise ValueError(f"weight: expected a {self.out_features}x{self.in_features} packed weight, "
                             f"got {weight.out_features}x{weight.in_features}")
        if self.scheme == INT8_DYNAMIC and weight.values.dtype != torch.int8:
            raise TypeError(f"values: a layer with scheme {self.scheme!r} needs int8 values, got {weight.values.dtype}")

    def _install(self, weight: ops.SparseWeight) -> None:
        """Makes ``weight`` (validated) the layer's packed weight: its buffers
        and the dispatch state forward reads in one attribute."""
        self._check_fits(weight)
        self.__dict__["scheme"] = (self.scheme if self.scheme == INT8_DYNAMIC
                                   else INT8_WEIGHT_ONLY if weight.values.dtype == torch.int8 else None)
        for name in _PACKED:
            self._buffers[name] = getattr(weight, name)
        device = weight.values.device
        on_tiles = weight.values.dtype == torch.int8 and ops.sparse_int8_fallback(device) == "qgemm"
        if self._dispatch == "sparse" or (self.scheme == INT8_DYNAMIC and not on_tiles):
            # int8_dynamic falls back only to the int8 kernels: F.linear would
            # not quantize the activations.
            batches = ops.SparseBatches.EVERY
        elif self._dispatch == "dense":
            batches = ops.SparseBatches.NONE
        else:
            batches = ops.sparse_batches(weight.density, weight.values.dtype,
                                         self.in_features * self.out_features, device,
                                         dynamic=self.scheme == INT8_DYNAMIC)
        if batches == ops.SparseBatches.EVERY:
            dense = None  # the sparse kernel runs at every batch: no dense copy to carry
        elif on_tiles:
            dense = weight.to_packed_int8()
        else:
            dense = weight.to_dense()
            bias = self._parameters.get("bias")
            if bias is not None and bias.dtype != dense.dtype:
                dense = dense.to(bias.dtype)
        self.__dict__["_state"] = (weight, batches, dense)

    def _check_bias(self, bias: object) -> None:
        if bias is None:
            return
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias: expected a tensor or None, got {type(bias).__name__}")
        if bias.dtype not in FLOAT_DTYPES:
            raise TypeError(f"bias: expected dtype float32, float16 or bfloat16, got {bias.dtype}")
        if tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias: expected shape ({self.out_features},), got {tuple(bias.shape)}")

    def _would_be(self, replaced: dict[str, object]) -> ops.SparseWeight:
        """The packed weight with some tensors replaced, validated (raises
        TypeError/ValueError); the layer itself is not touched."""
        parts = {name: self._buffers.get(name) for name in _PACKED}
        if "values" in replaced and "row_scales" not in replaced and getattr(
                replaced["values"], "dtype", None) != torch.int8:
            parts["row_scales"] = None
        device = self.values.device
        for name, value in replaced.items():
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor, got {type(value).__name__}")
            # A copy: the caller keeps no handle on what the kernels read.
            parts[name] = None if value is None else value.detach().to(device, copy=True)
        return ops.SparseWeight(parts["row_ptr"], parts["col_idx"], parts["values"], parts["row_scales"],
                                self.in_features)

    def __setattr__(self, name: str, value: object) -> None:
        if name in _PACKED and "_state" in self.__dict__:
            self._install(self._would_be({name: value}))
            return
        if name == "bias" and "_state" in self.__dict__:
            self._check_bias(value)
            super().__setattr__(name, value)
            self._install(self.packed())  # the dense copy follows the bias dtype
            return
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        scales = self._buffers["row_scales"]
        result = super()._apply(fn, recurse)
        # Module.half()/double() convert every float buffer; the kernels need
        # float32 row scales (kept exact: they follow device moves only) and
        # values of a supported dtype.
        buffers = self._buffers
        if scales is not None and buffers["row_scales"].dtype != torch.float32:
            buffers["row_scales"] = scales.to(buffers["row_scales"].device)
        if buffers["values"].dtype not in ops.VALUE_DTYPES:
            buffers["values"] = buffers["values"].float()
        self._install(self._would_be({}))
        return result

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The packed tensors' sizes depend on nnz, so they replace the buffers
        # instead of being copied into them, after the whole would-be state
        # (given tensors over current ones) has been validated.
        given = {name: state_dict[prefix + name] for name in _PACKED if prefix + name in state_dict}
        try:
            weight = self._would_be(given) if given else self.packed()
            self._check_fits(weight)
            if prefix + "bias" in state_dict:
                if self.bias is None:
                    raise ValueError("bias: the layer has no bias")
                self._check_bias(state_dict[prefix + "bias"])
            self._install(weight)
        except (TypeError, ValueError) as error:
            error_msgs.append(f"{prefix or 'SparseLinear'}: invalid packed sparse weight: {error}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._install(self.packed())

    # ---- forward -------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[..., in_features]`` float32/float16/bfloat16 on the layer's
        device. Returns ``[..., out_features]`` in ``x.dtype``."""
        weight, batches, dense = self._state  # one read: a consistent state even while another thread reloads
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        bias = self._parameters.get("bias")
        if bias is not None and bias.dtype is not x.dtype and x.dtype in FLOAT_DTYPES:
            bias = bias.to(x.dtype)
        if dense is not None:  # a dense fallback exists: it runs at the batches the sparse kernel loses
            in_features = self.in_features
            if x.dim() < 1 or x.shape[-1] != in_features:
                raise ValueError(f"x: expected shape [..., {in_features}], got {tuple(x.shape)}")
            batch = x.numel() // in_features if in_features else math.prod(x.shape[:-1])
            if batch not in batches and type(dense) is ops.PackedInt8Weight:
                if x.dtype is torch.float32 or x.dtype is torch.bfloat16:  # float16 stays on the sparse kernels
                    if self.scheme == INT8_DYNAMIC:
                        return ops.qlinear_dynamic(x, dense, bias)
                    return ops.qlinear_weight_only(x, dense, bias)
            elif batch not in batches:
                if x.dtype not in FLOAT_DTYPES:
                    raise TypeError(f"x: expected dtype float32, float16 or bfloat16, got {x.dtype}")
                if x.device != dense.device:
                    raise ValueError(f"x: expected device {dense.device} (that of the layer), got {x.device}")
                return F.linear(x, dense if dense.dtype == x.dtype else dense.to(x.dtype), bias)
        if self.scheme == INT8_DYNAMIC:
            return ops.sparse_linear_dynamic(x, weight, bias)
        return ops.sparse_linear(x, weight, bias)


def _format_of(layer: SparseLinear) -> str:
    if layer.scheme == INT8_DYNAMIC:
        return "sparse_int8_dynamic"
    return "sparse_int8" if layer.values.dtype == torch.int8 else "sparse"


def _build(init: dict) -> SparseLinear:
    init = dict(init)
    if "activations" in init:  # files written before the scheme argument
        init.setdefault("scheme", _OLD_ACTIVATIONS.get(init.pop("activations"), "invalid"))
    return SparseLinear(**init)


@register_layer_class("SparseLinear", _format_of, _build)
def _init_args(layer: nn.Module) -> dict:
    check_module("layer", layer)
    args = {"in_features": layer.in_features, "out_features": layer.out_features,
            "bias": layer.bias is not None, "values_dtype": layer.values.dtype}
    if layer.scheme == INT8_DYNAMIC:  # int8 values alone load as int8_weight_only
        args["scheme"] = layer.scheme
    return args

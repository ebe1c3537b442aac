"""SparseLinear: a pruned ``nn.Linear`` stored as packed sparse rows and run
on slimtorch's sparse kernels, or on torch's dense kernel where that is faster.

Dense fallback ("never slower than what it replaces"): the sparse kernels
beat dense only below some density, and that density falls as the batch
grows and rises when the dense weight no longer fits in the last-level cache.
``BREAK_EVEN_DENSITY`` holds, per values kind, weight size class and batch
size, the highest density at which the sparse kernel was measured faster
than ``nn.Linear`` with the same weights (benchmarks/break_even.py: 2 threads
on a shared 2-core AMD EPYC with AVX-512, shapes 768->3072 and 3072->768 for
"cached", 4096->4096 for "large"; the smaller of two shapes' crossings, kept
a grid step below where the measurement was a tie, because that machine's
timings were noisy). A layer whose density is above the break-even of a
batch size runs ``F.linear`` on a dense copy of its weight (built once, not
saved in the state_dict) for that batch size and larger ones.
GPU break-evens were not measured; the same table is used there.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from slimtorch import _native, ops
from slimtorch._checks import check_fraction
from slimtorch.ops.spmm import MAX_NARROW_COLS, VALUE_DTYPES, SparseWeight, _sparse_linear_op, value_code
from slimtorch.reference.qgemm import quantize_rows

__all__ = ["SparseLinear", "BREAK_EVEN_DENSITY", "BREAK_EVEN_DENSITY_NO_AVX512", "ACTIVATIONS"]

# How a SparseLinear treats its input: "float" multiplies it as it is;
# "int8_dynamic" (int8 values only) quantizes each input row to uint8 with its
# own scale and zero point, as Int8Linear's dynamic mode does, and multiplies
# the codes by the int8 values in exact integer arithmetic.
ACTIVATIONS = ("float", "int8_dynamic")
# Below this many input rows the int8_dynamic kernel (64-row tiles) does not
# pay: the codes are dequantized and the float kernel runs (same values up to
# float rounding).
DYNAMIC_MIN_BATCH = 32

# {(values kind, weight size class): ((batch, highest density at which the
# sparse kernel wins), ...)}, batch ascending. The size class matters because
# a dense weight that stays in the last-level cache makes torch's dense GEMV
# compute-bound and fast, while the sparse kernel is bound by its gathers.
# Measured with benchmarks/break_even.py (2 threads, --reps 9, margin 1.1,
# two runs agreeing) after the batch-1 gather kernels started a second thread
# from 2^13 nonzeros and the panels moved to 16x16 register transposes: at
# batch 1 the sparse kernel beat nn.Linear at every density from 0.05 to 0.7
# (the highest measured) on both size classes, x1.26-5.7; at batch 16 up to
# 0.4 (cached: x1.17-1.50; 0.5: x0.98-1.22), 0.6 (large, float) and 0.7 (large, int8);
# at batch 128 up to 0.4 (cached: x1.14-1.32; 0.5: x1.03-1.07), 0.4 (large,
# float; 0.5: x1.03) and 0.5 (large, int8: x1.17; 0.6: x0.93).
BREAK_EVEN_DENSITY: dict[tuple[str, str], tuple[tuple[int, float], ...]] = {
    ("float", "cached"): ((1, 0.7), (16, 0.4), (128, 0.4)),
    ("float", "large"): ((1, 0.7), (16, 0.6), (128, 0.4)),
    ("int8", "cached"): ((1, 0.7), (16, 0.4), (128, 0.4)),
    ("int8", "large"): ((1, 0.7), (16, 0.7), (128, 0.5)),
}
# The same where the AVX-512 kernels do not run (an AVX2-only or older CPU,
# SLIMTORCH_ISA=avx2|scalar, no native module): without the bitmap kernel the
# batch-1 sparse kernel loses at medium densities. Measured with the AVX2
# kernels forced (SLIMTORCH_ISA=avx2) against torch's own AVX-512 dense GEMM
# on the same machine, the worst case: cached, 0.3 wins at every batch
# (x1.18-2.01), 0.5 loses at batch 1 (x0.68-0.97) and ties at 16 (x0.95-1.22);
# large, 0.5 wins at batch 1 and 16 (x1.32-2.00), 0.4 at 128 is a tie
# (x1.18-1.30), 0.3 wins (x1.70-1.80).
BREAK_EVEN_DENSITY_NO_AVX512: dict[tuple[str, str], tuple[tuple[int, float], ...]] = {
    ("float", "cached"): ((1, 0.3), (16, 0.3), (128, 0.3)),
    ("float", "large"): ((1, 0.5), (16, 0.5), (128, 0.3)),
    ("int8", "cached"): ((1, 0.3), (16, 0.3), (128, 0.3)),
    ("int8", "large"): ((1, 0.5), (16, 0.5), (128, 0.3)),
}
# Dense float32 weights up to this size count as "cached" (half the 32 MiB L3
# of the machine the table was measured on).
CACHED_WEIGHT_BYTES = 16 << 20

_PACKED = ("row_ptr", "col_idx", "values", "row_scales")


def _sparse_max_batch(density: float, values_dtype: torch.dtype, weight_elements: int,
                      device: torch.device = torch.device("cpu")) -> float:
    """The largest batch (rows of x) for which the sparse kernel is used."""
    size = "cached" if 4 * weight_elements <= CACHED_WEIGHT_BYTES else "large"
    avx512 = device.type != "cpu" or (_native.cpu is not None and _native.cpu.active_isa() in ("avx512", "amx"))
    tables = BREAK_EVEN_DENSITY if avx512 else BREAK_EVEN_DENSITY_NO_AVX512
    table = tables[("int8" if values_dtype == torch.int8 else "float", size)]
    best = 0
    for batch, limit in table:
        if density > limit:
            break
        best = batch
    return math.inf if best == table[-1][0] else best


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
        values_dtype: dtype of the stored nonzeros.
        activations: ``"float"`` or ``"int8_dynamic"`` (``ACTIVATIONS``; the
            latter needs int8 values): each input row quantized to uint8 on
            the fly, integer products (AVX-512 VNNI kernel; elsewhere the
            quantized rows are dequantized and the float kernel runs). The
            gradient with respect to the input passes straight through the
            rounding.
        device: where the (all-zero) packed weight is created.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        values_dtype: torch.dtype = torch.float32,
        activations: str = "float",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_activations(activations, values_dtype)
        self.activations = activations
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if values_dtype not in VALUE_DTYPES:
            raise TypeError(f"values_dtype: expected one of float32, float16, bfloat16, int8, got {values_dtype}")
        self.in_features = in_features
        self.out_features = out_features
        index_dtype = torch.int16 if in_features <= MAX_NARROW_COLS else torch.int32
        scales = torch.ones(out_features, device=device) if values_dtype == torch.int8 else None
        self._set_packed(SparseWeight(
            torch.zeros(out_features + 1, dtype=torch.int64, device=device),
            torch.empty(0, dtype=index_dtype, device=device),
            torch.empty(0, dtype=values_dtype, device=device),
            scales, in_features,
        ))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        self._configure()

    # ---- construction ------------------------------------------------------------

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        *,
        sparsity: float | None = None,
        values_dtype: torch.dtype | None = None,
        activations: str = "float",
    ) -> SparseLinear:
        """A SparseLinear computing what ``linear`` computes with its zeros dropped.

        Args:
            linear: the ``nn.Linear`` to convert (not modified).
            sparsity: None keeps exactly the zeros already in ``linear.weight``;
                a number in [0, 1] first prunes ``round(sparsity * numel)``
                weights of smallest magnitude.
            values_dtype: None keeps the weight's dtype; float32, float16 or
                bfloat16 converts; int8 stores symmetric per-output-row int8
                ("sparse int8") with float32 row scales.
            activations: ``"float"`` or ``"int8_dynamic"`` (see the class);
                ``"int8_dynamic"`` with ``values_dtype=None`` stores int8 values.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        if values_dtype is not None and values_dtype not in VALUE_DTYPES:
            raise TypeError(f"values_dtype: expected None or one of float32, float16, bfloat16, int8, got {values_dtype}")
        if activations == "int8_dynamic" and values_dtype is None:
            values_dtype = torch.int8
        _check_activations(activations, values_dtype or linear.weight.dtype)
        weight = linear.weight.detach()
        if sparsity is not None:
            sparsity = check_fraction("sparsity", sparsity)
            keep = ops.magnitude_masks([weight], sparsity)[0]  # exactly round(sparsity * numel) pruned
            weight = torch.where(keep, weight, torch.zeros_like(weight))
        packed = SparseWeight.from_dense(weight, values_dtype)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    values_dtype=packed.values.dtype, activations=activations, device=weight.device)
        layer._set_packed(packed)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone())
        layer._configure()
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

    def packed(self) -> SparseWeight:
        """The packed weight (validated again: O(nnz))."""
        return SparseWeight(self.row_ptr, self.col_idx, self.values, self.row_scales, self.in_features)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        total = self.in_features * self.out_features
        return self.nnz / total if total else 0.0

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, values={str(self.values.dtype).removeprefix('torch.')}, "
                f"density={self.density:.3f}"
                + (f", activations={self.activations!r}" if self.activations != "float" else ""))

    # ---- internal state ------------------------------------------------------------

    def _set_packed(self, packed: SparseWeight) -> None:
        if packed.in_features != self.in_features or packed.out_features != self.out_features:
            raise ValueError(f"weight: expected a {self.out_features}x{self.in_features} packed weight, "
                             f"got {packed.out_features}x{packed.in_features}")
        for name in _PACKED:
            self._buffers.pop(name, None)
            self.register_buffer(name, getattr(packed, name))

    def _configure(self) -> None:
        """Derives the dispatch state from the buffers: the dense fallback
        decision (and its dense weight) and the native fast path's arguments."""
        # No dense fallback for int8_dynamic: no break-even was measured for it
        # (compress_ times it against the dense layer instead).
        self._sparse_max_batch = math.inf if self.activations == "int8_dynamic" else _sparse_max_batch(
            self.density, self.values.dtype, self.in_features * self.out_features, self.values.device)
        packed = self.packed()
        # Derived, not saved: the column bitmap of the batch-1 kernel.
        self.register_buffer("_bitmap", packed.bitmap, persistent=False)
        self._buffers.pop("_dense_weight", None)
        if self._sparse_max_batch != math.inf:
            dense = packed.to_dense()
            if self.bias is not None and self.bias.dtype != dense.dtype:
                dense = dense.to(self.bias.dtype)
            self.register_buffer("_dense_weight", dense, persistent=False)
        self.__dict__["_bias_ref"] = self._parameters.get("bias")
        # Raw arguments for _C.spmm_forward, so the eager CPU inference path
        # skips torch.library dispatch and most attribute lookups.
        if _native.cpu is not None and self.values.device.type == "cpu":
            self._native_args = (
                self.out_features, self.in_features, self.row_ptr.data_ptr(), self.col_idx.data_ptr(),
                self.col_idx.dtype == torch.int32, self.values.data_ptr(), value_code(self.values.dtype),
                0 if self.row_scales is None else self.row_scales.data_ptr(), self.values.shape[0],
                0 if self._bitmap is None else self._bitmap.data_ptr(),
            )
        else:
            self._native_args = None

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in _PACKED or name == "bias":
            # The cached pointers and the dense copy describe the old tensors.
            self.__dict__["_native_args"] = None
            self.__dict__["_bias_ref"] = self._parameters.get("bias")

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        # Module.half()/double() convert every float buffer; the kernels need
        # float32 row scales whatever happened to them.
        if self.row_scales is not None and self.row_scales.dtype != torch.float32:
            self._buffers["row_scales"] = self.row_scales.float()
        if self.values.dtype not in VALUE_DTYPES:
            self._buffers["values"] = self.values.float()
        self._configure()
        return result

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The packed tensors' sizes depend on nnz, so they replace the buffers
        # (after validation) instead of being copied into them.
        keys = [prefix + name for name in ("row_ptr", "col_idx", "values")]
        if all(key in state_dict for key in keys):
            device = self.row_ptr.device
            try:
                packed = SparseWeight(*(state_dict[key].detach().to(device) for key in keys),
                                      None if state_dict.get(prefix + "row_scales") is None
                                      else state_dict[prefix + "row_scales"].detach().to(device),
                                      self.in_features)
                self._set_packed(packed)
            except (TypeError, ValueError) as error:
                error_msgs.append(f"{prefix}: invalid packed sparse weight: {error}")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._configure()

    # ---- forward -------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[..., in_features]`` float32/float16/bfloat16 on the layer's
        device. Returns ``[..., out_features]`` in ``x.dtype``."""
        in_features = self.in_features
        if x.dim() < 1 or x.shape[-1] != in_features:
            raise ValueError(f"x: expected shape [..., {in_features}], got {tuple(x.shape)}")
        batch = x.numel() // in_features if in_features else math.prod(x.shape[:-1])
        args = self._native_args
        bias = self._bias_ref  # self.bias, without Module.__getattr__
        if (args is not None and batch <= self._sparse_max_batch and x.dtype == torch.float32
                and x.is_cpu and x.is_contiguous() and not torch.compiler.is_compiling()
                and not (x.requires_grad and torch.is_grad_enabled())):
            # Eager CPU, no gradient to x: straight to the kernel (no dispatcher).
            kernel = _native.cpu.spmm_forward
            if self.activations == "int8_dynamic":
                rows, cols, _, _, wide_idx, _, value_type = args[:7]
                if batch >= DYNAMIC_MIN_BATCH and cols > 0 and _native.cpu.spmm_dynamic_supported(
                        rows, cols, wide_idx, value_type):  # this CPU and ISA setting, per call
                    kernel = _native.cpu.spmm_forward_dynamic  # quantizes the rows itself
                else:
                    x = _fake_quantize_rows(x)
            y = torch.empty(*x.shape[:-1], self.out_features)  # 0.5 us less than passing a tuple
            fused = bias is not None and bias.dtype == torch.float32 and not (
                bias.requires_grad and torch.is_grad_enabled())
            kernel(*args, x.data_ptr(), batch, in_features, bias.data_ptr() if fused else 0, y.data_ptr(),
                   torch.get_num_threads())
            # A bias being trained (or not float32) is added by torch, so
            # autograd sees it.
            return y if fused or bias is None else y + bias
        if self.activations == "int8_dynamic":
            x = _fake_quantize_rows(x)
        if args is None and _native.cpu is not None and self.values.device.type == "cpu":
            self._configure()  # a buffer was reassigned since the last call
        if not x.is_floating_point() or x.dtype == torch.float64:
            raise TypeError(f"x: expected dtype float32, float16 or bfloat16, got {x.dtype}")
        if x.device != self.values.device:
            raise ValueError(f"x: expected device {self.values.device} (that of the layer), got {x.device}")
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        if batch > self._sparse_max_batch:
            weight = self._dense_weight
            return F.linear(x, weight if weight.dtype == x.dtype else weight.to(x.dtype), bias)
        return _sparse_linear_op(x, self.row_ptr, self.col_idx, self.values, self.row_scales, bias, in_features,
                                 self._bitmap)


def _check_activations(activations: object, values_dtype: torch.dtype) -> None:
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations: expected one of {', '.join(map(repr, ACTIVATIONS))}, got {activations!r}")
    if activations == "int8_dynamic" and values_dtype != torch.int8:
        raise ValueError(f"activations: 'int8_dynamic' needs values_dtype=torch.int8, got {values_dtype}")


def _fake_quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """x with each row replaced by its uint8 quantization, dequantized (the
    codes the int8_dynamic kernel multiplies); the gradient passes straight
    through. A row holding NaN or Inf becomes NaN, as in the kernel."""
    codes, scale, zero_point = quantize_rows(x.detach())
    dequantized = (codes.float() - zero_point.unsqueeze(-1).float()) * scale.unsqueeze(-1)
    return x + (dequantized.to(x.dtype) - x).detach()

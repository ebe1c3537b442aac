"""Reference sparse linear: expand the packed weight to a dense float32
matrix and call ``torch.nn.functional.linear`` in float32."""

from __future__ import annotations

import torch

from slimtorch.reference.qgemm import quantize_rows


def sparse_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor, row_scales: torch.Tensor | None,
                    in_features: int) -> torch.Tensor:
    """The float32 ``[out_features, in_features]`` matrix a packed weight stores
    (int8 values multiplied by their row's scale)."""
    out_features = row_ptr.numel() - 1
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(out_features, device=row_ptr.device), counts)
    # 16-bit indices are stored as int16; their bits are unsigned.
    cols = col_idx.long() & 0xFFFF if col_idx.dtype == torch.int16 else col_idx.long()
    dense = torch.zeros(out_features, in_features, dtype=torch.float32, device=values.device)
    vals = values.float()
    if row_scales is not None:
        vals = vals * row_scales.float()[rows]
    dense[rows, cols] = vals
    return dense


def sparse_linear(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                  row_scales: torch.Tensor | None, bias: torch.Tensor | None, in_features: int) -> torch.Tensor:
    """``x @ W.T + bias`` computed in float32, returned in ``x.dtype``."""
    weight = sparse_to_dense(row_ptr, col_idx, values, row_scales, in_features)
    b = None if bias is None else bias.float()
    return torch.nn.functional.linear(x.float(), weight, b).to(x.dtype)


def sparse_linear_grad_input(grad_y: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                             row_scales: torch.Tensor | None, in_features: int) -> torch.Tensor:
    """``grad_y @ W`` in float32, returned in ``grad_y.dtype``."""
    weight = sparse_to_dense(row_ptr, col_idx, values, row_scales, in_features)
    return (grad_y.float() @ weight).to(grad_y.dtype)


def sparse_linear_dynamic(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                          row_scales: torch.Tensor, bias: torch.Tensor | None, in_features: int) -> torch.Tensor:
    """Each row of ``x`` quantized to asymmetric uint8 (``quantize_rows``) and
    dequantized (in float32, whatever x's dtype), then :func:`sparse_linear`,
    returned in ``x.dtype``; a row with NaN or Inf gives NaN."""
    codes, scale, zero_point = quantize_rows(x)
    rows = (codes.float() - zero_point.unsqueeze(-1).float()) * scale.unsqueeze(-1)
    return sparse_linear(rows, row_ptr, col_idx, values, row_scales, bias, in_features).to(x.dtype)

"""Access to the native modules ``slimtorch._C`` (CPU) and ``slimtorch._C_cuda``.

Only the op layer (``slimtorch.ops``) talks to these modules. Where a native
module is missing (a build without CUDA, a source checkout that was never
built) ops fall back to the pure-torch reference with a one-time warning
(registered in ``slimtorch.ops.backends.reference``).
"""

from __future__ import annotations

import warnings
from types import ModuleType

import torch

__all__ = ["cpu", "cuda", "cuda_usable", "num_threads", "dtype_code", "warn_fallback", "build_info"]


def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        module = __import__(f"slimtorch.{name}", fromlist=[name])
    except ImportError as error:
        return None, str(error)
    return module, None


cpu, cpu_import_error = _load("_C")
cuda, cuda_import_error = _load("_C_cuda")

# Element-type codes shared with csrc/include/slimtorch/common.h (enum DType).
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
BF16_CODE = _DTYPE_CODES[torch.bfloat16]  # the eager paths' code for bfloat16 x and y


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPE_CODES[dtype]


def num_threads() -> int:
    """Threads a native CPU kernel may use: torch's own setting."""
    return torch.get_num_threads()


def cuda_usable() -> bool:
    """True when the CUDA kernels are built and a CUDA device is present."""
    return cuda is not None and torch.cuda.is_available()


_warned: set[tuple[str, str]] = set()


def warn_fallback(op: str, device: torch.device) -> None:
    """Warns once per (op, device type) that the pure-torch reference runs."""
    key = (op, device.type)
    if key in _warned:
        return
    _warned.add(key)
    module = "slimtorch._C_cuda" if device.type == "cuda" else "slimtorch._C"
    warnings.warn(
        f"slimtorch.ops.{op}: no native kernel for device '{device.type}' "
        f"({module} not available); using the slower pure-torch reference",
        RuntimeWarning,
        stacklevel=3,
    )


def build_info() -> dict[str, object]:
    """What was built and what runs: version, build flags, ISA path, threads, CUDA."""
    from slimtorch import __version__

    info: dict[str, object] = {"version": __version__, "torch": torch.__version__}
    if cpu is None:
        info["cpu_kernels"] = f"not built ({cpu_import_error})"
    else:
        info["cpu_kernels"] = "built"
        info["build_type"] = cpu.build_type
        info["compiler"] = cpu.compiler
        info["isa_detected"] = cpu.detected_isa()
        info["isa_active"] = cpu.active_isa()
        info["isa_supported"] = ", ".join(cpu.supported_isas())
        info["amx"] = cpu.amx_status()  # "on", or why it is off
        bf16_rows = cpu.weight_only_bf16_min_rows()
        info["weight_only_bf16"] = f"from {bf16_rows} rows" if bf16_rows else "off (float32 x)"
        # AVX512_VBMI2: bf16 values expand from memory in the batch-1 bitmap kernel.
        info["bitmap_bf16_vbmi2"] = "on" if cpu.has_avx512_vbmi2() else "off"
    info["threads"] = num_threads()
    if cpu is not None:
        info["thread_pool"] = cpu.thread_pool()
    if cuda is None:
        info["cuda_kernels"] = ("not built" if cuda_import_error and "No module" in cuda_import_error
                                else f"not loadable ({cuda_import_error})")
    else:
        info["cuda_kernels"] = "built"
        info["cuda_architectures"] = getattr(cuda, "architectures", "unknown")
    info["cuda_usable"] = cuda_usable()
    return info

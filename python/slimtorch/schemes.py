"""The package's vocabulary for int8 quantization, spelled once.

A *quantization scheme* names how a layer's weights and activations are
stored and multiplied; the same string means the same thing in
``Int8Linear(scheme=...)``, ``SparseLinear(scheme=...)``,
``CompressConfig(quantize=...)``, ``prepare_qat_(scheme=...)`` and the file
format:

* ``"int8_weight_only"``: int8 weights (symmetric, per output channel), float
  activations; the kernel widens the weights in registers.
* ``"int8_dynamic"``: int8 weights; each activation row quantized on the fly
  to asymmetric uint8 with its own scale and zero point; exact int32 products.
* ``"int8_static"``: as ``"int8_dynamic"`` with one per-tensor activation
  scale and zero point fixed in advance (from calibration): the
  *activation scale* ``activation_scale`` and ``activation_zero_point``.

Older spellings (``mode="dynamic"``, ``activations="int8_dynamic"``,
``activation="static"``, ``x_scale``, ``input_scale``) are accepted for one
release through :func:`deprecated_alias`, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from slimtorch._checks import check_choice

__all__ = ["INT8_WEIGHT_ONLY", "INT8_DYNAMIC", "INT8_STATIC", "SCHEMES", "check_scheme", "deprecated_alias"]

INT8_WEIGHT_ONLY = "int8_weight_only"
INT8_DYNAMIC = "int8_dynamic"
INT8_STATIC = "int8_static"
SCHEMES = (INT8_WEIGHT_ONLY, INT8_DYNAMIC, INT8_STATIC)

# Old per-API spellings of the schemes, kept one release as deprecated aliases.
_OLD_SCHEME_NAMES = {"weight_only": INT8_WEIGHT_ONLY, "dynamic": INT8_DYNAMIC, "static": INT8_STATIC}


def check_scheme(name: str, value: object, allowed: tuple[str | None, ...] = SCHEMES) -> str | None:
    """``value`` is one of ``allowed`` (scheme names, possibly ``None``)."""
    return check_choice(name, value, allowed)  # type: ignore[return-value]


def deprecated_alias(old_name: str, old_value: object, new_name: str, new_value: object,
                     default: object, *, translate: bool = False, stacklevel: int = 3) -> object:
    """Resolve a renamed argument: returns the value to use for ``new_name``.

    ``old_value`` is the deprecated argument (``None`` when not given); it
    warns, and giving both (``new_value`` not ``default``) is a ``TypeError``.
    ``translate=True`` maps an old scheme spelling (``"dynamic"``) to its new
    name (``"int8_dynamic"``)."""
    if old_value is None:
        return new_value
    if new_value is not default and new_value != default:
        raise TypeError(f"{old_name}: deprecated alias of {new_name}; pass only {new_name}")
    if translate:
        old_value = _OLD_SCHEME_NAMES.get(old_value, old_value) if isinstance(old_value, str) else old_value
    warnings.warn(f"{old_name} is deprecated; use {new_name}={old_value!r}", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value

"""Kernel registrations, one module per backend.

``reference`` registers the pure-torch version of every op once, as the
fallback for any device; ``cpu`` and ``cuda`` register the native kernels of
their device type (CPU ISA paths such as AVX2, AVX-512, AMX or ARM NEON are
chosen inside the native CPU module at run time, so they need no module
here). Importing this package registers everything; ``slimtorch.ops`` does.
"""

from slimtorch.ops.backends import cpu, cuda, reference  # noqa: F401  (registration on import)

"""Data files the package ships and reads.

``break_even.json``: per CPU ISA path, the highest weight density at which
the sparse kernels were measured faster than the dense ``nn.Linear`` with
the same weights, per batch size, values kind (``float``/``int8``; also
``int8_dynamic`` where it has a dense fallback, and ``bf16``: bf16 values on
bf16 inputs against the dense bf16 layer, where measured) and weight
size class (``cached``: a dense float32 weight of at most
``cached_weight_bytes``, which stays in the last-level cache; ``large``:
bigger). The benchmark suite writes it; ``slimtorch.ops.sparse_batches``
reads it. Schema 1::

    {"schema": 1, "default": "<path>",
     "paths": {"<path>": {"measured_on": "<CPU model>", "cached_weight_bytes": <int>,
                          "tables": {"float/cached": [[batch, density], ...], ...}}},
     "aliases": {"<path>": "<path>"}}

A layer uses the tables of the active ISA path, else those of its alias,
else those of ``default`` (also used for every non-CPU device, where no
break-even was measured). The default is the AVX-512 path; the scalar path
(no native module) uses the more conservative AVX2 tables. Batches ascend.
A layer runs sparse at each measured batch whose density limit it meets,
between two measured batches where it meets both, below the first and
above the last where it meets that one.
"""

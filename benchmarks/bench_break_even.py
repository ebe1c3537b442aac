"""break_even suite: where ``SparseLinear``'s sparse kernel stops beating
its dense fallback with the same weights (``nn.Linear``; for int8 values on
a path with int8 tiles, the int8 tile kernels: see
``slimtorch.ops.sparse_int8_fallback``), per values kind (float, int8, and
int8_dynamic where it has such a fallback), weight size class and batch
size. Writes the result into the data file the package
ships and reads, ``python/slimtorch/data/break_even.json``, replacing only
the entry of the ISA path it ran on (``slimtorch info`` shows it;
``SLIMTORCH_ISA`` forces one).

For every shape, density, kind and batch, the layer with ``dispatch="sparse"``
and with ``dispatch="dense"`` are timed interleaved (baseline: dense). The break-even
of a batch is the highest density at which the sparse kernel is at least
MARGIN times faster on every shape of its size class (dense float32 weight
within CACHED_WEIGHT_BYTES: "cached", else "large"); 0.0 where no density
wins. The file is written only after the full grid ran (not in quick mode,
not with -k).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.bench_spmm import pruned_linear
from benchmarks.common import QUICK, grid
from slimtorch import ops
from slimtorch.benchmark import cpu_model, isa_path
from slimtorch.nn import SparseLinear

DATA_FILE = Path(__file__).resolve().parents[1] / "python" / "slimtorch" / "data" / "break_even.json"
# Dense float32 weights up to this size count as "cached" (they stay in the last-level cache).
CACHED_WEIGHT_BYTES = 16 << 20
MARGIN = 1.1  # a win must be clear of the timing noise
SHAPES = grid([(768, 3072), (3072, 768), (4096, 4096)], [(768, 3072)])
DENSITIES = grid([0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [0.5, 0.1])
BATCHES = grid([1, 16, 128], [1, 128])
# kind: (values dtype, scheme). bf16: bf16 values on bf16 inputs against the
# dense bf16 layer, as in a model compressed with compute_dtype=torch.bfloat16;
# measured where the CPU has native bf16 (where torch's bf16 GEMM is about
# twice its float32 one).
KINDS = {"float": (torch.float32, None), "int8": (torch.int8, "int8_weight_only")}
if ops.cpu_bf16_status().startswith("on"):
    KINDS["bf16"] = (torch.bfloat16, None)
# Where int8 values fall back to the int8 tile kernels, those win by far at
# large batches, so the int8 kinds get a large batch too (else the last
# batch's verdict would be extrapolated to every larger one), and
# int8_dynamic gets a table (it has a fallback only there).
ON_TILES = ops.sparse_int8_fallback() == "qgemm"
if ON_TILES:
    KINDS["int8_dynamic"] = (torch.int8, "int8_dynamic")
LARGE_BATCH = 1024
# The bf16 dense GEMM gains most at large batches: bf16 gets the large batch too.
CASES = [(kind, batch) for kind in KINDS for batch in BATCHES] + \
    [(kind, LARGE_BATCH) for kind in KINDS if not QUICK and (kind == "bf16" or (ON_TILES and kind != "float"))]

_ratios: dict[tuple[str, str, int, int, int, float], float] = {}
_threads: set[int] = set()  # the thread counts the cases ran with


def size_class(in_f: int, out_f: int) -> str:
    return "cached" if 4 * in_f * out_f <= CACHED_WEIGHT_BYTES else "large"


def tables(ratios: dict[tuple, float]) -> dict[str, list[list[float]]]:
    """{"<kind>/<size>": [[batch, limit], ...]} from
    {(kind, size, batch, in_features, out_features, density): ratio}. The
    limit is the highest density up to which every measured density wins on
    every shape: a win at a higher density (a kernel switch can make 70%
    win where 30% loses) never vouches for a lower one that lost."""
    wins: dict[tuple[str, str, int], dict[float, bool]] = {}
    for (kind, size, batch, _, _, density), ratio in ratios.items():
        cell = wins.setdefault((kind, size, batch), {})
        cell[density] = cell.get(density, True) and ratio >= MARGIN
    result: dict[str, list[list[float]]] = {}
    for kind, size, batch in sorted(wins, key=lambda k: (k[0], k[1], k[2])):
        limit = 0.0
        for density, won in sorted(wins[(kind, size, batch)].items()):
            if not won:
                break
            limit = density
        result.setdefault(f"{kind}/{size}", []).append([batch, limit])
    return result


def update_data_file(path: Path, isa: str, measured_on: str, new_tables: dict) -> dict:
    """Replaces the entry of ``isa`` in the break-even data file (created if missing); returns the new content."""
    if path.is_file():
        data = json.loads(path.read_text())
    else:
        data = {"schema": 1, "default": "avx512", "paths": {}, "aliases": {"amx": "avx512", "scalar": "avx2"}}
    data["paths"][isa] = {"measured_on": measured_on, "cached_weight_bytes": CACHED_WEIGHT_BYTES,
                          "tables": new_tables}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(data) + "\n")
    return data


def dumps(data: dict) -> str:
    """JSON with one line per table and for the aliases (as the file is written by hand)."""
    compact: dict[str, str] = {}

    def mark(value: object) -> str:
        compact[f"@{len(compact)}@"] = json.dumps(value)
        return f"@{len(compact) - 1}@"

    shaped = {**data, "aliases": mark(data["aliases"]),
              "paths": {isa: {**entry, "tables": {k: mark(v) for k, v in entry["tables"].items()}}
                        for isa, entry in data["paths"].items()}}
    text = json.dumps(shaped, indent=2)
    for key, value in compact.items():
        text = text.replace(json.dumps(key), value)
    return text


@pytest.fixture(scope="module", autouse=True)
def write_data_file(request):
    yield
    expected = len(SHAPES) * len(DENSITIES) * len(CASES)
    if QUICK or len(_ratios) != expected:
        return
    from slimtorch._native import build_info

    isa, measured_on = isa_path(), f"{cpu_model()}, {'/'.join(map(str, sorted(_threads)))} threads"
    if build_info().get("isa_detected") != isa:
        measured_on += f", SLIMTORCH_ISA={isa}"
    update_data_file(DATA_FILE, isa, measured_on, tables(_ratios))
    print(f"\nwrote the {isa} entry of {DATA_FILE}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_break_even(bench, benchmark, shape, density, case):
    kind, batch = case
    linear = pruned_linear(*shape, 1 - density)
    values_dtype, scheme = KINDS[kind]
    sparse, dense = (SparseLinear.from_dense(linear, values_dtype=values_dtype, scheme=scheme).requires_grad_(False)
                     for _ in range(2))
    if values_dtype == torch.bfloat16:  # the bias too, as in a bf16 model
        sparse, dense = sparse.bfloat16(), dense.bfloat16()
    sparse.dispatch, dense.dispatch = "sparse", "dense"
    x = torch.randn(batch, shape[0]).to(torch.bfloat16 if values_dtype == torch.bfloat16 else torch.float32)
    with torch.no_grad():
        result = bench({"shape": f"{shape[0]}->{shape[1]}", "size": size_class(*shape), "density": density,
                        "kind": kind, "batch": batch},
                       {"dense": lambda: dense(x), "sparse": lambda: sparse(x)}, baseline="dense")
    if not benchmark.disabled:
        _ratios[(kind, size_class(*shape), batch, *shape, density)] = result.ratios["sparse"]
        _threads.add(torch.get_num_threads())

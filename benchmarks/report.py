"""Speedup report from a pytest-benchmark JSON file: a markdown table and a
PNG plot of speedup against sparsity, one panel per batch size.

    python benchmarks/report.py build/bench.json --out build/bench_report [--baseline dense]

Convention for benchmarks (set ``benchmark.extra_info`` in every benchmark):
    suite     str    a family of comparable measurements ("spmm", "int8", ...)
    shape     str    e.g. "4096->4096"
    batch     int    rows of the input
    sparsity  float  optional (None/absent when it does not apply); a
                     baseline measured without sparsity serves every sparsity
                     of its (suite, shape, batch)
    impl      str    the implementation; the baseline impl (``--baseline``,
                     default "dense") is the reference of the speedups

Speedup of an impl = median(baseline) / median(impl), both from the same
JSON (one run). Every other impl also gets a column "x vs <impl>" for each
name passed in ``--also`` (e.g. ``--also torch_csr``).
Outputs: ``<out>.md`` (table) and ``<out>.png`` (plot: speedup against
sparsity where the suites have sparsities, else speedup against batch size,
one panel per shape).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

Key = tuple  # (suite, shape, batch, sparsity)


def load(path: Path) -> dict[Key, dict[str, float]]:
    """{(suite, shape, batch, sparsity): {impl: median seconds}}."""
    data = json.loads(path.read_text())
    groups: dict[Key, dict[str, float]] = defaultdict(dict)
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "impl" not in info:
            continue
        # Op benchmarks name an op and a size instead of a shape.
        shape = info.get("shape", " ".join(str(info[k]) for k in ("op", "n") if k in info))
        key = (info.get("suite", ""), str(shape), int(info.get("batch", 0)), info.get("sparsity"))
        groups[key][info["impl"]] = float(bench["stats"]["median"])
    return groups


def _time(groups, key: Key, impl: str) -> float | None:
    """Median of impl in key's group, else in the same group without sparsity."""
    if impl in groups.get(key, {}):
        return groups[key][impl]
    return groups.get((*key[:3], None), {}).get(impl)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.4g}"


def table(groups, baseline: str, also: list[str]) -> str:
    impls = sorted({impl for g in groups.values() for impl in g} - {baseline})
    head = ["suite", "shape", "batch", "sparsity", f"{baseline} ms"] + [f"{i} ms" for i in impls]
    head += [f"{i} x vs {baseline}" for i in impls]
    head += [f"{i} x vs {a}" for a in also for i in impls if i != a]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = [k for k in groups if not (k[3] is None and set(groups[k]) <= {baseline})]
    keys.sort(key=lambda k: (k[0], k[1], k[2], -1.0 if k[3] is None else k[3]))
    for key in keys:
        base = _time(groups, key, baseline)
        row = [key[0], key[1], str(key[2]), "" if key[3] is None else f"{key[3]:.0%}", _ms(base)]
        row += [_ms(groups[key].get(i)) for i in impls]
        row += [f"{base / groups[key][i]:.2f}" if base and i in groups[key] else "" for i in impls]
        for a in also:
            ref = _time(groups, key, a)
            row += [f"{ref / groups[key][i]:.2f}" if ref and i in groups[key] else "" for i in impls if i != a]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(groups, baseline: str, path: Path) -> bool:
    """Speedup vs sparsity, one panel per batch size; False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[int, dict[tuple, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for key, times in groups.items():
        if key[3] is None:
            continue
        base = _time(groups, key, baseline)
        for impl, t in times.items():
            if impl != baseline and base:
                series[key[2]][(key[0], key[1], impl)].append((key[3], base / t))
    if not series:
        return False
    batches = sorted(series)
    # One colour per impl and one line style per shape, the same in every panel.
    impls = sorted({impl for b in series.values() for (_, _, impl) in b})
    shapes = sorted({shape for b in series.values() for (_, shape, _) in b})
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for (suite, shape, impl), points in sorted(series[batch].items()):
            if len(points) < 2:  # a single sparsity is no curve (e.g. an overhead case)
                continue
            points.sort()
            ax.plot([100 * p[0] for p in points], [p[1] for p in points], marker="o",
                    color=f"C{impls.index(impl) % 10}", linestyle=styles[shapes.index(shape) % len(styles)],
                    label=f"{impl} {shape}" + (f" ({suite})" if suite else ""))
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(f"speedup vs {baseline}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_by_batch(groups, baseline: str, path: Path) -> bool:
    """Speedup vs batch size, one panel per (suite, shape), for suites without
    sparsities (e.g. int8); False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for key, times in groups.items():
        base = times.get(baseline)
        if key[3] is not None or not base:
            continue
        for impl, t in times.items():
            if impl != baseline:
                panels[key[:2]][impl].append((key[2], base / t))
    panels = {k: v for k, v in panels.items() if any(len(p) > 1 for p in v.values())}
    if not panels:
        return False
    names = sorted(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for impl, points in sorted(panels[name].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name[0]} {name[1]}")
        ax.set_xlabel("batch")
        ax.set_ylabel(f"speedup vs {baseline}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_ratios(groups, baseline: str, path: Path) -> bool:
    """Bar chart of every impl's speedup per case (suites with neither
    sparsities nor several batch sizes, e.g. the ops); False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{key[1]} ({impl})", base / t) for key, times in sorted(groups.items(), key=lambda kv: str(kv[0]))
            if (base := times.get(baseline)) for impl, t in sorted(times.items()) if impl != baseline]
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1.2))
    ax.barh([b[0] for b in bars], [b[1] for b in bars])
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"speedup vs {baseline}")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    parser.add_argument("--baseline", default="dense", help="impl the speedups are relative to")
    parser.add_argument("--also", nargs="*", default=["torch_csr"], help="further baselines (columns)")
    args = parser.parse_args(argv)
    groups = load(args.json)
    if not groups:
        raise SystemExit(f"json: no benchmark with extra_info['impl'] in {args.json}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    present = {impl for g in groups.values() for impl in g}
    markdown = table(groups, args.baseline, [a for a in args.also if a != args.baseline and a in present])
    args.out.with_suffix(".md").write_text(markdown)
    plotted = (plot(groups, args.baseline, args.out.with_suffix(".png"))
               or plot_by_batch(groups, args.baseline, args.out.with_suffix(".png"))
               or plot_ratios(groups, args.baseline, args.out.with_suffix(".png")))
    print(markdown)
    print(f"wrote {args.out.with_suffix('.md')}" + (f" and {args.out.with_suffix('.png')}" if plotted else ""))


if __name__ == "__main__":
    main()

"""Channel dependency analysis on a ``torch.export`` graph.

Every dimension of every tensor in the graph is labelled with a *space*: an
element of a union-find table. Two dimensions that must keep the same channels
(a Linear's output and the next Linear's input, both sides of a residual add,
a BatchNorm's weight and its input channels) are unified. A space may have a
structure built from other spaces:

* ``prod``: the dimension is a row-major product of its parts (flatten of
  ``[C, H, W]``, or a hidden dimension split into ``[heads, head_dim]`` by a
  view); index ``i`` of ``prod[A, B]`` is ``a * size(B) + b``.
* ``cat``: the dimension is the concatenation of its parts (``torch.cat``,
  or the packed q/k/v rows of ``nn.MultiheadAttention.in_proj_weight``).

Spaces without a structure are *leaves*; a prunable channel group is a leaf
class that is not *blocked*. A space is blocked (never pruned) when it reaches
a model input or output, a dimension that a reduction, softmax or
normalization runs over, a literal size in a view/reshape/expand, an index or
slice, or any operator this module does not know. Blocking is always safe;
unifying two spaces that did not need it is safe too (they are pruned alike).
Only a missing unification could produce a broken model, so unknown operators
block every space they touch.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import Node

from slimtorch.structured.surgery import PrunedMultiheadAttention


class SpaceTable:
    """Union-find over dimension spaces, with optional prod/cat structure."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocked: list[bool] = []
        self.kind: list[str | None] = []
        self.parts: list[list[int]] = []

    def new(self, size: int, *, blocked: bool = False, kind: str | None = None, parts: list[int] | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.blocked.append(blocked)
        self.kind.append(kind)
        self.parts.append(list(parts or []))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def block(self, i: int) -> None:
        """Blocks ``i`` and everything it is built from."""
        stack, seen = [i], set()
        while stack:
            r = self.find(stack.pop())
            if r in seen:
                continue
            seen.add(r)
            self.blocked[r] = True
            stack.extend(self.parts[r])

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.block(ra)
            self.block(rb)
            return
        ka, kb, pa, pb = self.kind[ra], self.kind[rb], self.parts[ra], self.parts[rb]
        self.parent[rb] = ra
        blocked = self.blocked[ra] or self.blocked[rb]
        if ka is None:
            self.kind[ra], self.parts[ra] = kb, pb
        elif kb is not None:
            if ka == kb and [self.size[self.find(x)] for x in pa] == [self.size[self.find(y)] for y in pb]:
                for x, y in zip(pa, pb):
                    self.union(x, y)
            else:  # two different decompositions of one dimension: give up on it
                for y in pb:
                    self.block(y)
                blocked = True
        if blocked:
            self.block(ra)

    def factors(self, i: int) -> list[int]:
        """The leaf (or cat) spaces a dimension is the row-major product of."""
        r = self.find(i)
        if self.kind[r] == "prod":
            return [f for p in self.parts[r] for f in self.factors(p)]
        return [r]

    def split(self, i: int, sizes: list[int]) -> list[int]:
        """Refines leaf ``i`` into a product of new leaves of ``sizes``."""
        r = self.find(i)
        assert self.kind[r] is None
        kids = [self.new(s, blocked=self.blocked[r]) for s in sizes]
        self.kind[r], self.parts[r] = "prod", kids
        return kids

    def leaves(self, i: int) -> list[int]:
        """Every leaf root occurring in the term tree of ``i`` (with repeats)."""
        r = self.find(i)
        if self.kind[r] is None:
            return [r]
        return [leaf for p in self.parts[r] for leaf in self.leaves(p)]

    def labels(self, i: int, leaf: int) -> torch.Tensor | None:
        """For each index of dimension ``i``: the channel of ``leaf`` it belongs
        to, or -1. ``None`` when ``leaf`` occurs twice in one product (the
        index map would not be a plain selection)."""
        r = self.find(i)
        n = self.size[r]
        if r == leaf:
            return torch.arange(n)
        if self.kind[r] is None:
            return torch.full((n,), -1, dtype=torch.long)
        subs = [self.labels(p, leaf) for p in self.parts[r]]
        if any(s is None for s in subs):
            return None
        if self.kind[r] == "cat":
            return torch.cat(subs)
        hit = [j for j, s in enumerate(subs) if bool((s >= 0).any())]
        if len(hit) > 1:
            return None
        if not hit:
            return torch.full((n,), -1, dtype=torch.long)
        shape = [len(s) for s in subs]
        view = [1] * len(shape)
        view[hit[0]] = shape[hit[0]]
        return subs[hit[0]].view(view).expand(shape).reshape(-1)

    def keep_mask(self, i: int, masks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Which indices of dimension ``i`` survive, given a keep mask per leaf."""
        r = self.find(i)
        if self.kind[r] is None:
            return masks.get(r, torch.ones(self.size[r], dtype=torch.bool))
        subs = [self.keep_mask(p, masks) for p in self.parts[r]]
        if self.kind[r] == "cat":
            return torch.cat(subs)
        out = torch.ones((), dtype=torch.bool)
        for s in subs:
            out = (out.unsqueeze(-1) & s).reshape(-1)
        return out


@dataclass
class Slot:
    """One parameter or buffer dimension that a channel group touches."""

    name: str  # qualified name in the model (``layer.0.weight``)
    dim: int
    labels: torch.Tensor  # per index of that dimension: the group channel, or -1
    is_parameter: bool


@dataclass
class Analysis:
    """Result of :func:`analyze`."""

    spaces: SpaceTable
    tensor_dims: dict[str, list[int]]  # qualified param/buffer name -> space per dim
    parameters: set[str]
    mha_heads: dict[str, int] = field(default_factory=dict)  # MHA module path -> head leaf
    activations: list[int] = field(default_factory=list)  # spaces of every computed tensor dim

    def groups(self) -> list[tuple[int, list[Slot]]]:
        """Prunable channel groups: (leaf root, slots), in a stable order."""
        S = self.spaces
        found: dict[int, list[Slot]] = {}
        ambiguous: set[int] = set()
        # a channel must flow through the computation: this excludes kernel
        # dims of conv weights, unused parameters and the like
        active = {leaf for s in self.activations for leaf in S.leaves(s)}
        for name, dims in self.tensor_dims.items():
            for d, space in enumerate(dims):
                for leaf in dict.fromkeys(S.leaves(space)):
                    if S.blocked[leaf] or S.size[leaf] < 2 or leaf in ambiguous or leaf not in active:
                        continue
                    labels = S.labels(space, leaf)
                    if labels is None:
                        ambiguous.add(leaf)
                        continue
                    found.setdefault(leaf, []).append(Slot(name, d, labels, name in self.parameters))
        return [
            (leaf, slots)
            for leaf, slots in found.items()
            if leaf not in ambiguous and any(s.is_parameter for s in slots)
        ]


def _val(node: object):
    return node.meta.get("val") if isinstance(node, Node) else None


def _is_tensor_node(x: object) -> bool:
    return isinstance(_val(x), torch.Tensor)


def _shape(node: Node) -> list[int]:
    return [int(s) for s in _val(node).shape]


def _arg(node: Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _tensor_inputs(node: Node) -> list[Node]:
    out: list[Node] = []
    for leaf in torch.utils._pytree.tree_leaves((node.args, node.kwargs)):
        if _is_tensor_node(leaf):
            out.append(leaf)
    return out


_ELEMENTWISE = {
    # unary
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid",
    "leaky_relu", "elu", "selu", "celu", "softplus", "mish", "neg", "abs", "exp", "log", "sqrt",
    "rsqrt", "erf", "square", "reciprocal", "sign", "dropout", "clone", "contiguous", "alias",
    "detach", "to", "_to_copy", "lift_fresh_copy", "clamp", "clamp_min", "clamp_max",
    "logical_not", "bitwise_not", "cos", "sin", "type_as",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    # binary / ternary with broadcasting
    "add", "sub", "rsub", "mul", "div", "pow", "maximum", "minimum", "where", "masked_fill",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "__and__", "__or__",
}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "prod", "logsumexp", "argmax", "argmin"}
_VIEWS = {"view", "reshape", "_unsafe_view"}


class _Analyzer:
    def __init__(self, ep: torch.export.ExportedProgram, model: nn.Module) -> None:
        self.ep = ep
        self.model = model
        self.S = SpaceTable()
        self.dims: dict[Node, object] = {}  # node -> list of spaces, or tuple of such lists
        self.tensor_dims: dict[str, list[int]] = {}
        self.parameters: set[str] = set()
        self.mha_heads: dict[str, int] = {}
        self.modules = dict(model.named_modules())

    # -- helpers -----------------------------------------------------------
    def fresh(self, node: Node, blocked: bool = True):
        val = _val(node)
        return self._fresh_val(val, blocked)

    def _fresh_val(self, val, blocked: bool):
        if isinstance(val, torch.Tensor):
            return [self.S.new(s, blocked=blocked) for s in val.shape]
        if isinstance(val, (tuple, list)):
            return tuple(self._fresh_val(v, blocked) for v in val)
        return None

    def d(self, node: Node) -> list[int]:
        return self.dims[node]

    def block_all(self, dims) -> None:
        if isinstance(dims, tuple):
            for x in dims:
                self.block_all(x)
        elif isinstance(dims, list):
            for s in dims:
                self.S.block(s)

    def unknown(self, node: Node):
        for x in _tensor_inputs(node):
            if x in self.dims:
                self.block_all(self.dims[x])
        return self.fresh(node)

    # -- main loop -----------------------------------------------------------
    def run(self) -> Analysis:
        sig = self.ep.graph_signature
        params = dict(sig.inputs_to_parameters)
        buffers = dict(sig.inputs_to_buffers)
        self.parameters = set(params.values())
        regions = self._mha_regions()
        nodes = list(self.ep.graph.nodes)
        for node in nodes:
            if node.op == "placeholder":
                qual = params.get(node.name) or buffers.get(node.name)
                dims = self.fresh(node, blocked=qual is None)
                self.dims[node] = dims
                if qual is not None and isinstance(dims, list):
                    self.tensor_dims[qual] = dims
                continue
            if node.op == "output":
                self._outputs(node)
                continue
            if node in regions:
                path, members, last = regions[node]
                if node is last:
                    self._mha(path, members)
                continue
            if any(x not in self.dims for x in _tensor_inputs(node)):
                self.dims[node] = self.unknown(node)
                continue
            self.dims[node] = self._visit(node)
        activations: list[int] = []

        def collect(dims) -> None:
            if isinstance(dims, tuple):
                for x in dims:
                    collect(x)
            elif isinstance(dims, list):
                activations.extend(dims)

        for node, dims in self.dims.items():
            if node.op != "placeholder":
                collect(dims)
        activations.extend(self.mha_heads.values())
        return Analysis(self.S, self.tensor_dims, self.parameters, self.mha_heads, activations)

    def _outputs(self, node: Node) -> None:
        """User outputs are never pruned; a buffer's new value (e.g. BatchNorm
        statistics in training mode) keeps the buffer's channels."""
        mutated = {
            spec.arg.name: spec.target
            for spec in self.ep.graph_signature.output_specs
            if spec.kind == torch.export.graph_signature.OutputKind.BUFFER_MUTATION
        }
        for x in _tensor_inputs(node):
            if x not in self.dims:
                continue
            target = self.tensor_dims.get(mutated.get(x.name, ""))
            if target is not None and isinstance(self.dims[x], list) and len(target) == len(self.dims[x]):
                for a, b in zip(target, self.dims[x]):
                    self.S.union(a, b)
            else:
                self.block_all(self.dims[x])

    def _visit(self, node: Node):
        if node.op != "call_function":
            return self.unknown(node)
        target = node.target
        if target is operator.getitem:
            src, i = node.args
            dims = self.dims.get(src)
            if isinstance(dims, tuple) and isinstance(i, int) and i < len(dims):
                return dims[i]
            return self.unknown(node)
        if not isinstance(target, torch._ops.OpOverload):
            return self.unknown(node)
        name = target._overloadpacket.__name__
        base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
        handler = getattr(self, f"_op_{base}", None)
        if handler is not None:
            return handler(node)
        if base in _ELEMENTWISE:
            return self._broadcast(node)
        if base in _REDUCTIONS:
            return self._reduce(node)
        if base in _VIEWS:
            shape = list(_arg(node, 1, "size" if base != "reshape" else "shape"))
            adjustable = self._head_counts(node)
            return self._view(node, node.args[0], [s == -1 or s in adjustable for s in shape])
        if "pool" in base or base.startswith("upsample"):
            return self._spatial(node, base)
        return self.unknown(node)

    # -- rules -----------------------------------------------------------------
    def _broadcast(self, node: Node):
        val = _val(node)
        if not isinstance(val, torch.Tensor):
            return self.unknown(node)
        out_shape = list(val.shape)
        n = len(out_shape)
        inputs = _tensor_inputs(node)
        out = []
        for k in range(n):
            back = n - k
            cands = []
            for x in inputs:
                xs = _shape(x)
                if len(xs) >= back and xs[len(xs) - back] == out_shape[k]:
                    cands.append(self.d(x)[len(xs) - back])
            for c in cands[1:]:
                if out_shape[k] > 1:
                    self.S.union(cands[0], c)
            out.append(cands[0] if cands else self.S.new(out_shape[k], blocked=True))
        return out

    def _op_linear(self, node: Node):
        x, w = node.args[0], node.args[1]
        b = _arg(node, 2, "bias")
        xd, wd = self.d(x), self.d(w)
        if len(wd) != 2 or not xd:
            return self.unknown(node)
        self.S.union(xd[-1], wd[1])
        if b is not None:
            self.S.union(self.d(b)[0], wd[0])
        return list(xd[:-1]) + [wd[0]]

    def _conv(self, node: Node, groups: int | None = None):
        x, w = node.args[0], node.args[1]
        b = _arg(node, 2, "bias")
        if groups is None:
            groups = _arg(node, 6, "groups", 1)
        xd, wd, ws = self.d(x), self.d(w), _shape(w)
        c = 1 if len(xd) == len(wd) else 0  # channel axis (batched or not)
        out_shape = _shape(node)
        if groups == 1:
            self.S.union(xd[c], wd[1])
        elif groups == _shape(x)[c] == ws[0] and ws[1] == 1:  # depthwise: out channel i reads in channel i
            self.S.union(xd[c], wd[0])
        else:  # other grouped convolutions are left alone
            for s in (xd[c], wd[0], wd[1]):
                self.S.block(s)
        if b is not None:
            self.S.union(self.d(b)[0], wd[0])
        for s in wd[2:]:  # kernel taps
            self.S.block(s)
        out = list(xd[:c]) + [wd[0]]
        return out + [self.S.new(s, blocked=True) for s in out_shape[c + 1:]]

    _op_conv1d = _op_conv2d = _op_conv3d = _conv

    def _op_convolution(self, node: Node):
        """aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)."""
        if _arg(node, 6, "transposed", False):
            return self.unknown(node)
        return self._conv(node, groups=_arg(node, 8, "groups", 1))

    def _batch_norm(self, node: Node, first_param: int, tuple_out: bool):
        x = node.args[0]
        xd = self.d(x)
        c = 1 if len(xd) > 1 else 0
        for i in range(first_param, first_param + 4):
            t = node.args[i] if len(node.args) > i else None
            if _is_tensor_node(t):
                self.S.union(self.d(t)[0], xd[c])
        if tuple_out:
            fresh = self.fresh(node)
            return (list(xd),) + tuple(fresh[1:])
        return list(xd)

    def _op_batch_norm(self, node: Node):
        return self._batch_norm(node, 1, False)

    def _op__native_batch_norm_legit_no_training(self, node: Node):
        return self._batch_norm(node, 1, True)

    _op__native_batch_norm_legit_functional = _op__native_batch_norm_legit_no_training

    def _norm_last(self, node: Node, shape_idx: int, param_idx: tuple[int, ...]):
        x = node.args[0]
        xd = list(self.d(x))
        nd = len(node.args[shape_idx])
        for s in xd[-nd:]:  # statistics over these dims: pruning would change them
            self.S.block(s)
        for i in param_idx:
            t = node.args[i] if len(node.args) > i else None
            if _is_tensor_node(t):
                for a, b in zip(self.d(t), xd[-nd:]):
                    self.S.union(a, b)
        if isinstance(_val(node), tuple):
            return (xd,) + tuple(self.fresh(node)[1:])
        return xd

    def _op_layer_norm(self, node: Node):
        return self._norm_last(node, 1, (2, 3))

    def _op_native_layer_norm(self, node: Node):
        return self._norm_last(node, 1, (2, 3))

    def _op_rms_norm(self, node: Node):
        return self._norm_last(node, 1, (2,))

    def _op_embedding(self, node: Node):
        w, idx = node.args[0], node.args[1]
        wd = self.d(w)
        self.S.block(wd[0])  # vocabulary rows are addressed by index values
        return list(self.d(idx)) + [wd[1]]

    def _matmul(self, node: Node, a: Node, b: Node):
        ad, bd, as_, bs = self.d(a), self.d(b), _shape(a), _shape(b)
        if len(ad) < 2 or len(bd) < 2:
            return self.unknown(node)
        self.S.union(ad[-1], bd[-2])
        out_shape = _shape(node)
        batch = []
        nb = len(out_shape) - 2
        for k in range(nb):
            back = nb - k
            cands = [
                dims[len(dims) - 2 - back]
                for dims, shp in ((ad, as_), (bd, bs))
                if len(dims) - 2 >= back and shp[len(shp) - 2 - back] == out_shape[k]
            ]
            if len(cands) == 2 and out_shape[k] > 1:
                self.S.union(cands[0], cands[1])
            batch.append(cands[0] if cands else self.S.new(out_shape[k], blocked=True))
        return batch + [ad[-2], bd[-1]]

    def _op_matmul(self, node: Node):
        return self._matmul(node, node.args[0], node.args[1])

    _op_bmm = _op_mm = _op_matmul

    def _op_addmm(self, node: Node):
        out = self._matmul(node, node.args[1], node.args[2])
        bias = node.args[0]
        bd, bs = self.d(bias), _shape(bias)
        for k in range(1, len(bd) + 1):
            if bs[-k] == _shape(node)[-k] and bs[-k] > 1:
                self.S.union(bd[-k], out[-k])
        return out

    def _op_scaled_dot_product_attention(self, node: Node):
        q, k, v = node.args[:3]
        mask = _arg(node, 3, "attn_mask")
        scale = _arg(node, 6, "scale")
        qd, kd, vd = self.d(q), self.d(k), self.d(v)
        if (not (len(qd) == len(kd) == len(vd) >= 2) or _shape(q)[:-2] != _shape(k)[:-2]
                or _shape(k)[:-2] != _shape(v)[:-2]):
            return self.unknown(node)  # broadcasting / grouped-query layouts are left alone
        for a, b, c in zip(qd[:-2], kd[:-2], vd[:-2]):
            self.S.union(a, b)
            self.S.union(a, c)
        self.S.union(qd[-1], kd[-1])
        self.S.union(kd[-2], vd[-2])
        if scale is None:  # the default scale reads the head dim
            self.S.block(qd[-1])
        out = list(qd[:-1]) + [vd[-1]]
        if _is_tensor_node(mask):
            md, ms = self.d(mask), _shape(mask)
            score = list(qd[:-1]) + [kd[-2]]
            score_shape = _shape(q)[:-1] + [_shape(k)[-2]]
            for j in range(1, min(len(md), len(score)) + 1):
                if ms[-j] == score_shape[-j] and ms[-j] > 1:
                    self.S.union(md[-j], score[-j])
        return out

    def _softmax(self, node: Node):
        x, dim = node.args[0], node.args[1]
        xd = list(self.d(x))
        self.S.block(xd[dim])
        return xd

    _op_softmax = _op__softmax = _op_log_softmax = _op__log_softmax = _softmax

    def _reduce(self, node: Node):
        if len(node.args) > 1 and _is_tensor_node(node.args[1]):  # max.other / min.other
            return self._broadcast(node)
        x = node.args[0]
        xd = list(self.d(x))
        n = len(xd)
        dims = _arg(node, 1, "dim")
        if (dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0)
                or not isinstance(dims, (int, list, tuple))):
            reduced = set(range(n))
        else:
            reduced = {int(d) % n for d in ([dims] if isinstance(dims, int) else dims)} if n else set()
        for i in reduced:
            self.S.block(xd[i])
        val = _val(node)
        first = val[0] if isinstance(val, tuple) else val
        if not isinstance(first, torch.Tensor):
            return self.unknown(node)
        keepdim = first.dim() == n
        out = [self.S.new(1, blocked=True) if i in reduced else xd[i] for i in range(n) if keepdim or i not in reduced]
        if len(out) != first.dim():
            return self.unknown(node)
        if isinstance(val, tuple):
            return tuple(
                out if isinstance(v, torch.Tensor) and v.dim() == len(out) else self._fresh_val(v, True) for v in val
            )
        return out

    def _spatial(self, node: Node, base: str):
        x = node.args[0]
        xd = list(self.d(x))
        k = next((int(c) for c in ("1", "2", "3") if f"{c}d" in base), None)
        val = _val(node)
        first = val[0] if isinstance(val, tuple) else val
        if k is None or not isinstance(first, torch.Tensor) or first.dim() != len(xd) or k >= len(xd):
            return self.unknown(node)
        out = xd[: len(xd) - k] + [self.S.new(s, blocked=True) for s in first.shape[len(xd) - k:]]
        if isinstance(val, tuple):
            return tuple(list(out) for _ in val)
        return out

    def _head_counts(self, node: Node) -> set[int]:
        """Literal sizes that follow a pruned head count: inside a
        transformers-style attention module (one with ``num_attention_heads``
        and ``all_head_size``, which ``prune_channels`` updates), a view that
        spells out ``num_attention_heads`` or ``all_head_size`` (older
        transformers releases do) reads them from the module."""
        out: set[int] = set()
        for path, _cls in (node.meta.get("nn_module_stack") or {}).values():
            module = self.modules.get(path)
            if module is not None and hasattr(module, "num_attention_heads") and hasattr(module, "all_head_size"):
                out |= {int(module.num_attention_heads), int(module.all_head_size)}
        return out

    def _view(self, node: Node, x: Node, flexible: list[bool]):
        """A reshape: match the row-major factors of the input to the output
        sizes, splitting leaf spaces where an output boundary falls inside one.
        Output dims given as a literal size (not -1) are blocked: the size is
        baked into the graph and would not follow a pruned channel count."""
        S = self.S
        out_shape = _shape(node)
        factors = [f for s in self.d(x) for f in S.factors(s) if S.size[S.find(f)] > 1]
        out: list[int] = []
        i = 0
        ok = True
        for size in out_shape:
            parts: list[int] = []
            rem = size
            while rem > 1 and ok:
                if i >= len(factors):
                    ok = False
                    break
                f = S.find(factors[i])
                fs = S.size[f]
                if rem % fs == 0:
                    parts.append(f)
                    rem //= fs
                    i += 1
                elif fs % rem == 0 and S.kind[f] is None:
                    head, tail = S.split(f, [rem, fs // rem])
                    parts.append(head)
                    factors[i] = tail
                    rem = 1
                else:
                    ok = False
            if not ok:
                break
            if not parts:
                out.append(S.new(size, blocked=True))
            elif len(parts) == 1:
                out.append(parts[0])
            else:
                out.append(S.new(size, kind="prod", parts=parts))
        if not ok or i != len(factors):
            return self.unknown(node)
        for s, free in zip(out, flexible):
            if not free:
                S.block(s)
        return out

    def _op_flatten(self, node: Node):
        x = node.args[0]
        n = max(len(self.d(x)), 1)
        start = _arg(node, 1, "start_dim", 0) % n
        end = _arg(node, 2, "end_dim", -1) % n
        out_dims = len(self.d(x)) - (end - start)
        return self._view(node, x, [True] * out_dims)

    def _op_unflatten(self, node: Node):
        x, dim, sizes = node.args[0], node.args[1], list(node.args[2])
        n = len(self.d(x))
        dim %= n
        flexible = [True] * dim + [s == -1 for s in sizes] + [True] * (n - dim - 1)
        return self._view(node, x, flexible)

    def _op_permute(self, node: Node):
        xd = self.d(node.args[0])
        return [xd[int(p) % len(xd)] for p in node.args[1]]

    def _op_transpose(self, node: Node):
        xd = list(self.d(node.args[0]))
        if not xd:
            return xd
        a, b = node.args[1] % len(xd), node.args[2] % len(xd)
        xd[a], xd[b] = xd[b], xd[a]
        return xd

    def _op_t(self, node: Node):
        return list(reversed(self.d(node.args[0])))

    def _op_unsqueeze(self, node: Node):
        xd = list(self.d(node.args[0]))
        dim = node.args[1] % (len(xd) + 1)
        return xd[:dim] + [self.S.new(1, blocked=True)] + xd[dim:]

    def _op_squeeze(self, node: Node):
        x = node.args[0]
        xd, xs = self.d(x), _shape(x)
        dims = _arg(node, 1, "dim")
        if dims is None:
            chosen = set(range(len(xd)))
        else:
            chosen = {int(d) % len(xd) for d in ([dims] if isinstance(dims, int) else dims)} if xd else set()
        return [s for i, s in enumerate(xd) if not (i in chosen and xs[i] == 1)]

    def _op_expand(self, node: Node):
        x = node.args[0]
        xd, xs = self.d(x), _shape(x)
        sizes = list(node.args[1])
        out_shape = _shape(node)
        lead = len(out_shape) - len(xd)
        out = [self.S.new(s, blocked=True) for s in out_shape[:lead]]
        for j, s in enumerate(xd):
            k = lead + j
            if xs[j] == out_shape[k]:
                if sizes[k] != -1:
                    self.S.block(s)
                out.append(s)
            else:
                out.append(self.S.new(out_shape[k], blocked=True))
        return out

    def _op_select(self, node: Node):
        xd = list(self.d(node.args[0]))
        dim = node.args[1] % len(xd)
        self.S.block(xd[dim])
        return xd[:dim] + xd[dim + 1:]

    def _op_slice(self, node: Node):
        x = node.args[0]
        xd, xs = list(self.d(x)), _shape(x)
        dim = _arg(node, 1, "dim", 0) % len(xd)
        if _shape(node)[dim] == xs[dim] and (_arg(node, 4, "step", 1) or 1) == 1:
            return xd  # a full slice
        self.S.block(xd[dim])
        xd[dim] = self.S.new(_shape(node)[dim], blocked=True)
        return xd

    def _op_cat(self, node: Node):
        tensors = [t for t in node.args[0] if _is_tensor_node(t)]
        dim = _arg(node, 1, "dim", 0)
        out_shape = _shape(node)
        n = len(out_shape)
        tensors = [t for t in tensors if len(_shape(t)) == n]  # legacy empty 1-d inputs are skipped
        if not tensors or any(not self.d(t) for t in tensors):
            return self.unknown(node)
        dim %= n
        out = []
        for k in range(n):
            if k == dim:
                parts = [self.d(t)[k] for t in tensors if _shape(t)[k] > 0]
                out.append(parts[0] if len(parts) == 1 else self.S.new(out_shape[k], kind="cat", parts=parts))
            else:
                first = self.d(tensors[0])[k]
                for t in tensors[1:]:
                    self.S.union(first, self.d(t)[k])
                out.append(first)
        return out

    def _op_constant_pad_nd(self, node: Node):
        """Padding the trailing dims (spatial padding) keeps the others."""
        x = node.args[0]
        xd = list(self.d(x))
        pad = list(node.args[1])
        out_shape = _shape(node)
        for j in range(len(pad) // 2):
            k = len(xd) - 1 - j
            if pad[2 * j] != 0 or pad[2 * j + 1] != 0:
                self.S.block(xd[k])
                xd[k] = self.S.new(out_shape[k], blocked=True)
        return xd

    _op_pad = _op_constant_pad_nd  # any mode pads only the trailing dims

    def _op_native_dropout(self, node: Node):
        xd = list(self.d(node.args[0]))
        return (xd, list(xd))

    # -- nn.MultiheadAttention --------------------------------------------------
    def _mha_regions(self) -> dict[Node, tuple[str, list[Node], Node]]:
        """Nodes traced from inside an ``nn.MultiheadAttention``, handled as one
        block: its heads are an internal group (q/k/v rows, out_proj columns)."""
        modules = dict(self.model.named_modules())
        by_path: dict[str, list[Node]] = {}
        for node in self.ep.graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            for path, _cls in stack.values():
                if isinstance(modules.get(path), nn.MultiheadAttention):
                    by_path.setdefault(path, []).append(node)
                    break
        order = {n: i for i, n in enumerate(self.ep.graph.nodes)}
        regions: dict[Node, tuple[str, list[Node], Node]] = {}
        for path, members in by_path.items():
            member_set = set(members)
            last = members[-1]
            external_users = [u for m in members for u in m.users if u not in member_set]
            if any(order[u] < order[last] for u in external_users):
                continue  # interleaved with outside code: analyse the nodes one by one
            for m in members:
                regions[m] = (path, members, last)
        return regions

    def _mha(self, path: str, members: list[Node]) -> None:
        S = self.S
        mha: nn.MultiheadAttention = self.model.get_submodule(path)
        member_set = set(members)
        inputs = list(dict.fromkeys(x for m in members for x in _tensor_inputs(m) if x not in member_set))
        sig = self.ep.graph_signature
        owned = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        prefix = path + "."
        pnodes = {owned[x.name][len(prefix):]: x for x in inputs if owned.get(x.name, "").startswith(prefix)}
        data = [x for x in inputs if x.name not in owned]
        E, H, D = mha.embed_dim, mha.num_heads, mha.head_dim
        inner_size = H * D  # == E unless heads were pruned before
        ok = (
            (mha._qkv_same_embed_dim or isinstance(mha, PrunedMultiheadAttention))
            and mha.bias_k is None
            and not mha.add_zero_attn
            and "in_proj_weight" in pnodes
            and "out_proj.weight" in pnodes
            and all(x in self.dims for x in inputs)
        )
        qkv = [x for x in data if _val(x).is_floating_point() and _shape(x) and _shape(x)[-1] == E]
        masks = [x for x in data if x not in qkv]
        if any(len(_shape(m)) >= 3 for m in masks):
            ok = False  # a per-head attention mask is sized by the head count
        if not ok:
            for x in inputs:
                if x in self.dims:
                    self.block_all(self.dims[x])
            for m in members:
                self.dims[m] = self.fresh(m)
            return
        heads = S.new(H)
        head_dim = S.new(D, blocked=True)  # whole heads are removed; head_dim stays
        inner = S.new(inner_size, kind="prod", parts=[heads, head_dim])
        packed = S.new(3 * inner_size, kind="cat", parts=[inner, inner, inner])
        w_in = self.d(pnodes["in_proj_weight"])
        S.union(w_in[0], packed)
        for x in qkv:
            S.union(self.d(x)[-1], w_in[1])
        if "in_proj_bias" in pnodes:
            S.union(self.d(pnodes["in_proj_bias"])[0], packed)
        w_out = self.d(pnodes["out_proj.weight"])
        S.union(w_out[1], inner)
        if "out_proj.bias" in pnodes:
            S.union(self.d(pnodes["out_proj.bias"])[0], w_out[0])
        for x in masks:
            self.block_all(self.dims[x])
        # MultiheadAttention's embed_dim (its input and output width) is kept
        S.block(w_in[1])
        S.block(w_out[0])
        for m in members:
            val = _val(m)
            used_outside = any(u not in member_set for u in m.users)
            if used_outside and isinstance(val, torch.Tensor) and val.dim() >= 1 and val.shape[-1] == E:
                self.dims[m] = [S.new(s, blocked=True) for s in val.shape[:-1]] + [w_out[0]]
            else:
                self.dims[m] = self.fresh(m)
        self.mha_heads[path] = heads


def analyze(ep: torch.export.ExportedProgram, model: nn.Module) -> Analysis:
    """Labels every parameter/buffer dimension of ``model`` with channel spaces."""
    return _Analyzer(ep, model).run()

"""Physical layouts of run-time tensors.

A tensor has a *logical* shape (the spec's, NCHW for images) and a *physical permutation*
`perm`: physical dim j holds logical dim perm[j], and the bytes are C-ordered over the
physical shape `[shape[p] for p in perm]`.  Identity = logical order; channels-last is
(0, 2, 3, 1) for rank 4 (NHWC) and (0, 2, 1) for rank 3 (N, L, C, run as NHWC with H = 1).

Two perms describe the same bytes when they order the dims of size > 1 identically
(`same_bytes`); the planner then aliases instead of transposing.
"""

from __future__ import annotations

import math

Perm = tuple[int, ...]
KERNEL_RANK = 6   # transpose/add kernels take shapes left-padded to rank 6


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def channels_last(rank: int) -> Perm:
    """NHWC for rank 4, (N, L, C) for rank 3; identity for other ranks."""
    if rank < 3:
        return identity(rank)
    return (0, *range(2, rank), 1)


def physical_shape(shape, perm: Perm) -> tuple[int, ...]:
    return tuple(int(shape[p]) for p in perm)


def same_bytes(shape, p: Perm, q: Perm) -> bool:
    """True when layouts p and q of a tensor of logical `shape` have identical bytes."""
    return [d for d in p if shape[d] != 1] == [d for d in q if shape[d] != 1]


def logical_strides(shape, perm: Perm) -> tuple[int, ...]:
    """Element stride of each *logical* dim in the physical layout `perm`."""
    strides = [0] * len(shape)
    step = 1
    for p in reversed(perm):
        strides[p] = step
        step *= int(shape[p])
    return tuple(strides)


def inverse(perm: Perm) -> Perm:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def numel(shape) -> int:
    return int(math.prod(int(d) for d in shape))


def transpose_args(shape, src: Perm, dst: Perm) -> tuple[list[int], list[int]]:
    """Arguments (input shape, perm) of the rank-6 transpose kernel that turns the bytes of
    layout `src` into layout `dst` (numpy semantics: y = x.reshape(shape).transpose(perm)).

    Dims of size 1 are dropped first (they do not move bytes), then dims adjacent in both
    layouts are merged into one (they move as one block: the depth-to-space of a transposed
    convolution moves runs of stride·C bytes, not C-byte rows); raises ValueError if more than
    6 dims remain.
    """
    keep = [d for d in src if shape[d] != 1]
    dst_keep = [d for d in dst if shape[d] != 1]
    runs: list[list[int]] = []                 # maximal runs of dst_keep consecutive in keep
    for d in dst_keep:
        if runs and keep.index(runs[-1][-1]) + 1 == keep.index(d):
            runs[-1].append(d)
        else:
            runs.append([d])
    src_runs = sorted(runs, key=lambda r: keep.index(r[0]))
    in_shape = [math.prod(int(shape[d]) for d in r) for r in src_runs]
    tperm = [src_runs.index(r) for r in runs]
    if len(in_shape) > KERNEL_RANK:
        raise ValueError(f"transpose of rank {len(in_shape)} > {KERNEL_RANK}")
    pad = KERNEL_RANK - len(in_shape)
    return [1] * pad + in_shape, list(range(pad)) + [pad + t for t in tperm]


def reshape_layouts(shape, perm: Perm, target) -> tuple[Perm, Perm]:
    """(src, out): a Reshape of a tensor of logical `shape` to logical `target` (same element
    count) needs its input in layout `src` and then aliases it as an output in layout `out`.

    The non-trivial dims of `shape` and `target` are matched into groups of consecutive dims
    with equal products (a dim split, dims merged, or both).  The bytes can be relabelled when
    every input group lies in memory as one block in logical order; `src` is `perm` when it
    already does (no copy), else `perm` with each group's dims gathered in logical order at
    the place of its first dim (one transpose).  `out` replaces each group by its output dims;
    size-1 output dims go after the output dim before them.  Example: the channel shuffle
    (N, C, H, W) -> (N, 2, C/2, H, W) of a channels-last tensor relabels the bytes as
    (N, H, W, 2, C/2); after the Transpose swapping dims 1 and 2 the reshape back to
    (N, C, H, W) needs one byte transpose, and its output is channels-last again."""
    big_s = [d for d in range(len(shape)) if int(shape[d]) != 1]
    big_t = [k for k in range(len(target)) if int(target[k]) != 1]
    group_of: dict[int, int] = {}                 # input dim -> group index
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(big_s) and j < len(big_t):
        gs, gt = [big_s[i]], [big_t[j]]
        ps, pt = int(shape[big_s[i]]), int(target[big_t[j]])
        i, j = i + 1, j + 1
        while ps != pt:
            if ps < pt:
                gs.append(big_s[i])
                ps *= int(shape[big_s[i]])
                i += 1
            else:
                gt.append(big_t[j])
                pt *= int(target[big_t[j]])
                j += 1
        for d in gs:
            group_of[d] = len(groups)
        groups.append((gs, gt))
    order = [d for d in perm if int(shape[d]) != 1]          # physical order of big dims
    src_big: list[int] = []
    placed: set[int] = set()
    for d in order:
        g = group_of[d]
        if g not in placed:                                # at its first dim in memory:
            placed.add(g)
            src_big.extend(groups[g][0])                   # the group, in logical order
    src = tuple(src_big + [d for d in perm if int(shape[d]) == 1])
    out: list[int] = []
    for d in src_big:
        gs, gt = groups[group_of[d]]
        if d == gs[0]:
            out.extend(gt)
    for k in range(len(target)):
        if int(target[k]) == 1:
            out.insert(out.index(k - 1) + 1 if k > 0 and k - 1 in out else 0, k)
    return src, tuple(out)


def broadcast_shapes(a, b) -> tuple[int, ...]:
    """ONNX multidirectional broadcasting; ValueError if incompatible."""
    r = max(len(a), len(b))
    a = (1,) * (r - len(a)) + tuple(a)
    b = (1,) * (r - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)

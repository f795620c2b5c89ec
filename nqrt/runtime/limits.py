"""Plan-time limits on what a `.nq` file may ask the runtime to build (both modes): beyond
them the file is refused with an InputError naming the tensor or node, before any buffer or
table is built for it, so a hostile file cannot make a load take minutes or gigabytes."""

from __future__ import annotations

from nqrt.errors import InputError

MAX_TENSOR_ELEMENTS = 2**31 - 1   # per run-time tensor: kernels index with int64, but a file
#                                   asking for more is hostile (a Resize by 10^6) or useless
MAX_RESIZE_LENGTH = 1 << 20       # a Resize's output along one axis: its tables are built per
#                                   index at plan time (about 1-5 s per million in Python)


def check_resize(node, in_shape, out_shape) -> None:
    """InputError for a Resize output beyond the limits, before its tables are built."""
    for a, (d_in, d_out) in enumerate(zip(in_shape, out_shape)):
        if d_out != d_in and d_out > MAX_RESIZE_LENGTH:
            raise InputError(f"node {node.name!r} ({node.op}): resizes axis {a} to {d_out}, more "
                             f"than the runtime's limit of {MAX_RESIZE_LENGTH}")
    check_elements(node.outputs[0], out_shape)


def check_elements(name, shape) -> None:
    """InputError for a tensor of more than MAX_TENSOR_ELEMENTS elements, before anything is
    built for it (a Resize's tables are built per output row and column)."""
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_TENSOR_ELEMENTS:
        raise InputError(f"tensor {name!r} would have {n} elements {list(shape)}, more than the "
                         f"runtime's limit of {MAX_TENSOR_ELEMENTS}")

"""Session: load a `.nq` model (or an NqModel), validate feeds, plan per input shapes, run.

    sess = Session.load("model.nq", threads=None, mode="integer")
    out = sess.run({"x": x})                  # dict name -> float32 array

mode "integer" runs the planned program in the @njit interpreter (the reference semantics
of formats/nq-v1.md); mode "simulate" runs the same model in numpy float64 fake-quant
(simulate.py).  Plans, and their arenas, are cached per tuple of input shapes.  A session
runs one call at a time (the arenas are reused; concurrent `run` calls serialize on a lock).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np

from nqrt.errors import InputError
from nqrt.format.model import NqModel
from nqrt.kernels._jit import JIT
from nqrt.runtime import affinity as _affinity
from nqrt.runtime import planner as _planner

MODES = ("integer", "simulate")
_F32 = np.dtype(np.float32)
_get_num_threads = _set_num_threads = None     # Numba's raw thread-count calls (see _threading)


def _threading():
    """Bind Numba's thread-count entry points once.  numba.get/set_num_threads take two locks
    and validate on every call (~1-1.5 us each); after the pool is launched the raw C calls
    they wrap are module globals of numba.np.ufunc.parallel (thread-local, like the public
    ones).  Falls back to the public functions if a Numba version lacks them."""
    global _get_num_threads, _set_num_threads
    numba.get_num_threads()                        # launches the thread pool
    from numba.np.ufunc import parallel
    _get_num_threads = getattr(parallel, "_get_num_threads", None) or numba.get_num_threads
    _set_num_threads = getattr(parallel, "_set_num_threads", None) or numba.set_num_threads
MAX_PLANS = 16        # plans (and their arenas) kept per session, least recently used dropped


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple          # ints and str symbols
    dtype: str = "float32"


def _interpreter_for(plan):
    """The compiled interpreter entry for `plan` (compiled or loaded from Numba's cache on
    first use), bypassing the Python dispatch wrapper when the interpreter offers one loop per
    GEMM path (`loop_for`, keyed by lpool[0])."""
    from nqrt.runtime import interpreter
    if _get_num_threads is None:
        _threading()
    loop_for = getattr(interpreter, "loop_for", None)
    if loop_for is not None:
        return loop_for(int(plan.lpool[0]))
    return interpreter.execute


class _Bound:
    """A plan plus its arenas (allocated once per plan, reused by every run; the plan's uint8
    constants are copied into the uint8 arena here) and the interpreter's argument tuple (so a
    run does no per-call slicing, reshaping or size arithmetic).  The graph inputs and outputs
    are not in the arenas: each run points `io` at the caller's input arrays and at freshly
    allocated output arrays (`bind`), which the interpreter reads and writes in place."""

    def __init__(self, plan: _planner.Plan, consts):
        self.plan = plan
        self.u8 = _aligned(plan.u8_size, np.uint8)
        self.f32 = _aligned(plan.f32_size, np.float32)
        self.scratch = _aligned(plan.scratch_size, np.uint8)
        plan.init_u8(self.u8)     # uint8 constants (QLut tables, QAdd/QMul operands), once per plan
        self.io = np.zeros(len(plan.inputs) + len(plan.outputs), np.int64)
        self.out_specs = [(name, k, tuple(int(d) for d in shape))
                          for name, (k, shape) in plan.outputs.items()]
        self.in_slots = range(len(plan.inputs))
        self.args = (plan.code, plan.lpool, consts.wpool, consts.ipool, consts.fpool,
                     self.u8, self.f32, self.scratch, self.io)
        self.key = None
        self.fn = None            # the compiled interpreter loop for this plan (set on first run)

    def bind(self, arrs) -> dict[str, np.ndarray]:
        """Point io at the input arrays `arrs` (float32, the plan's shapes, in plan.inputs
        order; C-contiguous and aligned, see _buffer) and at a new float32 array per output;
        returns {output name: its array}.  The caller keeps `arrs` alive until the run ends."""
        io = self.io
        for k in self.in_slots:
            _store_address(io, k, arrs[k])
        outs = {}
        for name, k, shape in self.out_specs:
            o = np.empty(shape, np.float32)
            _store_address(io, k, o)
            outs[name] = o
        return outs


@numba.njit(**JIT)
def _store_address(io, k, a):
    """io[k] = the address of a's data.  A compiled call (~0.3 us) rather than
    `a.__array_interface__` or `a.ctypes` (~1.5 us each: they build a dict / an object), on
    the run path of small models where every microsecond shows."""
    io[k] = a.ctypes.data


def _buffer(a: np.ndarray) -> np.ndarray:
    """`a` itself when the interpreter can read it in place (C-contiguous and aligned), else
    a C-contiguous copy."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.array(a, dtype=np.float32, order="C")


def _aligned(n: int, dtype, align: int = 64) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n * itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n * itemsize].view(dtype)


class Session:
    def __init__(self, model: NqModel, threads: int | None = None, mode: str = "integer"):
        """`threads`: kernel threads per run (None = all of Numba's threads, i.e. all cores)."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        max_threads = numba.config.NUMBA_NUM_THREADS
        if threads is not None and not (isinstance(threads, int) and 1 <= threads <= max_threads):
            raise InputError(f"threads must be an int in [1, {max_threads}], got {threads!r}")
        self.model = model
        self.mode = mode
        self.threads = threads
        self.inputs = [TensorInfo(io.name, tuple(io.shape), io.dtype) for io in model.graph_inputs]
        self.outputs = [TensorInfo(io.name, tuple(io.shape), io.dtype) for io in model.graph_outputs]
        self._consts = _planner.prepare(model) if mode == "integer" else None
        self._plans: OrderedDict[tuple, _Bound] = OrderedDict()
        self._recent = None          # the plan at the end of _plans' LRU order
        self._lock = threading.Lock()
        self._in_names = tuple(i.name for i in self.inputs)
        self._out_names = [o.name for o in self.outputs]
        self._nthreads = threads or numba.config.NUMBA_NUM_THREADS

    @classmethod
    def load(cls, path_or_model, threads: int | None = None, mode: str = "integer") -> "Session":
        """Open a `.nq` file (str / PathLike) or wrap an in-memory NqModel."""
        if isinstance(path_or_model, NqModel):
            model = path_or_model
        elif isinstance(path_or_model, (str, os.PathLike)):
            from nqrt.format.reader import read_nq
            model = read_nq(path_or_model)
        else:
            raise InputError(f"expected a path or an NqModel, got {type(path_or_model).__name__}")
        return cls(model, threads=threads, mode=mode)

    # -- feeds -----------------------------------------------------------------------
    def _check_feeds(self, feeds) -> dict[str, tuple[int, ...]]:
        if not isinstance(feeds, dict):
            raise InputError(f"feeds must be a dict of input name -> numpy array, got {type(feeds).__name__}")
        expected = [i.name for i in self.inputs]
        unknown = [k for k in feeds if k not in expected]
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; the model's inputs are {expected}")
        missing = [k for k in expected if k not in feeds]
        if missing:
            raise InputError(f"missing input {missing[0]!r}; the model's inputs are {expected}")
        bound: dict[str, tuple[int, str]] = {}
        shapes = {}
        for info in self.inputs:
            a = feeds[info.name]
            if not isinstance(a, np.ndarray):
                raise InputError(f"input {info.name!r}: expected a numpy array, got {type(a).__name__}")
            if a.dtype != np.float32:
                raise InputError(f"input {info.name!r}: expected dtype float32, got {a.dtype}")
            want = [d if isinstance(d, str) else int(d) for d in info.shape]
            if a.ndim != len(want):
                raise InputError(f"input {info.name!r}: expected rank {len(want)} {want}, got shape {list(a.shape)}")
            for axis, (d, got) in enumerate(zip(want, a.shape)):
                if isinstance(d, str):
                    if got < 1:
                        raise InputError(f"input {info.name!r}: dim {axis} ({d!r}) must be >= 1, got {got}")
                    if d in bound and bound[d][0] != got:
                        raise InputError(f"input {info.name!r}: dim {axis} ({d!r}) is {got} but {d!r} = "
                                         f"{bound[d][0]} from input {bound[d][1]!r}")
                    bound.setdefault(d, (got, info.name))
                elif d != got:
                    raise InputError(f"input {info.name!r}: expected shape {want}, got {list(a.shape)}")
            shapes[info.name] = tuple(int(s) for s in a.shape)
        return shapes

    def _check_output_names(self, output_names) -> list[str]:
        names = [o.name for o in self.outputs]
        if output_names is None:
            return names
        if isinstance(output_names, str):
            output_names = [output_names]
        for n in output_names:
            if n not in names:
                raise InputError(f"unknown output {n!r}; the model's outputs are {names}")
        return list(output_names)

    # -- planning --------------------------------------------------------------------
    def plan_for(self, shapes: dict[str, tuple[int, ...]]) -> _planner.Plan:
        """The (cached) plan for these input shapes."""
        return self._bound(shapes).plan

    def _bound(self, shapes) -> _Bound:
        key = tuple(tuple(shapes[i.name]) for i in self.inputs)
        b = self._plans.get(key)
        if b is None:
            p = _planner.plan(self.model, self._consts, shapes, numba.config.NUMBA_NUM_THREADS)
            b = self._plans[key] = _Bound(p, self._consts)
            b.key = key
            if len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        self._recent = b
        return b

    @property
    def kernel_path(self) -> str | None:
        """The GEMM/conv kernel path the weights were packed for ("vnni512", "avx2",
        "portable"; nqrt.kernels.cpu), None in simulate mode."""
        return self._consts.path if self._consts is not None else None

    @property
    def winograd_convs(self) -> int:
        """How many QConv layers run as Winograd F(2x2, 3x3) (0 in simulate mode)."""
        return sum(1 for c in self._consts.node if c.get("winograd")) if self._consts is not None else 0

    @property
    def nthreads(self) -> int:
        """Kernel threads per run (the `threads` given to load, else all of Numba's)."""
        return self._nthreads

    @property
    def plan_cache_size(self) -> int:
        return len(self._plans)

    # -- running ---------------------------------------------------------------------
    def run(self, feeds: dict, output_names=None) -> dict[str, np.ndarray]:
        """Run the model on `feeds` (input name -> float32 array of a valid shape); returns
        a dict output name -> fresh float32 array (all outputs, or `output_names`)."""
        if self.mode == "integer" and type(feeds) is dict and len(feeds) == len(self._in_names):
            # Fast path: a dict of exactly the input names, plain float32 ndarrays, shapes that
            # were validated before (a plan exists for them: plans are only made for shapes
            # that passed _check_feeds, and validity depends on nothing else).  `is` on the
            # dtype: numpy's float32 descriptor is a singleton; any other equal descriptor
            # (rare) takes the checked path, which accepts it.
            arrs = [feeds.get(name) for name in self._in_names]
            shapes = []
            for a in arrs:
                if type(a) is not np.ndarray or a.dtype is not _F32:
                    break
                shapes.append(a.shape)
            else:
                b = self._plans.get(tuple(shapes))
                if b is not None:
                    if output_names is None:
                        return self._run_bound(b, arrs, None)
                    return self._run_bound(b, arrs, self._check_output_names(output_names))
        shapes = self._check_feeds(feeds)
        names = self._check_output_names(output_names)
        if self.mode == "simulate":
            from nqrt.runtime import simulate as _simulate       # numpy float64 fake-quant
            out = _simulate.run(self.model, feeds)
            return {n: out[n] for n in names}
        with self._lock:
            b = self._bound(shapes)
        return self._run_bound(b, [feeds[n] for n in self._in_names], names)

    def _run_bound(self, b: _Bound, arrs, names) -> dict[str, np.ndarray]:
        """Run plan b on arrs; names: the outputs to return (None: all, in model order)."""
        fn = b.fn
        if fn is None:
            fn = _interpreter_for(b.plan)
        want = self._nthreads
        if want > 1:
            _affinity.ensure_workers_pinned(_set_num_threads, _get_num_threads)
        with self._lock:
            if self._recent is not b:                       # keep the LRU order of _plans
                if b.key in self._plans:                    # (another thread may have evicted it)
                    self._plans.move_to_end(b.key)
                self._recent = b
            arrs = [_buffer(a) for a in arrs]             # kept alive until the run ends
            out = b.bind(arrs)
            prev = _get_num_threads()                       # thread-local, like set_num_threads
            if prev != want:
                _set_num_threads(want)
            try:
                fn(*b.args)
            finally:
                if prev != want:
                    _set_num_threads(prev)
            if b.fn is None:
                b.fn = _compiled_entry(fn, b.args)
            if names is None:
                return out
            return {name: out[name] for name in names}


def _compiled_entry(fn, args):
    """The compiled entry point of dispatcher `fn` for the types of `args` (after a call with
    them), which skips the dispatcher's type resolution (~0.3-0.6 us for the interpreter's nine
    arrays).  Safe only because a plan's interpreter arguments never change type (b.args is
    fixed per plan).  Falls back to `fn` if this Numba version lacks the attributes."""
    try:
        cres = fn.overloads.get(tuple(numba.typeof(a) for a in args))
        return cres.entry_point if cres is not None else fn
    except Exception:  # noqa: BLE001 - an internal API; the dispatcher is always correct
        return fn

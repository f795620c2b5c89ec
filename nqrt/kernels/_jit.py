"""All Numba options of the kernels, in one place, and `xcall` (calls that do not copy code).

JIT:  serial kernels and helpers.  cache=True (the cache dir is chosen in nqrt/numba_config.py),
      nogil=True (sessions may run in threads), fastmath=False (float kernels must follow IEEE:
      Quantize divides, Softmax sums in a fixed order), error_model="numpy" (no ZeroDivision
      checks in inner loops, which would block vectorization; kernels never divide by zero).
PJIT: kernels that split work with prange.  Every parallel kernel partitions *independent*
      outputs between threads (no cross-thread reductions), so results do not depend on the
      thread count.

xcall(f, *args), in njit code, calls the module-level @njit function f like f(*args) but
without linking f's code into the caller.  An ordinary call links the callee's whole module
(and its callees', recursively) into the caller's library, where LLVM optimizes it and
generates its machine code again; with every level of calls, and every parallel loop (its
body is compiled into three libraries of its own), the same kernel code is compiled many
times over: most of the time to a first result with an empty cache went there.  xcall
instead compiles f once (its own dispatcher, cached like any other) and calls its entry point
through a process-wide symbol (`llvmlite.binding.add_symbol`), bound to f's compiled code
while the caller is compiled, and again, before the caller's cached code is loaded, by a
reload hook stored with the caller's cache entry.  The call is an ordinary Numba call (same
calling convention, exceptions propagate) that LLVM cannot inline: use it where the callee
does enough work per call (a kernel, a task of a parallel loop).  Argument types are the call
site's (a literal is passed as its plain type); the symbol names the callee and those types,
so a caller always runs the callee's current code.

xcall_lazy(f, *args) is the same call for an f that returns None, except that f is compiled
(or loaded from the cache) only when the call first runs: the symbol points at a cell that
the caller reads before each call, and an empty cell calls back into Python
(`_resolve`, a ctypes callback) to bind it.  For the interpreter loop, which reaches every
kernel but runs only those its plan uses; never inside a parallel loop (the callback would
compile from a worker thread).
"""

import ctypes
import hashlib
import importlib
import traceback

import llvmlite.binding as llb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy", boundscheck=False)
PJIT = dict(JIT, parallel=True)


class _Binding:
    """One (callee, argument types, return type) of xcall / xcall_lazy.  `bind()` compiles
    (or loads from the cache) the callee for those types and points the symbol (and the
    lazy cell) at its entry; `publish()` only creates the lazy cell.  Instances are the
    reload hooks of the callers' cache entries (picklable, compared by symbol)."""

    _bound: dict = {}          # symbol -> compile result, per process
    _cells: dict = {}          # symbol -> ctypes cell of xcall_lazy (kept alive)
    _by_cell: dict = {}        # cell address -> binding

    def __init__(self, module, qualname, argtypes, restype, lazy=False):
        self.module = module
        self.qualname = qualname
        self.argtypes = tuple(argtypes)
        self.restype = restype
        self.lazy = lazy
        key = f"{module}.{qualname}{self.argtypes}->{restype}".encode()
        self.symbol = f"nqrt.xcall.{qualname}.{hashlib.sha256(key).hexdigest()[:24]}"
        if lazy:
            self.symbol += ".cell"

    def __eq__(self, other):
        return isinstance(other, _Binding) and other.symbol == self.symbol

    def __hash__(self):
        return hash(self.symbol)

    def __call__(self):                      # the reload hook
        if self.lazy:
            self.publish()
        else:
            self.bind()

    def dispatcher(self):
        obj = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj

    def compile(self):
        """The callee's compile result for argtypes (compiled or loaded from the cache)."""
        cres = self._bound.get(self.symbol)
        if cres is None:
            disp = self.dispatcher()
            disp.compile(self.argtypes)
            cres = disp.overloads[self.argtypes]
            if cres.signature.return_type != self.restype:
                raise TypeError(f"xcall: {self.qualname}{self.argtypes} returns "
                                f"{cres.signature.return_type}, the call expects {self.restype}"
                                " (xcall_lazy callees return None; else a stale cache)")
            self._bound[self.symbol] = cres
        return cres

    def bind(self):
        cres = self.compile()
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        if not addr:
            raise RuntimeError(f"xcall: no entry point for {self.qualname}{self.argtypes}")
        if self.lazy:
            self.publish().value = addr
        else:
            llb.add_symbol(self.symbol, addr)
        return cres

    def publish(self):
        cell = self._cells.get(self.symbol)
        if cell is None:
            cell = self._cells[self.symbol] = ctypes.c_void_p(0)
            self._by_cell[ctypes.addressof(cell)] = self
            llb.add_symbol(self.symbol, ctypes.addressof(cell))
        return cell


@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
def _resolve(cell_addr):
    """Called by compiled code that found an xcall_lazy cell empty: bind it (0 = done)."""
    try:
        _Binding._by_cell[cell_addr].bind()
        return 0
    except BaseException:                    # cannot propagate through the C frame
        traceback.print_exc()
        return 1


_RESOLVE = "nqrt.xcall.resolve"
llb.add_symbol(_RESOLVE, ctypes.cast(_resolve, ctypes.c_void_p).value)


def _callee(fn, args, lazy):
    if not isinstance(fn, types.Dispatcher):
        raise TypingError("xcall: the first argument must be an @njit function")
    py = fn.dispatcher.py_func
    if "<locals>" in py.__qualname__:
        raise TypingError(f"xcall: {py.__qualname__} is not a module-level function")
    argtypes = tuple(types.unliteral(a) for a in args)
    if lazy:
        binding = _Binding(py.__module__, py.__qualname__, argtypes, types.none, lazy=True)
        binding.publish()
    else:
        fn.dispatcher.compile(argtypes)
        restype = fn.dispatcher.overloads[argtypes].signature.return_type
        binding = _Binding(py.__module__, py.__qualname__, argtypes, restype)
        binding.bind()
    return binding


def _emit_call(context, builder, sig, llargs, binding, callee):
    argtypes = binding.argtypes
    vals = [context.cast(builder, v, t, u) for v, t, u in
            zip(cgutils.unpack_tuple(builder, llargs[1]), sig.args[1], argtypes)]
    status, res = context.call_conv.call_function(builder, callee, binding.restype, argtypes,
                                                  vals)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    context.active_code_library._reload_init.add(binding)
    return res


@intrinsic
def xcall(typingctx, fn, *args):
    """xcall(f, *args): f(*args) for a module-level @njit function f, calling f's separately
    compiled code (see the module docstring)."""
    binding = _callee(fn, args, lazy=False)

    def codegen(context, builder, sig, llargs):
        fnty = context.call_conv.get_function_type(binding.restype, binding.argtypes)
        callee = cgutils.get_or_insert_function(builder.module, fnty, binding.symbol)
        return _emit_call(context, builder, sig, llargs, binding, callee)

    return binding.restype(fn, types.StarArgTuple.from_types(args)), codegen


@intrinsic
def xcall_lazy(typingctx, fn, *args):
    """xcall_lazy(f, *args): f(*args) for a module-level @njit function f returning None,
    compiled when the call first runs (see the module docstring)."""
    binding = _callee(fn, args, lazy=True)

    def codegen(context, builder, sig, llargs):
        voidp = ir.IntType(8).as_pointer()
        mod = builder.module
        try:
            cell = mod.get_global(binding.symbol)
        except KeyError:
            cell = ir.GlobalVariable(mod, voidp, name=binding.symbol)
            cell.linkage = "external"
        with builder.if_then(cgutils.is_null(builder, builder.load(cell)), likely=False):
            resolve = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.IntType(32), [voidp]), _RESOLVE)
            builder.call(resolve, [builder.bitcast(cell, voidp)])
        ptr = builder.load(cell)
        with builder.if_then(cgutils.is_null(builder, ptr), likely=False):
            context.call_conv.return_user_exc(
                builder, RuntimeError,
                (f"could not compile {binding.qualname} (the error is printed above)",))
        fnty = context.call_conv.get_function_type(types.none, binding.argtypes)
        callee = builder.bitcast(ptr, fnty.as_pointer())
        return _emit_call(context, builder, sig, llargs, binding, callee)

    return types.none(fn, types.StarArgTuple.from_types(args)), codegen


@intrinsic
def fetch_add(typingctx, arr, i):
    """Atomically arr[i] += 1 (arr: int64 array), returning the value before: how the threads
    of a parallel loop take work items from a shared counter (each item goes to exactly one
    thread, whichever asks first; sequentially consistent)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        raise TypingError("fetch_add needs an int64 array")
    sig = types.int64(arr, i)

    def codegen(context, builder, signature, args):
        a, idx = args
        data = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=a).data
        idx = context.cast(builder, idx, signature.args[1], types.int64)
        ptr = builder.gep(data, [idx])
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return sig, codegen


@intrinsic
def copy_bytes(typingctx, dst, src, n):
    """memcpy(dst, src, n) between absolute addresses (int64) of non-overlapping ranges: LLVM's
    memcpy intrinsic, about 10x a Numba byte loop for the short rows of a channels-last copy
    (a byte loop with possibly aliasing operands is not vectorized)."""
    sig = types.void(dst, src, n)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(args[0], i8p), builder.inttoptr(args[1], i8p),
                           context.cast(builder, args[2], signature.args[2], types.int64), 1)
        return context.get_dummy_value()

    return sig, codegen

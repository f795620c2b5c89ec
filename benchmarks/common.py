"""Shared helpers for the nqrt benchmarks: thread pinning, interleaved timing, ORT sessions and
quantization, agreement metrics and an aligned table printer.

Only the standard library is imported at module level so that `apply_threads()` can set the
thread environment variables before numpy / numba / onnxruntime are first imported.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nqrt" / "bench"

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

NA = "n/a"


# ----------------------------------------------------------------------------------------------
# threads


def apply_threads(threads: int) -> list[str]:
    """Pin every library we time to `threads` threads.  Returns notes on what could not be pinned.

    Environment variables only take effect for libraries not yet imported, so call this before
    importing numpy / numba / onnxruntime.  numpy's BLAS is also limited at run time through
    threadpoolctl when available; numba through `numba.set_num_threads`; ONNX Runtime through
    `SessionOptions.intra_op_num_threads` (see `ort_session`); nqrt through `nqrt.load(threads=)`.
    """
    notes = []
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    if "numba" in sys.modules:
        notes.append("numba was imported before apply_threads(); NUMBA_NUM_THREADS not applied")
    try:
        import threadpoolctl

        # keep a reference: the limiter object is only a context manager, the limit itself is global
        apply_threads._limiter = threadpoolctl.threadpool_limits(limits=threads)  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - optional
        notes.append(f"threadpoolctl unavailable ({type(e).__name__}); numpy BLAS threads set by env only")
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        if threads > numba.config.NUMBA_NUM_THREADS:
            notes.append(f"numba limited to {numba.config.NUMBA_NUM_THREADS} threads")
    except Exception as e:  # noqa: BLE001
        notes.append(f"numba threads not set ({type(e).__name__}: {e})")
    return notes


def slow_blas_warning() -> str | None:
    """OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE force a generic OpenBLAS path: the numpy row is slow."""
    set_vars = [f"{k}={os.environ[k]}" for k in SLOW_BLAS_ENV if os.environ.get(k)]
    if not set_vars:
        return None
    return ("warning: " + ", ".join(set_vars) + " is set; it slows numpy's OpenBLAS. For a fair numpy row run "
            "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...`")


def environment_line(threads: int) -> str:
    import platform

    parts = [f"threads={threads}", f"python {platform.python_version()}"]
    for mod in ("numpy", "numba", "onnxruntime", "onnx", "nqrt"):
        try:
            m = __import__(mod)
            parts.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception:  # noqa: BLE001
            parts.append(f"{mod} missing")
    try:
        import subprocess

        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        if rev:
            parts.append(f"git {rev}")
    except Exception:  # noqa: BLE001
        pass
    return "# " + ", ".join(parts) + "\n" + load_line("start")


def load_line(when: str) -> str:
    """The 1-minute load average: above the core count, other processes are competing for CPU."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return f"# load average at {when}: unknown"
    cores = os.cpu_count() or 1
    busy = ("  <- other work on the machine (or a benchmark that just ran): timings may be noisy, "
            "trust ratios from one run only") if one > 0.5 * cores else ""
    return f"# load average at {when}: {one:.2f} (1 min), {five:.2f} (5 min) on {cores} cores{busy}"


_WARNINGS: dict = {}


def collect_warnings() -> None:
    """Record Python warnings (e.g. nqrt falling back to slow stand-in kernels) instead of printing
    them mid-table; `warnings_lines()` lists each distinct one once, with a count."""
    import warnings

    warnings.simplefilter("always")

    def show(message, category, filename, lineno, file=None, line=None):
        key = f"{category.__name__}: {str(message).splitlines()[0]} ({Path(filename).name}:{lineno})"
        _WARNINGS[key] = _WARNINGS.get(key, 0) + 1

    warnings.showwarning = show


def warnings_lines() -> list[str]:
    return [f"# warning seen {n}x: {k}" for k, n in _WARNINGS.items()]


# ----------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    """Per-call wall times in seconds for one candidate."""

    samples: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")


SLOW_CALL_S = 0.5  # calls this long need no extra warm-up (a wake-up costs < 1 % of them)
# > the ~40 ms ORT's pool threads keep spinning after a run (measured here) and the 2^28 cycles
# (~85 ms at 3.2 GHz) OpenBLAS's threads spin after a numpy call (its THREAD_TIMEOUT default):
# with 0.08 s, 2-thread nqrt calls right after numpy's still stalled (medians of 8 ms for a
# 0.03 ms GEMM).
COOLDOWN_S = 0.2
# Untimed calls at the start of every block, for at least this long (at least one call).  After
# a pause the VM's cores come back slow: both nqrt's and ORT's first calls after a 0.2 s sleep
# took 3-3.5x their steady time and sped up over the next several milliseconds (measured on
# the 2-vCPU VM with the depthwise 3x3 b1 model: nqrt 0.73 ms first call, 0.35 ms by the 8th;
# ORT FP32 0.90 -> 0.34 ms; steady back-to-back 0.22 / 0.24 ms).  With one warm call only, a
# block of a few fast calls timed that ramp rather than the candidate.
WARM_BLOCK_S = 0.05


def time_interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                     rounds: int | None = None, max_seconds: float | None = None,
                     cooldown: float | None = None, warm_block: float | None = None
                     ) -> dict[str, Timing]:
    """Time every candidate `repeats` times, interleaved so machine drift hits all alike.

    The timed calls are split into `rounds` blocks; each round runs one block of every candidate
    back to back (A A B B C C, A A B B C C, ...), and the order of candidates rotates each round.
    Blocks (rather than strict A B A B) keep each candidate's weights warm in cache, as in real
    repeated use.  Between blocks the harness sleeps `cooldown` seconds (default COOLDOWN_S): ONNX
    Runtime's pool threads keep spinning for ~40 ms after a run and would otherwise occupy a core
    while the next candidate runs (measured: 2-thread Numba / OpenBLAS calls 10-100x slower).
    Each block starts with untimed calls for at least `warm_block` seconds (default
    WARM_BLOCK_S; at least one call), so the thread pool being timed is awake and the cores are
    back at speed after the pause, as in steady use.  A candidate that raises is dropped with its error recorded; the others continue.
    `max_seconds` (per candidate) stops early when one call is very slow.
    """
    cooldown = COOLDOWN_S if cooldown is None else cooldown
    warm_block = WARM_BLOCK_S if warm_block is None else warm_block
    names = list(candidates)
    out = {n: Timing() for n in names}
    slow = set()  # candidates whose calls take > SLOW_CALL_S: warm once, no per-block warm call
    for n in names:
        try:
            for i in range(max(warmup, 1)):  # at least one untimed call: JIT, allocation, caches
                t0 = time.perf_counter()
                candidates[n]()
                if i > 0 and time.perf_counter() - t0 > SLOW_CALL_S:
                    slow.add(n)
                    break
        except Exception as e:  # noqa: BLE001
            out[n].error = _short_error(e)
    repeats = max(int(repeats), 1)
    rounds = max(1, min(rounds or min(repeats, 5), repeats))
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    spent = {n: 0.0 for n in names}
    for r, count in enumerate(per_round):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for n in order:
            if out[n].error is not None:
                continue
            if max_seconds is not None and spent[n] > max_seconds and len(out[n].samples) >= 3:
                continue
            fn = candidates[n]
            try:
                if cooldown > 0:
                    time.sleep(cooldown)
                if n not in slow:  # untimed: wakes this candidate's threads after the pause
                    warm_end = time.perf_counter() + warm_block
                    fn()
                    while time.perf_counter() < warm_end:
                        fn()
                for _ in range(count):
                    t0 = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t0
                    out[n].samples.append(dt)
                    spent[n] += dt
            except Exception as e:  # noqa: BLE001
                out[n].error = _short_error(e)
    return out


def _short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = msg if len(msg) <= 160 else msg[:157] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def attempt(label: str, fn: Callable, *args, notes: list | None = None, **kwargs):
    """Run one stage; on failure append 'label: not available (reason)' to notes, return None."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a failing stage must not stop the benchmark
        reason = _short_error(e)
        if os.environ.get("NQRT_BENCH_DEBUG"):
            traceback.print_exc()
        if notes is not None:
            notes.append(f"{label}: not available ({reason})")
        return None


# ----------------------------------------------------------------------------------------------
# metrics


def sqnr_db(reference, approx) -> float:
    """Signal-to-quantization-noise ratio of `approx` against `reference`, in dB (higher is better)."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    app = np.asarray(approx, dtype=np.float64)
    if ref.shape != app.shape:
        raise ValueError(f"shape mismatch {app.shape} vs reference {ref.shape}")
    noise = float(np.sum((ref - app) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


# ----------------------------------------------------------------------------------------------
# nqrt


def nqrt_layer_runner(sess, feed: dict, opcodes: Sequence[int]):
    """A callable that runs only the first instruction of `sess`'s plan for `feed` whose opcode
    is in `opcodes` (e.g. the QConv or QGemm of a one-node model): uint8 NHWC in, uint8 out,
    no graph-boundary quantize / transpose / dequantize, i.e. the layer as it runs inside an
    int8 graph.  Runs the whole model once first so that the layer's input holds real data.
    Uses the session's plan internals (`_bound`: the arenas of the plan for these shapes)."""
    import numpy as np

    from nqrt.runtime import interpreter

    sess.run(feed)
    bound = sess._bound({k: tuple(np.shape(v)) for k, v in feed.items()})
    code = bound.plan.code
    hits = [i for i in range(code.shape[0]) if int(code[i, 0]) in set(opcodes)]
    if not hits:
        raise ValueError(f"the plan has no instruction with opcode in {list(opcodes)}")
    bound.bind([np.ascontiguousarray(feed[i.name], dtype=np.float32) for i in sess.inputs])
    run = interpreter.instruction_runner(*bound.args, hits[0])
    threads = sess.nthreads

    def timed():
        import numba

        prev = numba.get_num_threads()
        if prev != threads:
            numba.set_num_threads(threads)
        try:
            run()
        finally:
            if prev != threads:
                numba.set_num_threads(prev)
    return timed


# ----------------------------------------------------------------------------------------------
# ONNX Runtime


ORT_SPIN = True  # ORT's default; bench_*.py --ort-no-spin sets False


def ort_session(path, threads: int, spin: bool | None = None):
    """ORT CPU session with `threads` intra-op threads.  `spin` (default ORT_SPIN) keeps ORT's own
    default of pool threads spinning between runs; False sets session.intra_op.allow_spinning=0."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not (ORT_SPIN if spin is None else spin):
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_runner(sess, feed: dict):
    names = [o.name for o in sess.get_outputs()]
    return lambda: sess.run(names, feed)


def ort_quantize_qdq(model_path, out_path, input_name: str | None, calib, preprocess: bool = True,
                     notes: list | None = None) -> Path:
    """ORT's own static quantizer, its x86 fast path: QDQ, u8 activations, s8 per-channel weights,
    MinMax, fed one calibration sample at a time.  Optionally runs ORT's recommended
    `quant_pre_process` first (falls back to the raw model if pre-processing fails).
    calib: the one input's samples (input_name), or {input name: samples} with input_name None."""
    from onnxruntime import quantization as ortq

    model_path, out_path = Path(model_path), Path(out_path)
    src = model_path
    if preprocess:
        pre = out_path.with_name(out_path.stem + ".pre.onnx")
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(model_path), str(pre))
            src = pre
        except Exception as e:  # noqa: BLE001
            if notes is not None:
                notes.append(f"ORT quant_pre_process failed on {model_path.name} ({_short_error(e)}); "
                             "quantized the raw model")

    class _Reader(ortq.CalibrationDataReader):
        def __init__(self):
            arrays = calib if input_name is None else {input_name: calib}
            n = len(next(iter(arrays.values())))
            self._it = iter([{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)])

        def get_next(self):
            return next(self._it, None)

    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # ORT's quantizer logs "consider pre-processing" on the root logger
    try:
        ortq.quantize_static(
            str(src), str(out_path), _Reader(),
            quant_format=ortq.QuantFormat.QDQ, per_channel=True,
            activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
            calibrate_method=ortq.CalibrationMethod.MinMax,
        )
    finally:
        logging.disable(previous)
    return out_path


# ----------------------------------------------------------------------------------------------
# formatting


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return NA
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return NA
    return f"{x:.2f}x"


def fmt_num(x: float | None, digits: int = 1) -> str:
    if x is None or x != x:
        return NA
    if x == float("inf"):
        return "inf"
    return f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def format_table(columns: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None) -> str:
    """Aligned plain-text table (also valid Markdown): first column left-aligned, others right."""
    rows = [[str(c) for c in r] for r in rows]
    cols = [str(c) for c in columns]
    widths = [len(c) for c in cols]
    for r in rows:
        if len(r) != len(cols):
            raise ValueError(f"row has {len(r)} cells, table has {len(cols)} columns: {r}")
        widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(cells):
        out = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    text = [line(cols), sep] + [line(r) for r in rows]
    if title:
        text.insert(0, f"\n{title}")
    return "\n".join(text)


def parse_table(text: str, index: int = 0) -> tuple[list[str], list[list[str]]]:
    """Inverse of format_table for the index-th table in `text` (used by the smoke test)."""
    tables, cur = [], []
    for ln in text.splitlines():
        if ln.strip().startswith("|"):
            cur.append(ln.strip())
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    if index >= len(tables) or len(tables[index]) < 2:
        return [], []
    cells = [[c.strip() for c in ln[1:-1].split("|")] for ln in tables[index]]
    return cells[0], cells[2:]

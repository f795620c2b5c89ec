"""`nqrt` command line: convert, run, bench, inspect, example.

Every error caused by the user's input is printed as one line `error: ...` on stderr with exit
code 1 (no traceback).  An unexpected internal error prints one line with exit code 3; set
NQRT_DEBUG=1 to see its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from enum import Enum
from typing import Optional

import typer

from nqrt.errors import NqrtError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="nqrt: convert FP32 ONNX models to integer .nq models and run them on the CPU.",
)


class Calibration(str, Enum):
    minmax = "minmax"
    percentile = "percentile"


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Run fn, turning every exception into a one-line message and an exit code."""
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except NqrtError as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        _fail(f"{e.strerror}: {e.filename}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        # the reader of our output went away (`nqrt bench m.nq | head -1`): not an error of
        # ours; stop quietly, with stdout pointed at /dev/null so the interpreter's final
        # flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)
    except Exception as e:  # noqa: BLE001 - the CLI must never show a traceback by default
        if os.environ.get("NQRT_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        _fail(f"internal error ({type(e).__name__}: {msg}); rerun with NQRT_DEBUG=1 for details", 3)


def _load_npz(path: Path) -> dict:
    import numpy as np

    from nqrt.errors import InputError

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a bad npz
        raise InputError(f"cannot read {path} as .npz: {e}") from None


@app.command()
def convert(
    model: Path = typer.Argument(..., help="FP32 ONNX model to convert."),
    output: Path = typer.Option(..., "-o", "--output", help="Path of the .nq file to write."),
    calib: Path = typer.Option(..., "--calib", help="Calibration .npz: arrays keyed by input name, first axis = samples."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weight scales (default: per output channel)."),
    calibration: Calibration = typer.Option(Calibration.minmax, "--calibration", help="Activation range calibrator."),
    percentile: float = typer.Option(99.99, "--percentile", help="Percentile for --calibration percentile."),
    batch_size: int = typer.Option(32, "--batch-size", help="Calibration batch size (bounds memory)."),
    weight_bits: int = typer.Option(8, "--weight-bits", help="8, or 7: weights in [-63, 63] (less precise; on AVX2 CPUs without VNNI, ~1.2x faster exact convs/GEMMs). Depthwise convs keep 8."),
    keep_branches: bool = typer.Option(False, "--keep-branches", help="Do not merge parallel conv branches summed by an Add (RepVGG / MobileOne blocks exported without re-parameterization) into one conv; each branch is then quantized on its own (slower)."),
    input_shape: Optional[list[str]] = typer.Option(None, "--input-shape", help="NAME=D0,D1,... fixes a model input's shape (repeatable); a dim is a size or a symbol name kept symbolic (N,3,224,224). For models whose dynamic shape arithmetic does not fold; the calibration data must then fit the fixed dims."),
) -> None:
    """Convert an FP32 ONNX model into a static int8 .nq model, calibrating on CALIB."""

    def _do():
        from nqrt.converter import convert as run_convert

        report = run_convert(
            str(model), str(output), str(calib),
            calibration_method=calibration.value, percentile=percentile,
            per_channel=not per_tensor, batch_size=batch_size, weight_bits=weight_bits,
            input_shapes=_parse_shapes(input_shape), merge_branches=not keep_branches,
        )
        typer.echo(report.summary())

    _guard(_do)


@app.command()
def run(
    model: Path = typer.Argument(..., help=".nq model to run."),
    input: Path = typer.Option(..., "--input", "-i", help=".npz with one array per model input, keyed by input name."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write outputs to this .npz (keyed by output name)."),
    simulate: bool = typer.Option(False, "--simulate", help="Run the simulated (fake-quant, float) mode instead of integer."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Worker threads (default: all cores)."),
) -> None:
    """Run a .nq model on the inputs in an .npz file."""

    def _do():
        import numpy as np

        from nqrt.runtime.session import Session

        sess = Session.load(str(model), threads=threads, mode="simulate" if simulate else "integer")
        feeds = _load_npz(input)
        outs = sess.run(feeds)
        if output is not None:
            _save_npz_atomic(output, outs)
            typer.echo(f"wrote {len(outs)} output(s) to {output}")
        for name, arr in outs.items():
            flat = np.asarray(arr).ravel()
            head = ", ".join(f"{v:.5g}" for v in flat[:6])
            typer.echo(f"{name}: {arr.dtype}{list(arr.shape)} [{head}{', ...' if flat.size > 6 else ''}]")

    _guard(_do)


def _parse_shapes(items) -> dict | None:
    from nqrt.errors import InputError

    shapes = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        dims = [d.strip() for d in value.split(",")]
        if not sep or not name or not value or not all(d.isdigit() or d.isidentifier() for d in dims):
            raise InputError(f"--input-shape expects NAME=D0,D1,... with sizes or symbol names "
                             f"(e.g. input=1,3,224,224), got {item!r}")
        shapes[name] = tuple(int(d) if d.isdigit() else d for d in dims)
    return shapes or None


def _parse_dims(items) -> dict:
    from nqrt.errors import InputError

    dims = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise InputError(f"--dim expects NAME=SIZE (e.g. N=8), got {item!r}")
        dims[name] = int(value)
    return dims


@app.command()
def bench(
    model: Path = typer.Argument(..., help=".nq model to time."),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Size of the inputs' symbolic leading dim (default 1); same as --dim <its name>=B."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", help="NAME=SIZE for a symbolic input dim (repeatable); unset symbols are 1."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Time on the arrays of this .npz instead of random inputs."),
    repeats: int = typer.Option(100, "--repeats", "-n", help="Timed runs."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs first (the first one plans and loads the kernels)."),
    pause: float = typer.Option(0.0, "--pause", help="Seconds to sleep before each timed run (latency of sporadic requests)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Worker threads (default: all cores)."),
    simulate: bool = typer.Option(False, "--simulate", help="Time the simulated (float) mode instead of integer."),
) -> None:
    """Time a .nq model: min / median / p90 / mean latency of Session.run and throughput."""

    def _do():
        from nqrt.errors import InputError
        from nqrt.runtime.latency import measure, synthetic_feeds
        from nqrt.runtime.session import Session

        sess = Session.load(str(model), threads=threads, mode="simulate" if simulate else "integer")
        dims = _parse_dims(dim)
        if batch is not None:
            lead = {i.shape[0] for i in sess.inputs if i.shape and isinstance(i.shape[0], str)}
            if not lead:
                raise InputError("--batch: the model's inputs have no symbolic leading dim; "
                                 "their shapes are fixed")
            for name in lead:
                dims.setdefault(name, batch)
        feeds = _load_npz(input) if input is not None else synthetic_feeds(sess, dims)
        stats = measure(sess, feeds, repeats=repeats, warmup=warmup, pause=pause)
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        n = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else None
        wino = f", {sess.winograd_convs} conv(s) as Winograd" if sess.winograd_convs else ""
        mode = "simulate mode" if simulate else f"integer mode ({sess.kernel_path} kernels{wino})"
        typer.echo(f"{model.name}: {mode}, {sess.nthreads} thread(s), inputs {shapes}"
                   + (f", {pause:g} s pause before each run" if pause else ""))
        typer.echo(stats.summary(batch=None if pause else n))

    _guard(_do)


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    import tempfile

    import numpy as np

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=str(path.parent or "."))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@app.command()
def inspect(
    model: Path = typer.Argument(..., help=".nq model to describe."),
    tensors: bool = typer.Option(True, "--tensors/--no-tensors", help="List per-tensor scales and zero points."),
) -> None:
    """Describe a .nq model: inputs/outputs, op counts, quantization parameters, sizes."""

    def _do():
        from nqrt.inspect import describe
        from nqrt.format.reader import read_nq

        nq = read_nq(str(model))
        typer.echo(describe(nq, file_size=os.path.getsize(model), show_tensors=tensors))

    _guard(_do)


@app.command()
def example(
    out_dir: Path = typer.Option(Path("nqrt-example"), "--out", help="Directory for the converted .nq files."),
    model: Optional[str] = typer.Option(None, "--model", help="Run only this bundled model (default: all)."),
    repeats: int = typer.Option(200, "--repeats", help="Timed single-sample inferences per model."),
) -> None:
    """Convert the bundled digits models, run them in int8 and print accuracy, sizes and latency."""

    def _do():
        from nqrt.examples.run import run_examples

        run_examples(out_dir, only=model, repeats=repeats, echo=typer.echo)

    _guard(_do)


def main() -> None:
    # typer/click print usage errors themselves (exit 2); everything else goes through _guard.
    app(prog_name="nqrt")


if __name__ == "__main__":
    main()

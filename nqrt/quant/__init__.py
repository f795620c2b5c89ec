"""Calibration and quantization: float IR + activation ranges -> integer `.nq` model.

  calibrate.py   per-tensor range observers (MinMax, Percentile) with bounded memory
  qparams.py     the quantization-parameter policy (activations, weights, bias guard, clamps)
  quantizers.py  one quantizer per float op (registry QUANTIZERS) and `quantize_graph`
"""

from nqrt.quant.calibrate import CALIBRATORS, MinMaxCalibrator, PercentileCalibrator, RangeCollector
from nqrt.quant.quantize import op_counts, quantize_graph
from nqrt.quant.quantizers import QUANTIZERS, check_supported, find_unsupported

__all__ = [
    "CALIBRATORS", "MinMaxCalibrator", "PercentileCalibrator", "RangeCollector",
    "QUANTIZERS", "check_supported", "find_unsupported", "op_counts", "quantize_graph",
]

"""Mixed precision only where the device computes it natively."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def native_bfloat16_cpu() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def effective_amp(amp: bool, device: torch.device | str) -> bool:
    """``amp``, turned off (with a warning) on a CPU without native bfloat16.

    CPU autocast computes in bfloat16; without AVX512-BF16 or AMX every convolution is emulated, about ten
    times slower than float32 (measured on an AVX2 CPU: 25 s against 2.6 s for one DenseNet121 training step,
    ``docs/results/speed.md``). CUDA autocast (float16) is left as asked.
    """
    if amp and torch.device(device).type == "cpu" and not native_bfloat16_cpu():
        logger.warning("amp: this CPU has no native bfloat16 (AVX512-BF16 or AMX); running in float32, "
                       "as emulated bfloat16 autocast is about 10x slower")
        return False
    return amp

"""What the CPU can do, as torch sees it: decides `dtype: auto` on the CPU, recorded in manifests.

bfloat16 matrix math is native on CPUs with AVX512-BF16 or AMX tiles (recent Xeons, AMD Zen 4+):
there SmolLM2-sized models generate ~1.8× faster in bf16 than in float32. Elsewhere oneDNN emulates
bf16 and it is slower, so `auto` stays float32.
"""

from __future__ import annotations

from typing import Any

import torch


def cpu_bf16_supported() -> bool:
    """True where the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except RuntimeError:  # a build without the probe's backend
            continue
    return False


def cpu_info() -> dict[str, Any]:
    """The CPU facts a manifest records: torch's capability level and bf16 support."""
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = "unknown"
    return {"capability": capability, "bf16_matmul": cpu_bf16_supported(), "threads": torch.get_num_threads()}

"""The machine the benchmark ran on: CPU model, cores, peak FLOP/s (derived, not assumed), versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

# Dense bf16 tensor-core peaks from the vendors' data sheets, FLOP/s; any other GPU is "unknown".
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12}

LIBRARIES = ("strop", "torch", "transformers", "accelerate", "setfit", "sentence-transformers", "scikit-learn")


def cpuinfo() -> dict:
    """The first processor's fields from /proc/cpuinfo, plus the mean 'cpu MHz' over all processors."""
    blocks = [b for b in open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n") if b.strip()]
    fields = [dict(line.split(":", 1) for line in b.splitlines() if ":" in line) for b in blocks]
    fields = [{k.strip(): v.strip() for k, v in f.items()} for f in fields]
    info = dict(fields[0])
    mhz = [float(f["cpu MHz"]) for f in fields if "cpu MHz" in f]
    info["mean MHz"] = sum(mhz) / len(mhz) if mhz else None
    return info


def lscpu() -> dict:
    """`lscpu` as a dict ({} where lscpu is missing)."""
    if not shutil.which("lscpu"):
        return {}
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def flops_per_cycle(flags: set[str], vendor: str, family: int) -> tuple[int, str]:
    """fp32 FLOP per cycle per core: FMA units x SIMD lanes x 2, from the CPU's flags."""
    if "avx512f" in flags and "fma" in flags:
        if vendor == "AuthenticAMD" and family == 0x19:  # Zen 4 runs 512-bit ops as two 256-bit halves
            return 32, "avx512f+fma, Zen 4 256-bit datapath"
        return 64, "avx512f+fma"  # 2 FMA units x 16 fp32 lanes x 2
    if "avx2" in flags and "fma" in flags:
        return 32, "avx2+fma"  # 2 x 8 x 2
    if "avx" in flags:
        return 16, "avx, no fma"
    return 8, "sse"


def cpu_peak() -> dict:
    """Peak fp32 FLOP/s of the cores this process may use, with the line that derives it."""
    info, ls = cpuinfo(), lscpu()
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads_per_core = int(ls.get("Thread(s) per core", "1") or 1)
    cores = max(logical // threads_per_core, 1)
    per_cycle, isa = flops_per_cycle(set(info.get("flags", "").split()), info.get("vendor_id", ""),
                                     int(info.get("cpu family", "0")))
    if ls.get("CPU max MHz"):
        mhz, clock_source = float(ls["CPU max MHz"]), "lscpu max MHz"
    else:
        mhz, clock_source = info["mean MHz"], "/proc/cpuinfo cpu MHz"
    peak = cores * per_cycle * mhz * 1e6
    line = (f"peak = {cores} cores x {per_cycle} FLOP/cycle x {mhz / 1000:.2f} GHz = {peak / 1e9:.0f} GFLOP/s "
            f"(fp32, {isa}; clock from {clock_source})")
    # AVX512_BF16's dot product (vdpbf16ps) does two bf16 multiply-adds per fp32 lane in the time of one fp32
    # FMA: twice the fp32 rate. Without it, bf16 math runs through fp32 units: no higher peak.
    bf16_factor = 2 if "avx512_bf16" in set(info.get("flags", "").split()) else 1
    bf16_peak = peak * bf16_factor
    line += (f"; bf16 peak = {bf16_factor} x fp32 = {bf16_peak / 1e9:.0f} GFLOP/s "
             + ("(avx512_bf16 dot products)" if bf16_factor == 2 else "(no bf16 dot-product instructions)"))
    return {"device": "cpu", "peak_flops": peak, "bf16_peak_flops": bf16_peak, "line": line, "cores": cores,
            "logical_cpus": logical,
            "flops_per_cycle": per_cycle, "ghz": mhz / 1000, "isa": isa,
            "model": ls.get("Model name") or info.get("model name", "unknown")}


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, or None (asks nvidia-smi, so the parent never imports torch)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return out.splitlines()[0] if out else None


def peak() -> dict:
    """The accelerator the tools will train on and its peak FLOP/s (None where unknown)."""
    name = gpu_name()
    if name is None:
        return cpu_peak()
    known = next((v for k, v in GPU_PEAKS.items() if k in name), None)
    line = (f"peak = {known / 1e12:.0f} TFLOP/s (dense bf16 tensor cores, data sheet of {name})" if known
            else f"peak of {name} unknown: MFU not reported")
    return {"device": "gpu", "peak_flops": known, "line": line, "model": name}


def versions() -> dict:
    """Installed versions of Python and the libraries compared."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe() -> dict:
    """Everything about the machine a result table needs beside it."""
    return {"peak": peak(), "platform": platform.platform(), "versions": versions()}

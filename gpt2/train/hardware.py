"""What the machine can do for a training run: precision, CPU threads, and the peak FLOP/s behind MFU.

MFU is model FLOPs per second (PaLM, Chowdhery et al. 2022, appendix B) over
the device's peak. Datacenter GPUs have datasheet peaks; a CPU's peak is
measured once with matrix products and cached per machine (CPU, dtype,
threads, torch version), so runs do not pay for it again. A peak measured while
other work ran is too low; the first step that beats it raises the cached
figure, so MFU never reads above 100%.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time

import torch

from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)

# Dense bfloat16 / float16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, matched in order
# against torch.cuda.get_device_name(); other GPUs, and CPUs, are measured (`measure_matmul_tflops`).
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("V100", 125.0),
)


# ----------------------------------------------------------------------------
# precision


def training_dtype(spec: str, device: torch.device) -> torch.dtype:
    """A training run's --dtype: as named, or 'auto': bfloat16 autocast where the hardware multiplies it (GPUs that
    have it, CPUs with AMX or AVX512-BF16), float16 with loss scaling on older GPUs, else float32. (Inference picks
    its weights' dtype in gpt2/device.py.)"""
    if spec != "auto":
        dtype = getattr(torch, spec)
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise GPT2Error(f"{torch.cuda.get_device_name(device)} has no bfloat16; use --dtype float16 or float32")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """True if the CPU multiplies bfloat16 natively (AMX or AVX512-BF16); otherwise bfloat16 is emulated and slow."""
    flags = _cpu_flags()
    return " amx_bf16" in flags or " avx512_bf16" in flags


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ----------------------------------------------------------------------------
# CPU threads


def other_runnable_processes(samples: int = 5, interval: float = 0.05) -> int:
    """How many other processes want a CPU right now: the median of a few readings of the kernel's count of
    runnable tasks (/proc/loadavg), less this one. 0 where the kernel does not say."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


def choose_threads(requested: int, cores: int | None = None, busy: int | None = None) -> int:
    """CPU threads for one training process: `requested` if given, else OMP_NUM_THREADS if set (torchrun sets it),
    else this process's share of the cores that no other process is using (its LOCAL_WORLD_SIZE-th).

    PyTorch's default (one thread per core) assumes the cores are free. When another process holds one,
    every parallel region waits for the thread that lost its core: on a 2-core machine with one core busy,
    the demo's steps took 1.5-2.7 s with 2 threads and 0.21 s with 1 (bench/RESULTS.md, "CPU threads").
    """
    if requested:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = cores or len(os.sched_getaffinity(0))
    busy = other_runnable_processes() if busy is None else busy
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # processes of this run on this machine share the cores
    return max(1, (cores - busy) // max(1, local))


# ----------------------------------------------------------------------------
# peak FLOP/s


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 0.6) -> float:
    """The best TFLOP/s of square products on this device in this dtype, with this process's threads.

    Sizes grow from 512 while one product takes under a tenth of the budget, so a dtype the CPU only
    emulates (bfloat16 without AVX512-BF16) is measured on small products in a fraction of a second.
    """
    best = 0.0
    n = 512 if device.type == "cpu" else 4096
    largest = 4096 if device.type == "cpu" else 8192
    end = time.perf_counter() + seconds
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        took = []
        size_end = time.perf_counter() + seconds / 4
        while time.perf_counter() < size_end and len(took) < 50:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            took.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / min(took) / 1e12)
        if n >= largest or min(took) > seconds / 10 or time.perf_counter() > end:
            return best
        n *= 2


class Peak:
    """The peak FLOP/s of one device for MFU, and where the figure comes from; `observe` keeps MFU <= 100%."""

    def __init__(self, tflops: float, source: str, cache_key: str | None = None):
        self.tflops = tflops
        self.source = source
        self.cache_key = cache_key

    @property
    def flops(self) -> float:
        return self.tflops * 1e12

    def observe(self, achieved_flops: float) -> None:
        """A step ran at `achieved_flops` per device: if that beats the peak, the peak was too low (measured on a
        busy machine, or given wrong), so it is raised to what was achieved (and a cached figure with it)."""
        if achieved_flops <= self.flops:
            return
        log.info(
            "a step ran at %s TFLOP/s, above the peak of %s (measured while the machine was busy, or given too low); "
            "the peak is now %s", _tflops(achieved_flops / 1e12), _tflops(self.tflops), _tflops(achieved_flops / 1e12),
        )
        self.tflops = achieved_flops / 1e12
        self.source = f"{self.source}, raised to a step's own rate"
        if self.cache_key is not None:
            _store_peak(self.cache_key, self.tflops)

    def describe(self) -> str:
        return f"peak {_tflops(self.tflops)} TFLOP/s per device ({self.source})"


def _tflops(value: float) -> str:
    return f"{value:.3g}"


def _peaks_file():
    from gpt2.download import cache_dir

    return cache_dir() / "peak_tflops.json"


def _load_peaks() -> dict:
    try:
        data = json.loads(_peaks_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_peak(key: str, tflops: float) -> None:
    peaks = _load_peaks()
    peaks[key] = tflops
    path = _peaks_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(peaks, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache costs a measurement per run, nothing more
        log.debug("could not cache the peak in %s: %s", path, e)


def peak_tflops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> Peak:
    """The peak of one device for `dtype`: given, from NVIDIA's datasheet, or measured once per machine and cached."""
    if override:
        return Peak(override, "given")
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_TFLOPS:
            if key in name:
                return Peak(value, f"{name} datasheet")
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    dtype_name = str(dtype).removeprefix("torch.")
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    key = f"{what} | {dtype_name} | {threads} threads | torch {torch.__version__}"
    cached = _load_peaks().get(key)
    if isinstance(cached, (int, float)) and cached > 0:
        return Peak(float(cached), f"measured on {what}, cached", key)
    measured = measure_matmul_tflops(device, dtype)
    _store_peak(key, measured)
    return Peak(measured, f"measured on {what}", key)

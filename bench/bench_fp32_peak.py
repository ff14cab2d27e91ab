"""How close PyTorch's float32 matrix product comes to this CPU's float32 FMA peak.

Float32 evaluation (bench_eval.py) runs the same matrix products on both
sides, so its speed-up is bounded by how far those products sit below the
hardware's peak. This measures the peak with a loop of independent AVX-512
FMAs on registers only (no memory traffic; built here with gcc), then a
2,048-cube float32 `torch.mm` right after it, in turn, and prints each
round's ratio. Needs gcc and a CPU with AVX-512.

    python bench/bench_fp32_peak.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpt2.train import cpu_name  # noqa: E402

# 12 independent accumulators per thread cover the FMA latency on two ports
FMA_LOOP = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>
int main(void) {
    const long iters = 500000000L;
    struct timespec t0, t1;
    float sink = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
#pragma omp parallel reduction(+ : sink)
    {
        __m512 acc[12], b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
        for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
        for (long k = 0; k < iters; k++)
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
        for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(acc[i]);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    printf("%.6f %g\n", omp_get_max_threads() * (double)iters * 12 * 16 * 2 / s / 1e12, sink);
    return 0;
}
"""


def matmul_tflops(n: int = 2048, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        source, exe = Path(tmp) / "fma.c", Path(tmp) / "fma"
        source.write_text(FMA_LOOP)
        subprocess.run(["gcc", "-O2", "-mavx512f", "-fopenmp", str(source), "-o", str(exe)], check=True)
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {threads} threads; torch {torch.__version__}")
        ratios = []
        for i in range(args.rounds):
            out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
            peak, mm = float(out.stdout.split()[0]), matmul_tflops()
            ratios.append(mm / peak)
            print(f"  round {i + 1}: FMA peak {peak:.3f} TFLOP/s, float32 torch.mm 2048^3 {mm:.3f} TFLOP/s: {100 * mm / peak:.0f}% of the peak")
    print(f"float32 torch.mm at {100 * statistics.median(ratios):.0f}% of the FMA peak (median over rounds)")


if __name__ == "__main__":
    main()

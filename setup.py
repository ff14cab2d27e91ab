"""Build the optional C core of the BPE trainer (gpt2/_bpe.c).

Everything else is declared in pyproject.toml. The extension is optional: when
no C compiler is available the package installs anyway and the trainer uses
its pure-Python core (same merges, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gpt2._bpe", sources=["gpt2/_bpe.c"], optional=True, extra_compile_args=["-O3"]),
        Extension("gpt2._gemv", sources=["gpt2/_gemv.c"], optional=True, extra_compile_args=["-O3"]),
    ]
)

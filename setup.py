"""Build of the optional C accelerator `wirebeat._speedups` (beat/_speedups.c).

Everything else is declared in pyproject.toml. `optional=True`: on a machine
without a C compiler or Python headers the build of the extension fails
quietly and wirebeat installs as pure Python (the same documents, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("wirebeat._speedups", ["beat/_speedups.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c99", "-Wall"]),
                   Extension("wirebeat._flowcore", ["beat/_flowcore.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c99", "-Wall"])])

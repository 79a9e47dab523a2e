"""Thin DVC stage scripts: read a params group, call `pipeline`, write the declared outputs."""
import os

# OpenMP's worker threads spin between parallel regions by default. On a small shared machine (CI: 2 cores)
# two stages or a test run beside a stage then fight for the cores and a 12-s training takes minutes
# (measured: 170 s vs 12 s per model under a parallel test run). PASSIVE makes idle workers sleep; it must be
# set before torch loads libgomp, hence here, the first module of every `python -m stages.<name>`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

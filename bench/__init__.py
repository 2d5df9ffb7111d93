"""Benchmarks of the mesh against plain baselines: `python -m bench`.

Each figure module starts what it measures (etcd, service processes, the
front) on loopback, repeats its measurement a few times and returns a
`Figure` with one value per run. `bench.report` turns the figures into
docs/benchmarks.md.
"""

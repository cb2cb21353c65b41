"""Speed benchmarks of gan-study (not part of the ``gan`` package; they may import ``study``).

``python -m benchmarks.throughput`` is the one entry point; see docs/performance.md.
"""

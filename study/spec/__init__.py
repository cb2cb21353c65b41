"""study.spec: A study spec: its YAML read and checked, the search space, the claims and their quantities,
the enqueued configurations, the size limits of this machine and the sampler the spec asks for.
Everything a spec means is decided here, before a trial runs.

Its modules are its public API (imported on use, so the CLI starts without torch).
"""

__all__ = ["claims", "enqueue", "limits", "quantities", "samplers", "space", "spec"]

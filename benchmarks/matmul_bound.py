"""The matmul-only ceiling: the step's own matrix products, replayed alone.

One step of ``gan.train`` is run under a dispatch mode that records every ``aten.mm`` /
``aten.addmm`` / convolution call with its shapes, strides and dtype (transposed operands as
autograd passes them). Replaying just those calls on random tensors, back to back, times the
matmul work of a step with nothing else in the way: no element-wise ops, no optimizer, no
Python. Images per second at that rate is the most any loop can reach with this BLAS at these
shapes; as a percentage of the large-GEMM roofline it shows how much of the gap to 100 % is
the small, skinny products themselves (K = 100, N = 1, ...) rather than loop overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.convolution.default,
    torch.ops.aten.convolution_backward.default,
}


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS:
            spec = [(tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            self.calls.append((func, spec, dict(kwargs)))
        return func(*args, **kwargs)


def record(fn: Callable[[], object]) -> list[tuple]:
    """The matmul calls ``fn()`` makes."""
    with _Recorder() as rec:
        fn()
    return rec.calls


def _materialise(calls: list[tuple]) -> list[tuple]:
    out = []
    for func, spec, kwargs in calls:
        args = []
        for a in spec:
            if isinstance(a, tuple) and len(a) == 3 and isinstance(a[2], torch.dtype):
                shape, stride, dtype = a
                storage = sum((s - 1) * st for s, st in zip(shape, stride)) + 1
                args.append(torch.randn(storage, dtype=dtype).as_strided(shape, stride))
            else:
                args.append(a)
        out.append((func, args, kwargs))
    return out


def replay_seconds(calls: list[tuple], reps: int = 20) -> float:
    """Best time of one pass over ``calls`` (each on fresh random operands of its layout)."""
    ready = _materialise(calls)
    for func, args, kwargs in ready:  # warm-up
        func(*args, **kwargs)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for func, args, kwargs in ready:
            func(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best

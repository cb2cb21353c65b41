"""Matmul FLOPs of one training iteration, counted from the layer shapes, per real image.

Every Linear, Conv2d and ConvTranspose2d is a matrix product of M multiply-adds per image
(Linear: in x out; Conv2d: out_h x out_w x out_c x in_c x k^2; ConvTranspose2d:
in_h x in_w x in_c x out_c x k^2), i.e. 2M FLOPs forward. Its backward is two products of the
same size: the input gradient dX (2M) and the weight gradient dW (2M). One iteration of
``gan.train`` with d_steps = g_steps = 1 and batch B needs, per batch image:

    D step:  G forward                        2 M_G
             D forward on real + fake         2 * 2 M_D
             D backward dW on real + fake     2 * 2 M_D
             D backward dX, all but layer 1   2 * 2 (M_D - M_D1)   (D's input needs no grad)
    G step:  D forward on the same fakes      2 M_D                (D has new weights)
             D backward dX, all layers        2 M_D                (D's weights get no grads)
             G backward dW                    2 M_G
             G backward dX, all but layer 1   2 (M_G - M_G1)       (z needs no grad)

    FLOPs/image = 6 M_G - 2 M_G1 + 14 M_D - 4 M_D1

and a G forward more per extra G step, a D step more per extra D step; the total is divided
by the d_steps * B real images an iteration consumes. Element-wise work (activations, dropout,
losses, the optimizer) is memory-bound and not counted: the roofline is the matmul work.
This is the minimum: a loop that also computes D's weight gradients in the G step (as the
classic loop does) or the first layers' input gradients does more work, not more useful work.
The count is checked against ``torch.utils.flop_counter`` on one step of ``gan.train``.
"""

from __future__ import annotations

from gan import TrainConfig

IMAGE_PIXELS = 28 * 28


def layer_macs(cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """Multiply-adds per image of each weight layer of G and of D, input side first."""
    if cfg.spectral_norm != "none" or cfg.self_attention != "none":
        raise ValueError("the FLOP count covers the plain models (no spectral norm, no attention)")
    if cfg.arch == "mlp":
        g_dims = [cfg.latent_dim, *cfg.g_hidden, IMAGE_PIXELS]
        d_dims = [IMAGE_PIXELS, *cfg.d_hidden, 1]
        pairs = lambda dims: [a * b for a, b in zip(dims, dims[1:])]  # noqa: E731
        return pairs(g_dims), pairs(d_dims)
    c, half = cfg.g_channels, max(1, cfg.g_channels // 2)
    c1, c2 = cfg.d_channels
    g = [
        cfg.latent_dim * c * 7 * 7,  # Linear z -> c x 7 x 7
        7 * 7 * c * half * 4 * 4,  # ConvTranspose2d c -> c/2, k4 s2, on 7 x 7 inputs
        14 * 14 * half * 1 * 4 * 4,  # ConvTranspose2d c/2 -> 1, k4 s2, on 14 x 14 inputs
    ]
    d = [
        14 * 14 * c1 * 1 * 3 * 3,  # Conv2d 1 -> c1, k3 s2, 14 x 14 outputs
        7 * 7 * c2 * c1 * 3 * 3,  # Conv2d c1 -> c2, k3 s2, 7 x 7 outputs
        c2 * 7 * 7 * 1,  # Linear head
    ]
    return g, d


def train_flops_per_image(cfg: TrainConfig) -> float:
    """Matmul FLOPs of one iteration divided by the real images it consumes (see module doc)."""
    g, d = layer_macs(cfg)
    mg, md = sum(g), sum(d)
    d_step = 2 * mg + 2 * (2 * md) + 2 * (2 * md) + 2 * (2 * (md - d[0]))
    g_step = 2 * md + 2 * md + 2 * mg + 2 * (mg - g[0])
    extra_g_forward = 2 * mg  # G steps after the first draw new fakes
    per_iteration = cfg.d_steps * d_step + cfg.g_steps * g_step + (cfg.g_steps - 1) * extra_g_forward
    return per_iteration / cfg.d_steps


def counted_flops_per_image(fn, images: int) -> float:
    """FLOPs that ``torch.utils.flop_counter`` sees while ``fn()`` runs, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / images

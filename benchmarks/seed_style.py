"""The baseline: the training loop of the classic MNIST GAN reports and pytorch/examples.

Written the way those loops are written, on purpose: torchvision's MNIST dataset with
``ToTensor`` + ``Normalize((0.5,), (0.5,))`` per sample, a shuffling ``DataLoader`` with
``num_workers=0`` (as the reports ran it), models that end in ``Sigmoid`` with ``nn.BCELoss``,
label tensors built every step, D(real) and D(fake) as two passes, the default (per-tensor)
Adam, D left trainable during G's update, and the losses and D's outputs read with ``.item()``
every step for the progress log. The layer shapes are exactly those of ``gan.models`` for the
same :class:`gan.TrainConfig`, so both loops do the same model arithmetic.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gan import TrainConfig


def mlp_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    g_layers: list[nn.Module] = []
    width = cfg.latent_dim
    for hidden in cfg.g_hidden:
        g_layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    g_layers += [nn.Linear(width, 28 * 28), nn.Tanh()]
    d_layers: list[nn.Module] = []
    width = 28 * 28
    for hidden in cfg.d_hidden:
        d_layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2), nn.Dropout(cfg.d_dropout)]
        width = hidden
    d_layers += [nn.Linear(width, 1), nn.Sigmoid()]
    return nn.Sequential(*g_layers), nn.Sequential(*d_layers)


def dcgan_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    c, half = cfg.g_channels, cfg.g_channels // 2
    c1, c2 = cfg.d_channels
    generator = nn.Sequential(
        nn.Linear(cfg.latent_dim, c * 7 * 7),
        nn.LeakyReLU(0.2),
        nn.Unflatten(1, (c, 7, 7)),
        nn.ConvTranspose2d(c, half, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(half, 1, 4, 2, 1),
        nn.Tanh(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(1, c1, 3, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Dropout(cfg.d_dropout),
        nn.Conv2d(c1, c2, 3, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Dropout(cfg.d_dropout),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, 1),
        nn.Sigmoid(),
    )
    return generator, discriminator


def mnist_dataset(root: str):
    """torchvision's MNIST with the per-sample transforms of the reports."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    return datasets.MNIST(root, train=True, download=False, transform=transform)


def train_seed_style(cfg: TrainConfig, dataset, steps: int) -> tuple[int, float]:
    """``steps`` iterations of the classic loop; returns (real images consumed, wall seconds).

    The clock covers what ``gan.train``'s does: building the models, optimizers and loader,
    and the loop (the dataset object is built by the caller, as MNIST is loaded for gan.train).
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    G, D = (mlp_models if cfg.arch == "mlp" else dcgan_models)(cfg)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    flat = cfg.arch == "mlp"
    g_losses, d_losses, log = [], [], []
    step = images = 0
    while step < steps:
        for real, _ in loader:
            b = real.size(0)
            if flat:
                real = real.view(b, -1)
            real_labels = torch.full((b, 1), 1.0)
            fake_labels = torch.full((b, 1), 0.0)

            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            D.zero_grad()
            output = D(real)
            loss_real = criterion(output, real_labels)
            loss_real.backward()
            d_x = output.mean().item()
            noise = torch.randn(b, cfg.latent_dim)
            fake = G(noise)
            output = D(fake.detach())
            loss_fake = criterion(output, fake_labels)
            loss_fake.backward()
            d_g_z1 = output.mean().item()
            loss_d = loss_real + loss_fake
            opt_d.step()

            # (2) Update G: maximize log(D(G(z)))
            G.zero_grad()
            output = D(fake)
            loss_g = criterion(output, real_labels)
            loss_g.backward()
            d_g_z2 = output.mean().item()
            opt_g.step()

            d_losses.append(loss_d.item())
            g_losses.append(loss_g.item())
            log.append((d_x, d_g_z1, d_g_z2))
            images += b
            step += 1
            if step == steps:
                break
    return images, time.perf_counter() - start

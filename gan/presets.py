"""Named presets of ``TrainConfig`` knobs: the models of the classic reports, rebuilt.

``TrainConfig(preset=NAME)`` takes each field it is not given from ``PRESETS[NAME]``, else from
the field's own default; the fields given explicitly win, so a study spec may write
``fixed: {preset: classic-mlp, beta1: 0.5}``. Each value cites its source: a report in
shared/reference/seeds/ (beside the checkout) and its section, paraphrased. docs/presets.md
lists what the presets deliberately do not copy.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Every field at its own default: the model this project trained before the presets.
    "default": {},
    # Report 004 (004_c945ab58b3f0d2e2.txt, section "Implementation and code", its PyTorch code).
    # Not copied: its train_gan computes D's "fake" loss on the real batch a second time (and the
    # caller passes the real and fake labels in swapped order), so its D never sees a generated
    # image. These networks train here with the standard non-saturating GAN loss instead.
    "classic-mlp": {
        "arch": "mlp",
        "latent_dim": 100,  # the Generator's first Linear takes 100 noise values
        "noise": "uniform",  # train_gan draws the noise with torch.rand: uniform on [0, 1)
        "g_hidden": (256, 512),  # Generator layers 1-3: 100 -> 256 -> 512 -> 784
        "g_slope": 0.3,  # every Generator layer ends in LeakyReLU(0.3)
        "g_output_leaky": True,  # layer 3 (512 -> 784) has that LeakyReLU too, before layer 4's tanh
        "g_output": "tanh",
        "data_scaling": "standardized",  # the loader's transform: ToTensor, Normalize(0.1307, 0.3081)
        "d_hidden": (256, 100),  # Discrimnator layers 1-3: 784 -> 256 -> 100 -> 1
        "d_slope": 0.2,  # each Discrimnator layer has LeakyReLU(0.2)
        "d_dropout": 0.2,
        "d_dropout_layers": (2, 3),  # layer 1 has no dropout; layers 2 and 3 end in Dropout(0.2)
        "d_output_leaky": True,  # layer 3 is Linear(100, 1), LeakyReLU, Dropout; layer 4 the sigmoid
        "loss": "ns",  # BCELoss on the sigmoid, G's fakes scored against the "real" labels
        "optimizer": "adam",  # Adam(lr=0.0002) for both networks, with PyTorch's default betas
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "beta1": 0.9,
        "beta2": 0.999,
        "batch_size": 100,  # batch_size = 100 images from the loader, each D update
        "batch_counts": "real",
    },
    # Report 002 (002_3b7d42bbfa528849.txt), a Keras DCGAN.
    "classic-dcgan": {
        "arch": "dcgan",
        "latent_dim": 100,  # "My Generator model", a): a latent vector of 100 Gaussian numbers
        "noise": "normal",
        "g_channels": 128,  # Layer1: a dense layer reshaped to 128 maps of 14x14
        "g_stem": 14,  # Layer2: one stride-2 transposed conv to 28x28; Layer3: a 7x7 conv, one filter
        "g_output": "sigmoid",  # Layer3's sigmoid, and b): pixels divided by 255 lie in [0, 1]
        "data_scaling": "unit",
        "g_slope": 0.2,  # the hyperparameter list, a): LeakyReLU with slope 0.2, not ReLU
        "d_slope": 0.2,
        "d_channels": (64, 128),  # "My Discriminator model", layers 1-2: 3x3 stride-2 convs, 64 and 128 filters
        "d_dropout": 0.4,  # each conv followed by dropout 0.4; then flatten and a dense sigmoid
        "loss": "ns",  # binary cross-entropy; "GAN MODEL" labels G's samples real when G trains
        "optimizer": "adam",  # the hyperparameter list, c) and d): Adam, lr 0.0002, beta1 0.5
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,  # not stated: Keras' default
        "batch_size": 256,  # "TRAINING THE MODEL": a batch of 256 is 128 real plus 128 generated
        "batch_counts": "total",
    },
}

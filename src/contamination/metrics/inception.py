"""The Inception-V3 of FID: the TensorFlow graph "inception-2015-12-05" as a PyTorch module.

FID (Heusel et al., 2017) and the precision/recall of the paper (Kynkänniemi et al., 2019, via
NVlabs' stylegan2-ada-pytorch metrics) use the 2048-d pool features of this network. It is
Inception-V3 with the quirks of the TF graph, as pytorch-fid reproduces them:

- every average pool inside a block ignores the zero padding (TF's ``count_include_pad=False``);
- the last block (Mixed_7c) pools its pool branch with a max pool, not an average pool;
- the classifier has 1008 outputs;
- the input is bilinearly resized (no antialiasing) to ``resolution`` (299 for the real
  network) and scaled from [0, 1] to [-1, 1].

Parameter names follow torchvision's Inception3 (``Mixed_5b.branch1x1.conv.weight`` ...), the
layout of pytorch-fid's weights file ``pt_inception-2015-12-05-6726825d.pth``; ``load`` reads
that file (config ``models.inception``) or a random network saved by ``save`` and checks every
tensor name and shape. ``build_random`` makes the smoke run's stand-in: random weights with
BatchNorm statistics re-estimated on random images (a random network keeps running statistics
0/1, which in eval mode gives features of size 1e10 or 1e-8).

Unlike most modules of the package this one imports torch at the top: it defines nn.Modules and
only commands that already run torch import it.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from contamination.errors import ConfigError
from contamination.io import atomic_path

FEATURE_DIM = 2048
NUM_LOGITS = 1008
RESOLUTION = 299  # the real network's input size
MIN_RESOLUTION = 75  # smaller inputs vanish before the last block
BATCHNORM_EPS = 0.001


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm, ReLU (torchvision's BasicConv2d)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BATCHNORM_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def average_pool_without_padding(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_same(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class MixedA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(average_pool_without_padding(x)),
        ], dim=1)


class ReductionA(nn.Module):
    """35x35 -> 17x17 (Mixed_6a)."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class MixedC(nn.Module):
    """17x17 block (Mixed_6b-e) with factorised 7x7 convolutions of ``channels_7x7`` channels."""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(average_pool_without_padding(x)),
        ], dim=1)


class ReductionB(nn.Module):
    """17x17 -> 8x8 (Mixed_7a)."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        seven = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            seven,
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class MixedE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with split 1x3/3x1 outputs; ``pool`` is the TF graph's
    pool of the pool branch (average in Mixed_7b, max in Mixed_7c)."""

    def __init__(self, in_channels, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """``forward(images)``: float images (N, 3, H, W) in [0, 1] -> pool features (N, 2048)."""

    def __init__(self, resolution: int = RESOLUTION):
        super().__init__()
        if resolution < MIN_RESOLUTION:
            raise ValueError(f"Inception-V3 needs inputs of at least {MIN_RESOLUTION} px, not {resolution}")
        self.resolution = resolution
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_features=32)
        self.Mixed_5c = MixedA(256, pool_features=64)
        self.Mixed_5d = MixedA(288, pool_features=64)
        self.Mixed_6a = ReductionA(288)
        self.Mixed_6b = MixedC(768, channels_7x7=128)
        self.Mixed_6c = MixedC(768, channels_7x7=160)
        self.Mixed_6d = MixedC(768, channels_7x7=160)
        self.Mixed_6e = MixedC(768, channels_7x7=192)
        self.Mixed_7a = ReductionB(768)
        self.Mixed_7b = MixedE(1280, pool=average_pool_without_padding)
        self.Mixed_7c = MixedE(2048, pool=max_pool_same)
        # Unused for features; kept so the weights file loads with every tensor accounted for.
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS)

    def forward(self, images):
        x = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ---- loading, saving, the random stand-in ---------------------------------------------------


def load(path, resolution: int = RESOLUTION, key: str = "models.inception") -> FIDInceptionV3:
    """The network with the weights at ``path``, in eval mode. Every tensor of the architecture
    must be in the file with its shape (BatchNorm's ``num_batches_tracked`` counters may be
    absent, as in pytorch-fid's file); a ConfigError naming ``key`` says what does not match."""
    if not Path(path).is_file():
        raise ConfigError(f"{key}: Inception weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise ConfigError(f"{key}: '{path}' is not a readable PyTorch weights file ({error})") from error
    network = FIDInceptionV3(resolution)
    expected = network.state_dict()
    missing = [name for name in expected if name not in state and not name.endswith("num_batches_tracked")]
    unexpected = [name for name in state if name not in expected]
    misshapen = [name for name in expected if name in state and tuple(state[name].shape) != tuple(expected[name].shape)]
    if missing or unexpected or misshapen:
        raise ConfigError(
            f"{key}: '{path}' is not the FID Inception-V3 (pt_inception-2015-12-05): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {misshapen[:5]}"
        )
    network.load_state_dict(state, strict=False)
    return network.eval()


def save(network: FIDInceptionV3, path) -> None:
    with atomic_path(path) as temporary:
        # Through a handle: given a path, torch.save names the archive's folder after the
        # (random) temporary file name, and the same weights would give different bytes.
        with open(temporary, "wb") as handle:
            torch.save(network.state_dict(), handle)


def calibration_images(seed: int, count: int, resolution: int):
    """Random RGB images in [0, 1] with structure at every scale: uniform noise on a grid of
    4, 8, 16, ... cells (cycling, up to ``resolution``), bilinearly enlarged. Calibrated on both
    smooth and fine-grained inputs, the random network keeps features of order one for photos
    and for the noisy samples of a barely trained model alike."""
    grids = [4]
    while grids[-1] * 2 <= resolution:
        grids.append(grids[-1] * 2)
    generator = torch.Generator().manual_seed(seed)
    images = [
        F.interpolate(torch.rand(1, 3, grid, grid, generator=generator), size=(resolution, resolution),
                      mode="bilinear", align_corners=False)
        for grid in (grids[number % len(grids)] for number in range(count))
    ]
    return torch.cat(images)


@torch.no_grad()
def reestimate_batchnorm(network: nn.Module, batches) -> None:
    """Replace every BatchNorm's running mean/variance by their average over ``batches``
    (cumulative average: momentum None), with the network in train mode so each layer sees
    normalised inputs; then back to eval mode."""
    layers = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    network.train()
    for batch in batches:
        network(batch)
    for layer in layers:
        layer.momentum = 0.1  # PyTorch's default; not part of the saved state
    network.eval()


def build_random(seed: int, resolution: int, calibration_batches: int = 4, batch_size: int = 16) -> FIDInceptionV3:
    """A random-weight FID Inception with usable BatchNorm statistics; the same seed gives the
    same tensors (built on the CPU)."""
    torch.manual_seed(seed)
    network = FIDInceptionV3(resolution)
    images = calibration_images(seed, calibration_batches * batch_size, resolution)
    reestimate_batchnorm(network, images.split(batch_size))
    return network

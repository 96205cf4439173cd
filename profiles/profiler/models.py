"""The models the profiler benchmarks, written in ``torch.nn`` (nothing is downloaded).

Architectures follow the torchvision definitions, so parameter counts and FLOPs match the
published models:

- ``resnet18`` / ``resnet50`` — He et al., "Deep Residual Learning for Image Recognition" (2016),
  torchvision's ``ResNet`` with ``BasicBlock`` [2, 2, 2, 2] / ``Bottleneck`` [3, 4, 6, 3]
  (ResNet v1.5: the stride sits on the 3×3 convolution of the bottleneck).
  11,689,512 and 25,557,032 parameters.
- ``mobilenet_v2`` — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
  (2018), torchvision's ``MobileNetV2`` (width 1.0, expansion 6, ReLU6, dropout 0.2).
  3,504,872 parameters.
- ``tiny_cnn`` — a four-layer CNN on 3×64×64 inputs (about a millisecond on one core), for tests.

Weights are random, drawn from a seeded generator inside ``torch.random.fork_rng`` so that
building a model neither depends on nor disturbs the caller's global torch RNG. Latency does not
depend on the weight values (dense kernels, no sparsity), so random weights time the same as
trained ones; only ``accuracy`` is unknown, and the profile leaves it out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from qosched.profiles.profiler import require_torch

require_torch()  # one clear error when torch is missing, before the imports below fail obscurely

import torch  # noqa: E402
from torch import nn  # noqa: E402

NUM_CLASSES = 1000


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU6: the ``Conv2dNormActivation`` block of MobileNet v2."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (strided, v1.5) → 1×1 expand ×4, with a shortcut; ResNet-50/101/152."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: 7×7/2 stem, max-pool, four stages (64, 128, 256, 512 wide), avg-pool, fc."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        stages: list[nn.Sequential] = []
        for i, (width, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, width, stride))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, NUM_CLASSES)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNet v2 block: 1×1 expand (×t) → 3×3 depthwise → 1×1 linear projection (+ residual)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(in_ch, hidden, 1, 1))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


#: MobileNet v2 body (torchvision ``inverted_residual_setting``): expansion t, channels c, repeats n,
#: stride s.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 at width 1.0: 32-channel stem, 17 inverted residuals, 1280-d head."""

    def __init__(self) -> None:
        super().__init__()
        in_ch, last_ch = 32, 1280
        features: list[nn.Module] = [_conv_bn_relu(3, in_ch, 3, 2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(_conv_bn_relu(in_ch, last_ch, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(last_ch, NUM_CLASSES))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class TinyCNN(nn.Module):
    """Four 3×3 convolutions and a linear head on 3×64×64: a real conv net that runs in about 1 ms."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        widths = (3, 32, 64, 128, 128)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.fc(torch.flatten(x, 1))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model the profiler knows: how to build it and the shape of one input image (C, H, W)."""

    name: str
    factory: Callable[[], nn.Module]
    input_chw: tuple[int, int, int]
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "resnet18",
            lambda: ResNet(BasicBlock, (2, 2, 2, 2)),
            (3, 224, 224),
            "ResNet-18 (torchvision architecture), 11.7 M parameters",
        ),
        ModelSpec(
            "resnet50",
            lambda: ResNet(Bottleneck, (3, 4, 6, 3)),
            (3, 224, 224),
            "ResNet-50 v1.5 (torchvision architecture), 25.6 M parameters",
        ),
        ModelSpec(
            "mobilenet_v2",
            MobileNetV2,
            (3, 224, 224),
            "MobileNet v2 1.0 (torchvision architecture), 3.5 M parameters",
        ),
        ModelSpec("tiny_cnn", TinyCNN, (3, 64, 64), "four-layer CNN on 64×64 inputs, for tests"),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the profiler knows: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, *, seed: int = 0) -> nn.Module:
    """Build model ``name`` with random weights drawn from ``seed``, in eval mode.

    Parameters
    ----------
    name
        A key of :data:`MODELS` (``resnet18``, ``resnet50``, ``mobilenet_v2``, ``tiny_cnn``).
    seed
        Seed of the weight initialisation; the caller's global torch RNG is left untouched.

    Raises
    ------
    KeyError
        ``name`` is not a known model (the message lists the known ones).
    """
    spec = model_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.factory()
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (the figure papers and torchvision quote)."""
    return sum(p.numel() for p in model.parameters())


def example_input(name: str, batch_size: int = 1, *, seed: int = 0) -> torch.Tensor:
    """A seeded random input batch of shape (batch_size, C, H, W) for model ``name``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, *model_spec(name).input_chw), generator=gen)

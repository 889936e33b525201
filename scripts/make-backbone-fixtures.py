#!/usr/bin/env python3
"""Write the image backbones' fixtures: torchvision's ResNet-18/34/50 and MobileNetV3 (large,
small), randomly initialised (random batch-norm statistics too, so that eval-mode batch norm is
checked), their state_dicts as safetensors, and their outputs on fixed inputs. The image family's
tests load each file into Vitrine's network and compare the logits to 1e-4, with no Python in CI.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch torchvision
    .venv-bench/bin/python scripts/make-backbone-fixtures.py crates/vitrine-image/fixtures/backbones

By default the networks are torchvision's own blocks at reduced width (ResNets with 4 channels in
the first stage instead of 64, MobileNetV3 at width_mult 0.25) so the committed files stay small.
With --full-width they are torchvision's constructors as they are (resnet18() ...: 47 MB for
ResNet-18 alone); check Vitrine against those with

    .venv-bench/bin/python scripts/make-backbone-fixtures.py --full-width /tmp/backbones
    VITRINE_BACKBONE_FIXTURES=/tmp/backbones cargo test --release --workspace backbone

Writes DIR/<arch>.safetensors (the state_dict, torchvision's names; for two of them also
DIR/<arch>.pth, as torch.save writes it), DIR/<arch>-io.safetensors
(`input` [2, 3, 64, 64], already ImageNet-normalised, and `logits` [2, 10] in eval mode) and
DIR/fixtures.json (each architecture's width, for Vitrine's config).
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import mobilenetv3, resnet

CLASSES = 10
NARROW_RESNET = 4
NARROW_MOBILENET = 0.25


class NarrowResNet(resnet.ResNet):
    """torchvision's ResNet with `width` channels in the first stage instead of 64: the same
    blocks (`_make_layer`), the same parameter names."""

    def __init__(self, block, layers, width, num_classes):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)


RESNETS = {
    "resnet18": (resnet.BasicBlock, [2, 2, 2, 2], resnet.resnet18),
    "resnet34": (resnet.BasicBlock, [3, 4, 6, 3], resnet.resnet34),
    "resnet50": (resnet.Bottleneck, [3, 4, 6, 3], resnet.resnet50),
}
# Also written as PyTorch's own `.pth` (a pickled state_dict), the format torchvision's hub serves.
PICKLED = ["resnet18", "mobilenet_v3_small"]
MOBILENETS = {"mobilenet_v3_large": mobilenetv3.mobilenet_v3_large, "mobilenet_v3_small": mobilenetv3.mobilenet_v3_small}


def build(arch: str, full_width: bool):
    """The network and the width Vitrine's config needs to rebuild it."""
    if arch in RESNETS:
        block, layers, constructor = RESNETS[arch]
        if full_width:
            return constructor(num_classes=CLASSES), {"width": 64}
        return NarrowResNet(block, layers, NARROW_RESNET, CLASSES), {"width": NARROW_RESNET}
    mult = 1.0 if full_width else NARROW_MOBILENET
    setting, last_channel = mobilenetv3._mobilenet_v3_conf(arch, width_mult=mult)
    return mobilenetv3.MobileNetV3(setting, last_channel, num_classes=CLASSES), {"width_mult": mult}


def randomise_batch_norm(model: nn.Module, generator: torch.Generator):
    """Random batch-norm statistics and affine parameters, and linear layers at 1/sqrt(fan-in)
    instead of torchvision's N(0, 0.01) for MobileNet, so that logits are of order 1 and a
    1e-4 comparison means something."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=generator) / m.in_features**0.5
            m.bias.data = 0.1 * torch.randn(m.out_features, generator=generator)
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(n, generator=generator)
            m.bias.data = 0.1 * torch.randn(n, generator=generator)
            m.running_mean = 0.1 * torch.randn(n, generator=generator)
            m.running_var = 0.5 + torch.rand(n, generator=generator)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--full-width", action="store_true", help="torchvision's networks at their real width")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    widths = {}
    for arch in [*RESNETS, *MOBILENETS]:
        model, width = build(arch, args.full_width)
        randomise_batch_norm(model, generator)
        model.eval()
        x = torch.randn(2, 3, 64, 64, generator=generator)
        with torch.no_grad():
            logits = model(x)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, args.out / f"{arch}.safetensors")
        if arch in PICKLED:
            torch.save(model.state_dict(), args.out / f"{arch}.pth")
        save_file({"input": x, "logits": logits.contiguous()}, args.out / f"{arch}-io.safetensors")
        widths[arch] = {**width, "classes": CLASSES, "parameters": sum(p.numel() for p in model.parameters())}
        print(f"{arch}: {widths[arch]['parameters']:,} parameters, logits {tuple(logits.shape)}")
    (args.out / "fixtures.json").write_text(json.dumps(widths, indent=2) + "\n")


if __name__ == "__main__":
    main()

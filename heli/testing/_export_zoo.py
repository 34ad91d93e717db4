"""Define and export the model-zoo networks to ONNX:
``python -m heli.testing._export_zoo NAME OUT``.

Run in a child process by :mod:`heli.testing._zoo`, so torch never loads into
the caller.  The architectures are the standard ones (ResNet-18, MobileNetV2,
BERT-base) written out here, because torchvision and transformers' model zoo
are not dependencies; the weights are random but seeded.

The CNNs' BatchNorm running statistics are calibrated on random images in
training mode and their affine parameters perturbed, so the exported model has
realistic activation scales *and* non-trivial statistics for BN folding.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import nn

OPSET = 17
SEED = 0


# -- ResNet-18 (He et al. 2016; torchvision's layout) --------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- MobileNetV2 (Sandler et al. 2018; width 1.0, torchvision's layout) ---------

def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion t, channels c, repeats n, first stride s) from the paper's Table 2.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def init_cnn(model: nn.Module) -> nn.Module:
    """torchvision's initialisation, then BatchNorm statistics calibrated on
    random images and perturbed affine parameters (so folding them matters)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.normal_(m.bias, 0, 0.01)
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batches
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(4, 3, 224, 224))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


# -- BERT-base encoder (Devlin et al. 2019; HF BertModel's layout) --------------

class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.gelu = nn.GELU()  # the exact (erf) form, as BERT uses
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        return x.view(b, s, self.heads, h // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5) + mask_bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        x = self.attn_norm(x + self.attn_out(context))
        return self.ffn_norm(x + self.ffn_out(self.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    def __init__(self, vocab: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                 intermediate: int = 3072, max_positions: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, heads, intermediate, eps) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        x = self.embed_norm(x)
        # Padded keys get the most negative float added before the softmax (as HF does).
        mask = attention_mask[:, None, None, :].to(x.dtype)
        mask_bias = (1.0 - mask) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


def init_bert(model: nn.Module) -> nn.Module:
    """BERT's initialisation (N(0, 0.02)) with LayerNorm parameters perturbed."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0, 0.02)
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.bias, 0, 0.02)
        elif isinstance(m, nn.LayerNorm):
            with torch.no_grad():
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0, 0.05)
    return model.eval()


# -- export ---------------------------------------------------------------------

def _export_cnn(model: nn.Module, out_path: str) -> None:
    # training=PRESERVE exports the eval-mode model without the exporter's
    # Conv+BatchNorm fusion (done only for TrainingMode.EVAL), so the ONNX
    # file keeps its BatchNormalization nodes for the compiler to fold.
    torch.onnx.export(
        model, (torch.randn(1, 3, 224, 224),), out_path,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
    )


def export_resnet18(out_path: str) -> None:
    torch.manual_seed(SEED)
    _export_cnn(init_cnn(ResNet18()), out_path)


def export_mobilenetv2(out_path: str) -> None:
    torch.manual_seed(SEED + 1)
    _export_cnn(init_cnn(MobileNetV2()), out_path)


def export_bert_base(out_path: str) -> None:
    torch.manual_seed(SEED + 2)
    model = init_bert(BertEncoder())
    ids = torch.randint(1000, 30000, (2, 128))
    mask = torch.ones_like(ids)
    mask[1, 100:] = 0
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(
        model, (ids, mask), out_path,
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=OPSET, dynamo=False,
    )


EXPORTERS = {
    "resnet18": export_resnet18,
    "mobilenetv2": export_mobilenetv2,
    "bert_base": export_bert_base,
}


def export(name: str, out_path: str) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        EXPORTERS[name](out_path)


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2])

"""The PyTorch reference: the same model and training step as fer_jax, written the way a PyTorch
user would write it (NCHW or channels_last, torch.optim.SGD).

Same backbone (ResNet-18/34/50, width multiplier, imagenet / small / small_strided stem,
BatchNorm with momentum 0.1 = Flax's 0.9, eps 1e-5, zero-initialised last BN scale per block),
one backbone shared by the five branches (folded into the batch), mu = sigmoid(W2 relu(W1 F)),
weighted-sum fusion, a zero-initialised classifier, softmax cross-entropy plus the
eyes-over-occluded hinge, SGD with momentum and weight decay on kernels only.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _bn(c: int, zero: bool = False) -> nn.BatchNorm2d:
  bn = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
  if zero:
    nn.init.zeros_(bn.weight)
  return bn


class Basic(nn.Module):
  expansion = 1

  def __init__(self, cin: int, c: int, stride: int):
    super().__init__()
    self.c1, self.b1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), _bn(c)
    self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), _bn(c, zero=True)
    self.proj = None
    if stride != 1 or cin != c:
      self.proj = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), _bn(c))

  def forward(self, x):
    y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
    return F.relu(y + (x if self.proj is None else self.proj(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, c: int, stride: int):
    super().__init__()
    self.c1, self.b1 = nn.Conv2d(cin, c, 1, bias=False), _bn(c)
    self.c2, self.b2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), _bn(c)
    self.c3, self.b3 = nn.Conv2d(c, 4 * c, 1, bias=False), _bn(4 * c, zero=True)
    self.proj = None
    if stride != 1 or cin != 4 * c:
      self.proj = nn.Sequential(nn.Conv2d(cin, 4 * c, 1, stride, bias=False), _bn(4 * c))

  def forward(self, x):
    y = F.relu(self.b1(self.c1(x)))
    y = F.relu(self.b2(self.c2(y)))
    y = self.b3(self.c3(y))
    return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet(nn.Module):
  def __init__(self, depth: int = 18, width: float = 1.0, stem: str = "imagenet",
               channels: int = 1):
    super().__init__()
    w = lambda c: max(int(round(c * width)), 1)
    if stem == "imagenet":
      self.stem = nn.Sequential(nn.Conv2d(channels, w(64), 7, 2, 3, bias=False), _bn(w(64)),
                                nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    else:
      stride = 2 if stem == "small_strided" else 1
      self.stem = nn.Sequential(nn.Conv2d(channels, w(64), 3, stride, 1, bias=False),
                                _bn(w(64)), nn.ReLU())
    block = Bottleneck if depth >= 50 else Basic
    layers, cin = [], w(64)
    for i, n in enumerate(STAGES[depth]):
      for j in range(n):
        c = w(64 * 2**i)
        layers.append(block(cin, c, 2 if i > 0 and j == 0 else 1))
        cin = c * block.expansion
    self.layers = nn.Sequential(*layers)
    self.dim = cin

  def forward(self, x):
    return self.layers(self.stem(x)).mean((2, 3))


class BranchAttentionNet(nn.Module):
  def __init__(self, depth=18, width=1.0, stem="imagenet", hidden=128, classes=8):
    super().__init__()
    self.backbone = ResNet(depth, width, stem)
    d = self.backbone.dim
    self.w1, self.w2 = nn.Linear(d, hidden), nn.Linear(hidden, 1)
    self.classifier = nn.Linear(d, classes)
    nn.init.zeros_(self.classifier.weight)
    nn.init.zeros_(self.classifier.bias)

  def forward(self, x):  # x: [B, nb, C, S, S]
    b, nb = x.shape[:2]
    f = self.backbone(x.flatten(0, 1)).view(b, nb, -1)
    mu = torch.sigmoid(self.w2(F.relu(self.w1(f))))[..., 0]
    return self.classifier((mu[..., None] * f).sum(1)), mu


def make_step(model: BranchAttentionNet, lr=0.01, momentum=0.9, weight_decay=5e-4,
              margin=0.03, hi=1, lo=4, channels_last=False):
  """One SGD step on (crops [B, nb, S, S, 1] as NHWC numpy/tensor, targets [B, 8])."""
  decay = [p for p in model.parameters() if p.ndim > 1]
  rest = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.SGD([dict(params=decay, weight_decay=weight_decay),
                         dict(params=rest, weight_decay=0.0)], lr=lr, momentum=momentum)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)

  def step(x: torch.Tensor, targets: torch.Tensor) -> float:
    b, nb = x.shape[:2]
    x = x.permute(0, 1, 4, 2, 3)  # NHWC -> NCHW per branch
    if channels_last:
      x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(
          b, nb, *x.shape[2:])
    else:
      x = x.contiguous()
    logits, mu = model(x)
    ce = -(targets * F.log_softmax(logits, -1)).sum(-1).mean()
    loss = ce + F.relu(margin - (mu[:, hi] - mu[:, lo])).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().item()

  return step

"""The backbone registry: `config.model.backbone` names an entry, which builds the backbone
module (a `functools.partial` of a flax Module class) from `config.model`.

A new backbone is one file with its Module (taking `conv`, `bn_axis_name`, `dtype` and
`__call__(x, train)`, returning pooled features [N, D]) plus one entry here.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from fer_jax.models import resnet
from fer_jax.models import vgg


def _resnet(m: Mapping[str, Any], conv, pool, dtype) -> functools.partial:
  return functools.partial(resnet.ResNet, depth=m["depth"], width=m["width"], stem=m["stem"],
                           conv=conv, pool=pool, bn_momentum=m["bn_momentum"], dtype=dtype)


def _vgg13(m: Mapping[str, Any], conv, pool, dtype) -> functools.partial:
  del pool  # its 2x2 pools are plain
  return functools.partial(vgg.VGG13, width=m["width"], conv=conv,
                           bn_momentum=m["bn_momentum"], dtype=dtype)


# name -> (builder(model_cfg, conv, pool, dtype), feature length D(model_cfg))
BACKBONES: dict[str, tuple[Callable, Callable]] = {
    "resnet": (_resnet, lambda m: resnet.feature_dim(m["depth"], m["width"])),
    "vgg13": (_vgg13, lambda m: vgg.feature_dim(m["width"])),
}

# Backbones that end in global average pooling: any input size gives the same D, so
# `config.model.part_size` can run them on smaller part crops (VGG13 flattens its map).
POOLED = ("resnet",)


def _entry(model_cfg: Mapping[str, Any]) -> tuple[Callable, Callable]:
  name = model_cfg["backbone"]
  if name not in BACKBONES:
    raise ValueError(f"config.model.backbone must be one of {sorted(BACKBONES)}, got {name!r}")
  return BACKBONES[name]


def backbone(model_cfg: Mapping[str, Any], *, conv, pool, dtype) -> functools.partial:
  """The backbone module `config.model` describes, with the given convolution and pool."""
  return _entry(model_cfg)[0](model_cfg, conv, pool, dtype)


def feature_dim(model_cfg: Mapping[str, Any]) -> int:
  return _entry(model_cfg)[1](model_cfg)

"""The networks: backbones (resnet, vgg) by name, the branch attention that fuses the five
branches, and the lowering choices that map them onto XLA."""

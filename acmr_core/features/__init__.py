"""Images -> backbone features: the timm ResNet-101 backbone, extraction to files, sharding over torchrun."""

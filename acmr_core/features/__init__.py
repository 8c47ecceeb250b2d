"""Images -> backbone features: the timm ResNet-101 feature extractor (backbone) and its weight sources
(weights), extraction to files (extract), sharding over torchrun (sharding, distributed)."""

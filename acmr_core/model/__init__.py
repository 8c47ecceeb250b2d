"""The ACMR method itself: configs and presets, the network, losses, the GZSL classifier, the predictor
(features -> calibrated scores) and the trained-model file format. Depends only on ``data``, ``runtime``."""

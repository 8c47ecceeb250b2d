"""Fitting ACMR and the honest GZSL protocol: training loops, validation-based selection, metrics."""

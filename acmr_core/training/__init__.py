"""Fitting ACMR and the honest GZSL protocol: fit (the ACMR training loop), selection (settings chosen on the
validation split), protocol (train_gzsl / evaluate / run_protocol over seeds), metrics."""

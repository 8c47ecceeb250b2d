"""Model bundles: a trained model with its class catalog, backbone identity, latent cache and
familiarity statistics, and its on-disk format (safetensors + JSON)."""

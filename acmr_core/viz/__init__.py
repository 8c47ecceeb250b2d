"""The 2-D latent-space map (UMAP projection, alignment scores) and its plotly figure."""

"""ACMR zero-shot studio: Aligned Cross-Modal Representations (Fang et al., AAAI 2022) for GZSL."""

__version__ = "0.1.0"

"""The package version, defined once (the package face, the CLI and bundle manifests read it)."""

__version__ = "0.1.0"

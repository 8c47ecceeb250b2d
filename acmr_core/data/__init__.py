"""Data sources: the xlsa17 benchmark layout, raw image folders and downloads, image hygiene, synthetic
and procedurally rendered (demo world) data. Nothing here knows about models."""

"""Where the benchmark datasets come from: one :class:`Source` per downloadable archive.

Each source has a default URL, the published checksum where one exists, its size, and the CLI flag and
environment variable that override it (a mirror, a local file or an already unpacked folder). This table is
plain data with no heavy imports, so ``acmr bootstrap --help`` builds its flags from it. How each dataset's
unpacked archives are laid out is :mod:`acmr_core.data.layouts`; which images form the split is
:mod:`acmr_core.data.image_plan`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One downloadable archive."""

    name: str
    url: str
    filename: str
    checksum: str | None  # "md5:<hex>" / "sha256:<hex>" where the publisher gives one
    size: str  # human-readable download size
    flag: str
    env: str
    what: str

    def resolve_url(self, override: str | None = None) -> str:
        """The URL (or local path) to use: the CLI flag, else the environment variable, else the default."""
        return override or os.environ.get(self.env) or self.url

    def hint(self) -> str:
        return (
            f"use a mirror or a local copy with {self.flag} URL_OR_PATH (or {self.env}=...); "
            f"the official file is {self.filename} ({self.size})"
        )


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="cub",
            # CaltechDATA record of CUB-200-2011 (the old vision.caltech.edu/visipedia-data link is retired).
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            filename="CUB_200_2011.tgz",
            checksum="md5:97eceeb196236b17998738112f37df78",  # published by CaltechDATA
            size="1.1 GB",
            flag="--cub-url",
            env="ACMR_CUB_URL",
            what="CUB-200-2011 images, classes and attributes",
        ),
        Source(
            name="xlsa17",
            url="https://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip",
            filename="xlsa17.zip",
            checksum=None,  # no checksum is published
            size="0.9 GB",
            flag="--xlsa17-url",
            env="ACMR_XLSA17_URL",
            what="xlsa17 proposed splits v2 (att_splits.mat, res101.mat, class lists)",
        ),
        Source(
            name="awa2",
            url="https://cvml.ista.ac.at/AwA2/AwA2-data.zip",
            filename="AwA2-data.zip",
            checksum=None,
            size="13 GB",
            flag="--awa2-url",
            env="ACMR_AWA2_URL",
            what="Animals with Attributes 2 images and predicates",
        ),
        Source(
            name="sun",
            url="https://cs.brown.edu/people/gmpatter/Attributes/SUNAttributeDB_Images.tar.gz",
            filename="SUNAttributeDB_Images.tar.gz",
            checksum=None,
            size="1.8 GB",
            flag="--sun-url",
            env="ACMR_SUN_URL",
            what="SUN attribute database images",
        ),
        Source(
            name="sun-attributes",
            url="https://cs.brown.edu/people/gmpatter/Attributes/SUNAttributeDB.tar.gz",
            filename="SUNAttributeDB.tar.gz",
            checksum=None,
            size="a few MB",
            flag="--sun-attributes-url",
            env="ACMR_SUN_ATTRIBUTES_URL",
            what="SUN attribute database metadata (attributes.mat, images.mat)",
        ),
    )
}

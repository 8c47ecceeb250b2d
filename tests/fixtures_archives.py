"""Test helpers: a loopback HTTP server with scriptable failures, a loopback-only network guard, and
builders of tiny archives in the real CUB_200_2011 / AwA2 / SUN attribute DB / xlsa17 layouts.

Imported by tests/test_download.py and tests/test_bootstrap.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import errno
import hashlib
import io
import ipaddress
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import scipy.io
from PIL import Image

# ------------------------------------------------------------------------------------------------------------
# Network guard


def _is_ip_address(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


def _is_loopback_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def install_loopback_only_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any connection or name lookup outside 127.0.0.1/::1 fail at once, as it would offline."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: object) -> None:
        if isinstance(address, tuple) and not _is_loopback_host(address[0]):
            raise OSError(errno.ENETUNREACH, f"test guard: no network outside loopback ({address[0]})")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        name = host.decode() if isinstance(host, bytes) else host
        if _is_ip_address(name):  # a numeric address needs no lookup: connecting to it is what fails
            return real_getaddrinfo(host, *args, **kwargs)
        if host is not None and not _is_loopback_host(name):
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no DNS outside loopback ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # A proxy from the environment would route loopback requests elsewhere.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------------------------
# Loopback HTTP server


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    behaviour: str


@dataclass
class LoopbackServer:
    """Serves in-memory files on 127.0.0.1; ``plan(path, ...)`` scripts how the next requests misbehave.

    Behaviours (consumed one per request, then "ok"): ``ok``; ``cut`` (announce the full length, send half,
    hang up); ``wrong`` (serve different bytes of the same length); ``404``; ``ignore-range`` (answer 200 with
    the whole file even when a Range was asked); ``bad-range`` (answer 206 but from byte 0); ``stall`` (say
    nothing until the server stops).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, data: bytes) -> str:
        self.files["/" + path.lstrip("/")] = data
        return self.url(path)

    def plan(self, path: str, *behaviours: str) -> None:
        self.plans["/" + path.lstrip("/")] = list(behaviours)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def requests_for(self, path: str) -> list[SeenRequest]:
        return [seen for seen in self.requests if seen.path == "/" + path.lstrip("/")]

    @contextmanager
    def running(self) -> Iterator[LoopbackServer]:
        server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-response (the point of several tests) are not errors worth printing."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _make_handler(state: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            plan = state.plans.get(path) or []
            behaviour = plan.pop(0) if plan else "ok"
            state.requests.append(SeenRequest(path, dict(self.headers.items()), behaviour))
            if behaviour == "stall":
                state._stop.wait(30)
                return
            data = state.files.get(path)
            if data is None or behaviour == "404":
                self.send_error(404, "Not Found")
                return
            if behaviour == "wrong":
                data = bytes(255 - byte for byte in data)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match and behaviour == "bad-range":
                self.send_response(206)
                self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
            elif match and behaviour != "ignore-range":
                start = int(match.group(1))
                if start >= len(data):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if behaviour == "cut":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# Archive builders (tiny copies of the real layouts)


def tar_gz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tiny_jpeg(seed: int, size: int = 40) -> bytes:
    """A small, deterministic, class-dependent RGB image (JPEG bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@dataclass(frozen=True)
class TinyDatasetSpec:
    key: str  # cub | awa2 | sun
    xlsa17: str
    cub_names: tuple[str, ...]  # class names in the dataset's own order
    folders: tuple[str, ...]  # image folder (relative to the images root) of each class, same order
    image_prefix: str  # what precedes the relative image path in res101.mat image_files


TINY_SPECS = {
    "cub": TinyDatasetSpec(
        "cub",
        "CUB",
        (
            "001.Black_footed_Albatross",
            "002.Laysan_Albatross",
            "003.Sooty_Albatross",
            "004.Groove_billed_Ani",
            "005.Crested_Auklet",
            "006.Least_Auklet",
            "007.Parakeet_Auklet",
            "008.Rhinoceros_Auklet",
        ),
        (),
        "/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images/",
    ),
    "awa2": TinyDatasetSpec(
        "awa2",
        "AWA2",
        ("antelope", "grizzly+bear", "killer+whale", "beaver", "dalmatian", "persian+cat", "horse", "zebra"),
        (),
        "/BS/xian/work/data/Animals_with_Attributes2//JPEGImages/",
    ),
    "sun": TinyDatasetSpec(
        "sun",
        "SUN",
        ("abbey", "airport_terminal", "apse_indoor", "bedroom", "beach", "canyon", "kitchen", "volcano"),
        (
            "a/abbey",
            "a/airport_terminal",
            "a/apse/indoor",
            "b/bedroom",
            "b/beach",
            "c/canyon",
            "k/kitchen",
            "v/volcano",
        ),
        "/BS/Deep_Fragments/work/MSc/data/SUN/images/",
    ),
}


@dataclass
class TinyDataset:
    """What a builder made: archives by source name, and the truth the tests check against."""

    key: str
    archives: dict[str, bytes]  # source name -> archive bytes (xlsa17 included)
    filenames: dict[str, str]  # source name -> archive file name
    class_names: list[str]  # xlsa17 allclasses order
    image_files: list[str]  # relative image paths in xlsa17 (res101) order
    labels: np.ndarray  # 0-based xlsa17 columns
    trainval: np.ndarray
    test_seen: np.ndarray
    test_unseen: np.ndarray
    seen: list[str]
    unseen: list[str]
    attribute_names: list[str]


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    for row, value in enumerate(strings):
        cell[row, 0] = value
    return cell


def _mat_bytes(content: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, content)
    return buffer.getvalue()


def _loc(indices: list[int]) -> np.ndarray:
    return (np.asarray(indices, dtype=np.float64) + 1).reshape(-1, 1)


def build_tiny_dataset(
    key: str,
    *,
    images_per_class: int = 4,
    n_attributes: int = 12,
    with_res101: bool = True,
    with_val_locs: bool = False,
    omit: tuple[str, ...] = (),
) -> TinyDataset:
    """Archives in the real layout of ``key`` with 8 classes (6 seen, 2 unseen), tiny JPEGs, xlsa17 metadata.

    xlsa17 orders the classes differently from the dataset (pairs swapped, as CUB's allclasses.txt starts with
    002.Laysan_Albatross). ``omit`` drops archive members whose path ends with one of the given strings.
    """
    spec = TINY_SPECS[key]
    names = list(spec.cub_names)
    folders = list(spec.folders) or names
    order = [1, 0, 3, 2, 5, 4, 7, 6]  # xlsa17 column j is dataset class order[j]
    class_names = [names[i] for i in order]
    rng = np.random.default_rng(7)
    original_att = rng.uniform(0, 100, size=(n_attributes, len(names)))  # columns in xlsa17 order
    att = original_att / np.linalg.norm(original_att, axis=0, keepdims=True)
    attribute_names = [f"has_part::value_{i}" for i in range(n_attributes)]
    seen, unseen = class_names[:6], class_names[6:]

    # Images per class in dataset order; the xlsa17 (res101) order is sorted by path, like xlsa17's script.
    images: dict[str, bytes] = {}
    class_of_image: dict[str, int] = {}
    for dataset_index, folder in enumerate(folders):
        column = class_names.index(names[dataset_index])
        for k in range(images_per_class):
            stem = folder.split("/")[-1] if key != "sun" else "sun"
            relative = f"{folder}/{stem}_{k + 1:04d}_{dataset_index}{k}.jpg"
            images[relative] = tiny_jpeg(seed=1000 * column + k)
            class_of_image[relative] = column
    image_files = sorted(images)
    labels = np.array([class_of_image[path] for path in image_files], dtype=np.int64)
    trainval, test_seen, test_unseen = [], [], []
    for column in range(len(class_names)):
        members = [i for i, label in enumerate(labels) if label == column]
        if class_names[column] in unseen:
            test_unseen += members
        else:
            test_seen += members[:1]
            trainval += members[1:]
    train_classes, val_classes = seen[:4], seen[4:]
    if with_val_locs:  # as in xlsa17: train_loc ∪ val_loc = trainval ∪ test_seen, split by class
        seen_rows = sorted(trainval + test_seen)
        splits_val = {
            "train_loc": _loc([i for i in seen_rows if class_names[labels[i]] in train_classes]),
            "val_loc": _loc([i for i in seen_rows if class_names[labels[i]] in val_classes]),
        }
    xlsa = f"xlsa17/data/{spec.xlsa17}/"
    splits: dict[str, object] = {
        "att": att,
        "original_att": original_att,
        "allclasses_names": _cell(class_names),
        "trainval_loc": _loc(sorted(trainval)),
        "test_seen_loc": _loc(sorted(test_seen)),
        "test_unseen_loc": _loc(sorted(test_unseen)),
        **(splits_val if with_val_locs else {}),
    }
    xlsa_entries = {
        xlsa + "att_splits.mat": _mat_bytes(splits),
        xlsa + "allclasses.txt": "\n".join(class_names).encode(),
        xlsa + "trainvalclasses.txt": "\n".join(seen).encode(),
        xlsa + "testclasses.txt": "\n".join(unseen).encode(),
        xlsa + "trainclasses1.txt": "\n".join(train_classes).encode(),
        xlsa + "valclasses1.txt": "\n".join(val_classes).encode(),
    }
    if with_res101:
        xlsa_entries[xlsa + "res101.mat"] = _mat_bytes(
            {
                "features": np.zeros((8, len(image_files)), dtype=np.float32),  # never used by the bootstrap
                "labels": (labels + 1).reshape(-1, 1).astype(np.float64),
                "image_files": _cell([spec.image_prefix + path for path in image_files]),
            }
        )
    archives = {"xlsa17": zip_bytes(_without(xlsa_entries, omit))}
    filenames = {"xlsa17": "xlsa17.zip"}
    if key == "cub":
        cub_ids = {name: i + 1 for i, name in enumerate(names)}
        ordered = sorted(images, key=lambda path: (cub_ids[path.split("/")[0]], path))
        root = "CUB_200_2011/"
        continuous = np.zeros((len(names), n_attributes))
        for column, name in enumerate(class_names):
            continuous[cub_ids[name] - 1] = original_att[:, column]
        entries = {root + "images/" + path: images[path] for path in ordered}
        entries |= {
            root + "classes.txt": "\n".join(f"{i + 1} {name}" for i, name in enumerate(names)).encode(),
            root + "images.txt": "\n".join(f"{i + 1} {path}" for i, path in enumerate(ordered)).encode(),
            root + "image_class_labels.txt": "\n".join(
                f"{i + 1} {cub_ids[path.split('/')[0]]}" for i, path in enumerate(ordered)
            ).encode(),
            root + "attributes/class_attribute_labels_continuous.txt": "\n".join(
                " ".join(f"{value:.6f}" for value in row) for row in continuous
            ).encode(),
            "attributes.txt": "\n".join(f"{i + 1} {name}" for i, name in enumerate(attribute_names)).encode(),
        }
        archives["cub"], filenames["cub"] = tar_gz(_without(entries, omit)), "CUB_200_2011.tgz"
    elif key == "awa2":
        root = "Animals_with_Attributes2/"
        entries = {root + "JPEGImages/" + path: data for path, data in images.items()}
        entries |= {
            root + "classes.txt": "\n".join(f"{i + 1}\t{name}" for i, name in enumerate(names)).encode(),
            root + "predicates.txt": "\n".join(
                f"{i + 1}\t{name}" for i, name in enumerate(attribute_names)
            ).encode(),
            root + "predicate-matrix-continuous.txt": "\n".join(
                " ".join(f"{value:.6f}" for value in original_att[:, class_names.index(name)])
                for name in names
            ).encode(),
        }
        archives["awa2"], filenames["awa2"] = zip_bytes(_without(entries, omit)), "AwA2-data.zip"
    else:
        entries = {"images/" + path: data for path, data in images.items()}
        archives["sun"], filenames["sun"] = tar_gz(_without(entries, omit)), "SUNAttributeDB_Images.tar.gz"
        meta = {
            "SUNAttributeDB/attributes.mat": _mat_bytes({"attributes": _cell(attribute_names)}),
            "SUNAttributeDB/images.mat": _mat_bytes({"images": _cell(sorted(images))}),
            "SUNAttributeDB/attributeLabels_continuous.mat": _mat_bytes(
                {"labels_cv": np.zeros((len(images), 2))}
            ),
        }
        archives["sun-attributes"] = tar_gz(_without(meta, omit))
        filenames["sun-attributes"] = "SUNAttributeDB.tar.gz"
    return TinyDataset(
        key,
        archives,
        filenames,
        class_names,
        image_files,
        labels,
        np.array(sorted(trainval)),
        np.array(sorted(test_seen)),
        np.array(sorted(test_unseen)),
        seen,
        unseen,
        attribute_names,
    )


def _without(entries: dict[str, bytes], omit: tuple[str, ...]) -> dict[str, bytes]:
    return {name: data for name, data in entries.items() if not any(name.endswith(suffix) for suffix in omit)}

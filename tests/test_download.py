"""acmr_core.data.download / .archives: resumable, checksummed downloads and safe unpacking, on a loopback
HTTP server."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmr_core.data.archives import unpack_archive
from acmr_core.data.download import Checksum, fetch, local_source
from acmr_core.errors import DownloadError
from tests.fixtures_archives import LoopbackServer, install_loopback_only_guard, sha256_hex, tar_gz, zip_bytes

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a "cut" leaves a real partial file


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    install_loopback_only_guard(monkeypatch)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer().running() as running:
        yield running


def test_guard_blocks_network_outside_loopback() -> None:
    with pytest.raises(OSError):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 80)


def test_download_verifies_sha256_and_records_it(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("data/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    result = fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", progress=False)
    assert result.downloaded and result.path == dest
    assert dest.read_bytes() == PAYLOAD
    record = json.loads((tmp_path / "file.bin.download.json").read_text())
    assert record["digests"]["sha256"] == sha256_hex(PAYLOAD) and record["size"] == len(PAYLOAD)
    assert not (tmp_path / "file.bin.part").exists()
    # A rerun finds it complete and makes no request.
    again = fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", progress=False)
    assert not again.downloaded
    assert len(server.requests_for("data/file.bin")) == 1


def test_md5_checksum_is_supported(server: LoopbackServer, tmp_path: Path) -> None:
    import hashlib

    url = server.serve("f.bin", PAYLOAD)
    result = fetch(
        url, tmp_path / "f.bin", checksum=f"md5:{hashlib.md5(PAYLOAD).hexdigest()}", progress=False
    )
    assert result.digests["md5"] == hashlib.md5(PAYLOAD).hexdigest()


def test_interrupted_download_resumes_with_range_in_one_call(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("big.bin", PAYLOAD)
    server.plan("big.bin", "cut")
    dest = tmp_path / "big.bin"
    fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", retries=2, progress=False)
    first, second = server.requests_for("big.bin")
    assert first.behaviour == "cut" and "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert sha256_hex(dest.read_bytes()) == sha256_hex(PAYLOAD)


def test_interrupted_download_resumes_on_rerun(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("big.bin", PAYLOAD)
    server.plan("big.bin", "cut")
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match=r"interrupted.*rerun the same command to resume") as error:
        fetch(url, dest, retries=0, progress=False, hint="pass --cub-url")
    assert "\n" not in str(error.value) and url in str(error.value) and "--cub-url" in str(error.value)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == len(PAYLOAD) // 2 and not dest.exists()
    fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", retries=0, progress=False)
    assert server.requests_for("big.bin")[-1].headers["Range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert sha256_hex(dest.read_bytes()) == sha256_hex(PAYLOAD) and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("big.bin", PAYLOAD)
    server.plan("big.bin", "cut", "ignore-range")
    dest = tmp_path / "big.bin"
    fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", retries=1, progress=False)
    assert server.requests_for("big.bin")[1].headers.get("Range")  # it asked, the server answered 200
    assert dest.read_bytes() == PAYLOAD  # not half + whole


def test_a_resume_answered_from_the_wrong_byte_restarts_cleanly(
    server: LoopbackServer, tmp_path: Path
) -> None:
    url = server.serve("big.bin", PAYLOAD)
    server.plan("big.bin", "cut", "bad-range")
    dest = tmp_path / "big.bin"
    fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", retries=2, progress=False)
    assert [seen.behaviour for seen in server.requests_for("big.bin")] == ["cut", "bad-range", "ok"]
    assert "Range" not in server.requests_for("big.bin")[2].headers  # the third request starts over
    assert dest.read_bytes() == PAYLOAD


def test_range_not_satisfiable_restarts(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("small.bin", b"abc")
    (tmp_path / "small.bin.part").write_bytes(b"stale bytes longer than the file")
    fetch(url, tmp_path / "small.bin", checksum=f"sha256:{sha256_hex(b'abc')}", progress=False)
    assert (tmp_path / "small.bin").read_bytes() == b"abc"


def test_checksum_mismatch_is_refused_and_bad_file_not_kept(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("f.bin", PAYLOAD)
    server.plan("f.bin", "wrong")
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", progress=False, hint="set ACMR_CUB_URL")
    message = str(error.value)
    assert (
        url in message
        and sha256_hex(PAYLOAD) in message
        and "ACMR_CUB_URL" in message
        and "\n" not in message
    )
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    assert not (tmp_path / "f.bin.download.json").exists()


def test_a_wrong_file_in_place_is_downloaded_again(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.serve("f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"not the file")
    fetch(url, dest, checksum=f"sha256:{sha256_hex(PAYLOAD)}", progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_404_names_the_url_and_the_override(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.url("missing.zip")
    with pytest.raises(DownloadError) as error:
        fetch(url, tmp_path / "missing.zip", progress=False, hint="pass --xlsa17-url MIRROR_OR_PATH")
    message = str(error.value)
    assert "HTTP 404" in message and url in message and "--xlsa17-url" in message and "\n" not in message


def test_connection_refused_fails_fast(tmp_path: Path, refused_port: int, sleeps: list[float]) -> None:
    with pytest.raises(DownloadError, match="connection refused"):
        fetch(f"http://127.0.0.1:{refused_port}/x.zip", tmp_path / "x.zip", progress=False)
    assert sleeps == []  # refused at once: no retry, no back-off


def test_unresolvable_host_fails_fast_with_one_line(tmp_path: Path, sleeps: list[float]) -> None:
    with pytest.raises(DownloadError, match="could not be resolved") as error:
        fetch("https://data.example.invalid/CUB_200_2011.tgz", tmp_path / "c.tgz", progress=False, hint="h")
    assert "\n" not in str(error.value) and "data.example.invalid" in str(error.value)
    assert sleeps == []


def test_offline_network_unreachable_is_explained(tmp_path: Path) -> None:
    # An IP address needs no name lookup: the network itself fails (the loopback guard's ENETUNREACH).
    with pytest.raises(DownloadError, match=r"10\.255\.255\.1.*unreachable") as error:
        fetch("http://10.255.255.1/f.zip", tmp_path / "f.zip", progress=False)
    assert "could not be resolved" not in str(error.value) and "\n" not in str(error.value)


def test_silent_server_times_out_instead_of_hanging(
    server: LoopbackServer, tmp_path: Path, sleeps: list[float]
) -> None:
    url = server.serve("slow.bin", PAYLOAD)
    server.plan("slow.bin", "stall")
    with pytest.raises(DownloadError, match="timed out"):
        fetch(url, tmp_path / "slow.bin", timeout=0.5, progress=False)
    # One request, given up after its 0.5 s timeout (a stall is not retried), instead of the server's 30 s.
    assert len(server.requests_for("slow.bin")) == 1 and sleeps == []


def test_not_enough_disk_space_is_refused(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 10))
    url = server.serve("f.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetch(url, tmp_path / "f.bin", progress=False)


def test_local_copy_is_used_in_place_and_verified(tmp_path: Path) -> None:
    local = tmp_path / "mirror" / "CUB_200_2011.tgz"
    local.parent.mkdir()
    local.write_bytes(PAYLOAD)
    for url in (str(local), local.as_uri()):
        result = fetch(url, tmp_path / "unused.tgz", checksum=f"sha256:{sha256_hex(PAYLOAD)}", progress=False)
        assert result.path == local and not result.downloaded
    assert not (tmp_path / "unused.tgz").exists()
    with pytest.raises(DownloadError, match="checksum mismatch for local copy"):
        fetch(str(local), tmp_path / "x", checksum="sha256:" + "0" * 64, progress=False)
    with pytest.raises(DownloadError, match="does not exist"):
        fetch(str(tmp_path / "nope.tgz"), tmp_path / "x", progress=False)


def test_bad_urls_and_checksums_are_explained() -> None:
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        local_source("ftp://host/file")
    for bad in ("sha1:abc", "sha256:xyz", "deadbeef", "md5:" + "0" * 31):
        with pytest.raises(DownloadError, match="bad checksum"):
            Checksum.parse(bad)
    assert str(Checksum.parse("SHA256:" + "A" * 64)) == "sha256:" + "a" * 64


# ----------------------------------------------------------------------------------------------------
# Extraction


def test_extracts_tar_gz_and_zip_atomically_and_reuses_the_result(tmp_path: Path) -> None:
    entries = {"root/a.txt": b"a", "root/sub/b.txt": b"bb"}
    for name, data in (("x.tgz", tar_gz(entries)), ("x.zip", zip_bytes(entries))):
        archive = tmp_path / name
        archive.write_bytes(data)
        dest = tmp_path / f"out-{name}"
        assert unpack_archive(archive, dest, progress=False) == dest
        assert (dest / "root" / "sub" / "b.txt").read_bytes() == b"bb"
        assert not (tmp_path / f"out-{name}.extracting").exists()
        (dest / "root" / "a.txt").write_bytes(b"changed")  # proves the second call does not re-extract
        unpack_archive(archive, dest, progress=False)
        assert (dest / "root" / "a.txt").read_bytes() == b"changed"


def test_zip_path_traversal_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"ok.txt": b"1", "../escaped.txt": b"2"}))
    with pytest.raises(DownloadError, match=r"refusing to extract '\.\./escaped\.txt'.*unsafe"):
        unpack_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_tar_path_traversal_is_refused(tmp_path: Path, kind: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("fine.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"1"))
        if kind == "symlink":
            link = tarfile.TarInfo("link")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../etc/passwd"
            archive.addfile(link)
        else:
            info = tarfile.TarInfo("/tmp/evil.txt" if kind == "absolute" else "a/../../evil.txt")
            info.size = 1
            archive.addfile(info, io.BytesIO(b"2"))
    path = tmp_path / "evil.tgz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="unsafe archive"):
        unpack_archive(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_corrupt_and_non_archives_are_explained(tmp_path: Path) -> None:
    html = tmp_path / "page.tgz"
    html.write_bytes(b"<html>mirror moved</html>")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        unpack_archive(html, tmp_path / "out", progress=False)
    truncated = tmp_path / "cut.tgz"
    truncated.write_bytes(tar_gz({"a/" + str(i): bytes(5000) for i in range(20)})[:-400])
    # A cut gzip stream does not even open as a tar archive: told apart from a damaged zip below.
    with pytest.raises(DownloadError, match=r"cut\.tgz' is not a zip or tar archive \(corrupt, truncated"):
        unpack_archive(truncated, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.extracting").exists()
    broken_zip = tmp_path / "b.zip"
    data = bytearray(zip_bytes({"a.txt": b"x" * 5000}))
    data[40:60] = bytes(20)  # damage the compressed stream, keep the directory readable
    broken_zip.write_bytes(bytes(data))
    with pytest.raises(
        DownloadError, match=r"cannot extract .*b\.zip: .*the archive is corrupt or truncated"
    ):
        unpack_archive(broken_zip, tmp_path / "out3", progress=False)
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out3.extracting").exists()


def test_zip_symlink_members_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        archive.writestr(info, "/etc/passwd")
    path = tmp_path / "link.zip"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="symbolic link"):
        unpack_archive(path, tmp_path / "out", progress=False)


def test_zip_extraction_checks_disk_space_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    archive = tmp_path / "big.zip"
    archive.write_bytes(zip_bytes({"a.bin": bytes(4096)}))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 100, 100))
    with pytest.raises(DownloadError, match=r"not enough disk space to extract big\.zip"):
        unpack_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.extracting").exists()

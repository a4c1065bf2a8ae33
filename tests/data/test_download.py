"""fetch(): verified, atomic downloads from a local HTTP server (nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
from functools import partial
from pathlib import Path

import pytest

from metaloop.data.download import fetch, file_digest, read_sha256sums, verify_file

PAYLOAD = b"metaloop test payload\n" * 1000


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base url, served folder)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob.bin").write_bytes(PAYLOAD)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=www))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_fetch_verifies_and_renames(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "blob.bin"
    got = fetch(f"{url}/blob.bin", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                md5=hashlib.md5(PAYLOAD).hexdigest())
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == []


def test_fetch_sha256_mismatch_names_url_and_both_checksums(server, tmp_path):
    url, _ = server
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(ValueError) as err:
        fetch(f"{url}/blob.bin", dest, sha256=wrong)
    msg = str(err.value)
    assert f"{url}/blob.bin" in msg and wrong in msg
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_fetch_md5_mismatch(server, tmp_path):
    url, _ = server
    with pytest.raises(ValueError, match=hashlib.md5(PAYLOAD).hexdigest()):
        fetch(f"{url}/blob.bin", tmp_path / "b", md5="f" * 32)
    assert not (tmp_path / "b").exists() and _leftovers(tmp_path) == []


def test_fetch_http_error_is_raised_and_cleans_up(server, tmp_path):
    url, _ = server
    with pytest.raises(urllib.error.HTTPError):
        fetch(f"{url}/missing.bin", tmp_path / "m.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == [tmp_path / "www"]


def test_failed_fetch_removes_the_folders_it_made(server, tmp_path):
    url, _ = server
    (tmp_path / "kept").mkdir()
    with pytest.raises(urllib.error.HTTPError):
        fetch(f"{url}/missing.bin", tmp_path / "kept" / "new" / "deeper" / "m.bin")
    with pytest.raises(ValueError, match="checksum mismatch"):
        fetch(f"{url}/blob.bin", tmp_path / "kept" / "new" / "b.bin", sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "www"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_fetch_keeps_a_verified_file_and_replaces_a_bad_one(server, tmp_path):
    url, www = server
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "blob.bin"
    fetch(f"{url}/blob.bin", dest, sha256=sha)
    (www / "blob.bin").write_bytes(b"changed on the server")
    fetch(f"{url}/blob.bin", dest, sha256=sha)       # verified copy: not downloaded again
    assert dest.read_bytes() == PAYLOAD
    (www / "blob.bin").write_bytes(PAYLOAD)
    dest.write_bytes(b"truncated")
    fetch(f"{url}/blob.bin", dest, sha256=sha)       # corrupt copy: downloaded again
    assert dest.read_bytes() == PAYLOAD


def test_verify_file_and_sums(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    assert file_digest(f) == sha
    verify_file(f, sha256=sha, md5=hashlib.md5(b"abc").hexdigest())
    with pytest.raises(ValueError, match=sha):
        verify_file(f, sha256="1" * 64)
    with pytest.raises(FileNotFoundError):
        verify_file(tmp_path / "nope", sha256=sha)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha}  a.txt\n{'2' * 64} *sub/b.bin\n")
    assert read_sha256sums(sums) == {"a.txt": sha, "sub/b.bin": "2" * 64}
    sums.write_text(f"{sha}  ./a.txt\n{'2' * 64} *./sub/b.bin\n")      # sha256sum ./*
    assert read_sha256sums(sums) == {"a.txt": sha, "sub/b.bin": "2" * 64}
    sums.write_text("not a checksum line\n")
    with pytest.raises(ValueError, match="SHA256SUMS:1"):
        read_sha256sums(sums)

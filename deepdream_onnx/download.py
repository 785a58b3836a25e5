"""Downloading and checking the BVLC GoogLeNet Caffe weights."""

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from deepdream_onnx import paths
from deepdream_onnx.errors import ChecksumError, DeepDreamError
from deepdream_onnx.progress import Progress

GOOGLENET_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
# From the BVLC model zoo's readme (models/bvlc_googlenet/readme.md, caffemodel_sha1).
GOOGLENET_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"

_CHUNK = 1 << 16


def sha1_of(path):
    """The hex sha1 of a file, read in chunks (the weights are ~50 MB)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_caffemodel(dest=None, url=GOOGLENET_URL, sha1=GOOGLENET_SHA1, progress=None, timeout=30):
    """Download the Caffe weights to dest (default paths.default_caffemodel_path()) and return it.

    A dest that already has the expected sha1 is returned without touching the network;
    one with another sha1 is left alone (it may be the user's file) and ChecksumError
    is raised.  The download goes to dest + ".part" and is moved into place only once
    verified, so dest is never half-written.  sha1=None skips verification.

    progress: None draws a bar on stderr if it is a terminal, False draws nothing, and
    a text stream draws on that stream if it is a terminal.
    """
    dest = Path(paths.default_caffemodel_path() if dest is None else dest).expanduser()
    if dest.exists():
        if sha1 is not None:
            actual = sha1_of(dest)
            if actual != sha1:
                raise ChecksumError(
                    f"{dest} exists but its sha1 is {actual}, not {sha1} (truncated or a different file); "
                    f"delete it to download it again, or pass --caffemodel PATH to use a file you trust"
                )
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        got = _download(url, part, dest, progress, timeout)
        if sha1 is not None and got != sha1:
            raise ChecksumError(
                f"downloaded {url} but its sha1 is {got}, expected {sha1}; "
                f"the download is corrupt or the file changed: download it by hand and pass --caffemodel PATH"
            )
        os.replace(part, dest)
    finally:
        # After os.replace the .part is gone; after any failure it is incomplete or wrong.
        if part.exists():
            part.unlink()
    return dest


def _download(url, part, dest, progress, timeout):
    """Stream url into the file part and return its sha1; network failures -> DeepDreamError."""
    digest = hashlib.sha1()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            with _progress_bar(progress, _content_length(response), dest.name) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise _download_error(url, dest, f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _download_error(url, dest, e.reason) from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        # OSError: timeouts and resets mid-stream; ValueError: a malformed URL.
        raise _download_error(url, dest, e) from e
    return digest.hexdigest()


def _content_length(response):
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _progress_bar(progress, total, name):
    if progress is False:
        return Progress(total, enabled=False)
    return Progress(total, label=f"downloading {name}", stream=progress, unit="B")


def _download_error(url, dest, reason):
    # The message must stay on one line; some exceptions (a bare timeout) have no text.
    reason = " ".join(str(reason).split()) or type(reason).__name__
    return DeepDreamError(
        f"could not download {url} ({reason}); download it by hand from {url} "
        f"and save it as {dest}, or pass --caffemodel PATH"
    )

import functools
import gzip
import http.server
import os
import shutil
import socket
import threading

import pytest
import torch

from minidiff import data

OFFICIAL = data.SYSTEM_DATA_DIR
needs_copy = pytest.mark.skipif(not (OFFICIAL / "t10k-images-idx3-ubyte.gz").exists(),
                                reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No copy anywhere: empty cache, no MINIDIFF_DATA, no system folder."""
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIDIFF_DATA", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "no-system-copy")
    return tmp_path


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving a folder; yields (base_url, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


@needs_copy
def test_download_from_a_local_server_checks_and_caches(isolated, server, monkeypatch):
    url, folder = server
    for name in data.FASHION_MNIST_FILES["test"]:
        shutil.copy(OFFICIAL / name, folder / name)
    monkeypatch.setenv("MINIDIFF_FASHION_MNIST_URL", url)
    x, y = data.fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))
    cached = isolated / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(data.FASHION_MNIST_FILES["test"])
    # second call reads the cache: stop the server's files and it still works
    for p in folder.iterdir():
        p.unlink()
    x2, _ = data.fashion_mnist("test")
    assert torch.equal(x, x2)


@needs_copy
def test_truncated_download_is_an_error_and_is_not_kept(isolated, server, monkeypatch):
    url, folder = server
    img, lab = data.FASHION_MNIST_FILES["test"]
    (folder / img).write_bytes((OFFICIAL / img).read_bytes()[:100_000])
    shutil.copy(OFFICIAL / lab, folder / lab)
    monkeypatch.setenv("MINIDIFF_FASHION_MNIST_URL", url)
    with pytest.raises(ValueError, match=img):
        data.fashion_mnist("test")
    cached = isolated / "cache" / "fashion-mnist"
    assert not (cached / img).exists() and not list(cached.glob(".*"))


@needs_copy
def test_corrupt_local_copy_names_the_file(isolated, tmp_path, monkeypatch):
    mine = tmp_path / "mine" / "fashion-mnist"
    mine.mkdir(parents=True)
    for name in data.FASHION_MNIST_FILES["test"]:
        shutil.copy(OFFICIAL / name, mine / name)
    raw = bytearray((mine / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw[-20] ^= 0xFF                                      # flip a byte inside the compressed stream
    (mine / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "mine"))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        data.fashion_mnist("test")


@needs_copy
@pytest.mark.parametrize("where", ["local", "download"])
def test_wrong_content_in_a_valid_gzip_is_caught_by_the_sha256(isolated, server, tmp_path, monkeypatch, where):
    """One label changed and the file re-compressed: gzip reads it fine, only the SHA-256 check
    can tell. Locally it is an error naming the file; downloaded, it is never kept."""
    url, served = server
    img, lab = data.FASHION_MNIST_FILES["test"]
    raw = bytearray(gzip.decompress((OFFICIAL / lab).read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    folder = tmp_path / "mine" / "fashion-mnist" if where == "local" else served
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(OFFICIAL / img, folder / img)
    (folder / lab).write_bytes(gzip.compress(bytes(raw)))
    if where == "local":
        monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "mine"))
    else:
        monkeypatch.setenv("MINIDIFF_FASHION_MNIST_URL", url)
    with pytest.raises(ValueError, match=f"{lab}.*SHA-256"):
        data.fashion_mnist("test")
    if where == "download":
        cached = isolated / "cache" / "fashion-mnist"
        assert (cached / img).exists() and not (cached / lab).exists()
        assert not [p for p in cached.iterdir() if p.name.startswith(".")]
        mask = os.umask(0)
        os.umask(mask)
        assert ((cached / img).stat().st_mode & 0o777) == (0o666 & ~mask)   # a normal file's mode


@needs_copy
def test_search_order_prefers_minidiff_data(isolated, tmp_path, monkeypatch):
    mine = tmp_path / "mine" / "fashion-mnist"
    mine.mkdir(parents=True)
    for name in data.FASHION_MNIST_FILES["test"]:
        (mine / name).symlink_to(OFFICIAL / name)
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "mine"))
    assert data.fashion_mnist_dirs()[0] == mine
    x, y = data.fashion_mnist("test", download=False)
    assert len(x) == 10_000


def test_offline_with_no_copy_names_all_three_ways(isolated, monkeypatch):
    with socket.socket() as s:          # a port with nobody listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MINIDIFF_FASHION_MNIST_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(FileNotFoundError) as err:
        data.fashion_mnist("train")
    msg = str(err.value)
    assert "MINIDIFF_DATA" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert data.FASHION_MNIST_URL in msg and str(isolated / "cache" / "fashion-mnist") in msg
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.fashion_mnist("test", download=False)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.fashion_mnist("valid")


def test_shapes_captions_match_pixels():
    g = torch.Generator().manual_seed(0)
    imgs, caps, attrs = data.shapes(200, size=32, generator=g)
    assert imgs.shape == (200, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    A = data.SHAPE_ATTRIBUTES
    colours = list(A["colour"].values())
    for k in range(200):
        col = list(A["colour"])[attrs["colour"][k]]
        pos = list(A["position"])[attrs["position"][k]]
        assert col in caps[k] and pos in caps[k] and list(A["shape"])[attrs["shape"][k]] in caps[k]
        # the pixel at the shape's centre has the caption's colour
        cy, cx = A["position"][pos]
        pix = (imgs[k, :, int(cy * 32), int(cx * 32)] + 1) / 2
        torch.testing.assert_close(pix, torch.tensor(colours[attrs["colour"][k]]), atol=1e-6, rtol=0)
    # large shapes cover more pixels than small ones
    area = ((imgs + 1) / 2 - 0.92).abs().sum(1).gt(1e-3).sum((1, 2)).float()
    big = attrs["size"] == list(A["size"]).index("large")
    assert area[big].mean() > 1.8 * area[~big].mean()
    assert caps[0].startswith("a ") and len(set(caps)) > 50


def test_shapes_hold_out_pairs_and_combination_ids():
    g = torch.Generator().manual_seed(0)
    held = [("red", "triangle"), ("blue", "circle")]
    _, caps, attrs = data.shapes(3000, size=8, generator=g, exclude=held)
    assert not any("red triangle" in c or "blue circle" in c for c in caps)
    assert len({(c, s) for c, s in zip(attrs["colour"].tolist(), attrs["shape"].tolist())}) == 13
    _, caps, _ = data.shapes(200, size=8, generator=g, only=held)
    assert all("red triangle" in c or "blue circle" in c for c in caps) and any("red" in c for c in caps)
    # a combination id names the caption: shape_captions()[id] is the picture's caption
    _, caps, attrs = data.shapes(300, size=8, generator=g)
    ids = data.shape_label(attrs)
    assert [data.shape_captions()[i] for i in ids.tolist()] == caps and len(set(data.shape_captions())) == 150
    back = data.shape_attributes(ids)
    assert all(torch.equal(back[k], attrs[k]) for k in attrs)
    hot = data.shape_one_hot(attrs)
    assert hot.shape == (300, 4, 15) and (hot.sum((1, 2)) == 4).all() and (hot.sum(2) == 1).all()
    assert torch.equal(hot[:, 0, :5].argmax(1), attrs["colour"]) and torch.equal(hot[:, 3, 10:].argmax(1), attrs["position"])
    with pytest.raises(ValueError, match=r"exclude must hold \(colour, shape\) pairs"):
        data.shapes(4, exclude=[("crimson", "circle")])
    with pytest.raises(ValueError, match="leave no"):
        data.shapes(4, only=held, exclude=held)

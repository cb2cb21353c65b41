import pytest
import torch

from gan import DataError, load_mnist


def test_train_split_is_one_uint8_tensor(mnist_train):
    assert mnist_train.images.dtype == torch.uint8 and mnist_train.images.shape == (60000, 28, 28)
    assert mnist_train.labels.shape == (60000,) and set(mnist_train.labels.unique().tolist()) == set(range(10))
    batch = mnist_train.batch(torch.arange(8))
    assert batch.shape == (8, 1, 28, 28) and batch.dtype == torch.float32
    assert batch.min() == -1.0 and batch.max() == 1.0


def test_subset_is_deterministic(data_dir, mnist_train):
    sub = load_mnist(data_dir, subset=500)
    assert len(sub) == 500 and torch.equal(sub.images, mnist_train.images[:500])


def test_missing_folder_names_the_expected_folder(tmp_path):
    with pytest.raises(DataError, match=rf"expected the IDX files .* in {tmp_path}/MNIST/raw; set --data-dir or GAN_STUDY_DATA"):
        load_mnist(tmp_path, download=False)


def test_failed_download_is_a_clear_error_and_leaves_no_folders(tmp_path, monkeypatch):
    import torchvision

    # a real download attempt, from a mirror that refuses connections (port 9, nothing listens)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError, match=r"MNIST not found: .* \(download failed: "):
        load_mnist(tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("damage", ["wrong_magic", "truncated"])
def test_corrupt_files_are_a_clear_error(tmp_path, data_dir, damage):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    images = raw / "train-images-idx3-ubyte"
    content = images.read_bytes()
    images.write_bytes(b"\x00\x00\x09\x09" + content[4:] if damage == "wrong_magic" else content[:100000])
    with pytest.raises(DataError, match="corrupt"):
        load_mnist(tmp_path, download=False)

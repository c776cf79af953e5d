"""The dataset loaders on tiny files in the real formats (gzipped IDX, CIFAR pickles)."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from nres.cli import main as nres_main
from nres.tasks.lopt import datasets
from nres.tasks.lopt.datasets import DatasetError, load_dataset


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder, n_train=10, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": np.repeat(np.arange(n_train, dtype=np.uint8)[:, None, None] * 20, 28 * 28).reshape(n_train, 28, 28),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": np.arange(n_test)[::-1] % 10,
    }
    for key, name in datasets.FASHION_MNIST_FILES.items():
        data = idx_bytes(np.asarray(arrays[key]))
        if gz:
            with gzip.open(folder / name, "wb") as f:
                f.write(data)
        else:
            (folder / name[:-3]).write_bytes(data)
    return arrays


def cifar_batch(n, label_offset=0):
    # every image is constant per channel: R = 10 + i, G = 100, B = 200
    data = np.empty((n, 3, 32, 32), np.uint8)
    data[:, 0] = (10 + np.arange(n))[:, None, None]
    data[:, 1], data[:, 2] = 100, 200
    return {b"batch_label": b"test", b"labels": [(i + label_offset) % 10 for i in range(n)],
            b"data": data.reshape(n, 3072), b"filenames": [b"x.png"] * n}


def write_cifar(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(datasets.CIFAR10_TRAIN_BATCHES + (datasets.CIFAR10_TEST_BATCH,)):
        with open(folder / name, "wb") as f:
            pickle.dump(cifar_batch(n, label_offset=i), f, protocol=2)


def test_fashion_mnist_from_gzipped_idx(tmp_path):
    arrays = write_fashion_mnist(tmp_path / "fashion_mnist")
    data = load_dataset("fashion_mnist", str(tmp_path), image_size=8)
    assert data.train_images.shape == (8, 8, 8, 1) and data.valid_images.shape == (2, 8, 8, 1)
    assert data.test_images.shape == (5, 8, 8, 1) and data.train_images.dtype == np.uint8
    # constant images stay constant under area resizing; order kept; last 20% is validation
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 0], np.arange(8) * 20)
    np.testing.assert_array_equal(data.valid_images[:, 3, 5, 0], [160, 180])
    np.testing.assert_array_equal(np.concatenate([data.train_labels, data.valid_labels]), arrays["train_labels"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    # the test image's mean survives resizing (area averaging), up to rounding
    assert abs(data.test_images.mean() - arrays["test_images"].mean()) < 2.0


def test_uncompressed_idx_files_work_too(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "fashion_mnist", gz=False)
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    data = load_dataset("fashion_mnist", "", image_size=28)
    assert data.train_images.shape == (8, 28, 28, 1)


def test_cifar10_from_pickle_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", n=4)
    data = load_dataset("cifar10", str(tmp_path), image_size=8)
    assert data.train_images.shape == (16, 8, 8, 3) and data.valid_images.shape == (4, 8, 8, 3)
    assert data.test_images.shape == (4, 8, 8, 3)
    # channel-first rows [R..., G..., B...] become channels-last pixels
    np.testing.assert_array_equal(data.train_images[:4, 2, 2], [[10, 100, 200], [11, 100, 200], [12, 100, 200],
                                                                 [13, 100, 200]])
    np.testing.assert_array_equal(data.train_labels[:8], [0, 1, 2, 3, 1, 2, 3, 4])


def test_digits_are_bundled():
    data = load_dataset("digits")
    assert data.train_images.shape == (1200, 8, 8, 1)
    assert len(data.valid_labels) == 300 and len(data.test_labels) == 297
    assert data.train_images.max() == 255 and set(np.unique(data.train_labels)) == set(range(10))


def test_digits_read_from_the_file_equal_scikit_learns_loader():
    """nres reads scikit-learn's digits.csv.gz itself (importing scikit-learn takes
    seconds); the images and labels are those of sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits as sklearn_digits

    train_x, train_y, test_x, test_y = datasets.load_digits()
    digits = sklearn_digits()
    np.testing.assert_array_equal(np.concatenate([train_x, test_x])[..., 0],
                                  np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), digits.target)


def test_missing_files_name_what_to_put_where(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", str(tmp_path))
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "fashion_mnist") in message
    assert "NRES_DATA_DIR" in message
    with pytest.raises(DatasetError, match="data_batch_1.*cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path))


def test_corrupt_files_are_reported(tmp_path):
    folder = tmp_path / "fashion_mnist"
    write_fashion_mnist(folder)
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset("fashion_mnist", str(tmp_path))
    with gzip.open(target, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)  # truncated
    with pytest.raises(DatasetError, match="needs"):
        load_dataset("fashion_mnist", str(tmp_path))
    with gzip.open(target, "wb") as f:
        f.write(b"\x12\x34\x56\x78")
    with pytest.raises(DatasetError, match="bad magic"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_corrupt_or_malicious_cifar_batches_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_dataset("cifar10", str(tmp_path))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": print}, f)
    with pytest.raises(DatasetError, match=r"refusing to load \S*print"):
        load_dataset("cifar10", str(tmp_path))


def test_bad_arguments():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("digits", image_size=0)


def test_cli_reports_missing_files_in_one_line(tmp_path, capsys):
    code = nres_main(["train", "--task", "lopt", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path),
                      "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nres: error:") and "Fashion-MNIST files missing" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()

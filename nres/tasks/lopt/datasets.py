"""Image-classification data for the learned-optimizer task, read from the real files.

Three datasets, all returned as an :class:`ImageDataset` of ``uint8`` images
``[n, S, S, C]`` (``S`` = ``image_size``, ``C`` = 1 or 3) and ``int32`` labels ``[n]``
in ``0..9``:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).
  The first 1500 images are the training split, the last 297 the test split.
* ``fashion_mnist``: the four standard gzipped IDX files of Fashion-MNIST
  (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) in
  ``DATA_DIR/fashion_mnist/`` (uncompressed copies without ``.gz`` work too).
* ``cifar10``: the standard python-pickle batches ``data_batch_1`` .. ``data_batch_5``
  and ``test_batch`` in ``DATA_DIR/cifar-10-batches-py/`` (the folder the official
  ``cifar-10-python.tar.gz`` unpacks to).

``DATA_DIR`` is ``--data-dir`` if given, else the environment variable
``NRES_DATA_DIR``, else ``~/.cache/nres/data``. Images are resized to ``S x S`` with
area averaging and re-quantised to ``uint8`` (so they stay small when held on device).
The training split is divided in order: the first 80% trains the inner model, the last
20% is the validation split on which the outer loss is measured (SPEC section 6).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import pickle
import struct
import zlib
from typing import NamedTuple

import numpy as np

DATASETS = ("digits", "fashion_mnist", "cifar10")
DATA_DIR_ENV = "NRES_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/nres/data"
VALID_FRACTION = 0.2
NUM_CLASSES = 10

FASHION_MNIST_DIR = "fashion_mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

_DIGITS_TRAIN = 1500  # digits: images [0, 1500) train+valid, [1500, 1797) test


class DatasetError(ValueError):
    """Missing or unreadable dataset files; the message says what to put where."""


class ImageDataset(NamedTuple):
    """Images ``uint8 [n, S, S, C]`` and labels ``int32 [n]`` of the three splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    valid_images: np.ndarray
    valid_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def resolve_data_dir(data_dir: str = "") -> pathlib.Path:
    """``data_dir`` if non-empty, else ``$NRES_DATA_DIR``, else ``~/.cache/nres/data``."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV, "") or DEFAULT_DATA_DIR
    return pathlib.Path(chosen).expanduser()


# -- file formats ------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX file (``0, 0, dtype code, ndim``, big-endian int32 dims, then data)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{source} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source} is truncated: its header declares {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(f"{source} holds {len(data)} bytes but its header {shape} needs {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: {err} (the file is corrupt; download it again)") from None
    return parse_idx(data, str(path))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (what the CIFAR batches hold)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``uint8 [n, 32, 32, 3]`` and labels ``[n]``."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    except Exception as err:  # pickle raises many types on garbage input
        raise DatasetError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels' entries)")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(f"{path}: expected uint8 data [n, 3072] and n labels, got data {data.dtype}"
                           f"{list(data.shape)} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# -- the datasets ------------------------------------------------------------------------
def _require(paths: dict[str, pathlib.Path], dataset: str, folder: pathlib.Path, source: str) -> None:
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{dataset} files missing: {', '.join(missing)} not found in {folder}. Put the standard files "
            f"{', '.join(p.name for p in paths.values())} there ({source}), or point --data-dir or "
            f"${DATA_DIR_ENV} at the folder that contains {folder.name}/"
        )


def _idx_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    """The ``.gz`` file, or its uncompressed twin when only that one exists."""
    path = folder / name
    plain = folder / name[: -len(".gz")]
    return plain if not path.is_file() and plain.is_file() else path


def _check_labels(images: np.ndarray, labels: np.ndarray, source: str) -> np.ndarray:
    if len(images) != len(labels):
        raise DatasetError(f"{source}: {len(images)} images but {len(labels)} labels")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{source}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int32)


def load_fashion_mnist(data_dir: pathlib.Path):
    """Fashion-MNIST as ``(train_images [60000, 28, 28, 1], train_labels, test_images, test_labels)``."""
    folder = data_dir / FASHION_MNIST_DIR
    paths = {key: _idx_path(folder, name) for key, name in FASHION_MNIST_FILES.items()}
    _require(paths, "Fashion-MNIST", folder, "https://github.com/zalandoresearch/fashion-mnist")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
            raise DatasetError(f"{paths[split + '_images']}: expected uint8 images [n, rows, cols] and labels [n], "
                               f"got {images.dtype}{list(images.shape)} and labels {list(labels.shape)}")
        splits += [images[..., None], _check_labels(images, labels, str(paths[f"{split}_labels"]))]
    return tuple(splits)


def load_cifar10(data_dir: pathlib.Path):
    """CIFAR-10 as ``(train_images [50000, 32, 32, 3], train_labels, test_images, test_labels)``."""
    folder = data_dir / CIFAR10_DIR
    names = CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,)
    paths = {name: folder / name for name in names}
    _require(paths, "CIFAR-10", folder, "the python version, https://www.cs.toronto.edu/~kriz/cifar.html")
    batches = {name: read_cifar_batch(path) for name, path in paths.items()}
    train = [batches[name] for name in CIFAR10_TRAIN_BATCHES]
    train_images = np.concatenate([images for images, _ in train])
    train_labels = _check_labels(train_images, np.concatenate([labels for _, labels in train]), str(folder))
    test_images, test_labels = batches[CIFAR10_TEST_BATCH]
    return train_images, train_labels, test_images, _check_labels(test_images, test_labels, str(paths[names[-1]]))


def digits_file() -> pathlib.Path:
    """scikit-learn's copy of the UCI 8x8 digits, ``sklearn/datasets/data/digits.csv.gz``
    (1797 rows: 64 pixel values ``0..16``, then the label), found without importing
    scikit-learn (whose import takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("dataset 'digits' is read from scikit-learn's copy; install it: pip install 'nres[lopt]'")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DatasetError(f"dataset 'digits': {str(path)!r} is missing; reinstall scikit-learn")
    return path


def load_digits():
    """scikit-learn's 8x8 digits (pixel values ``0..16`` rescaled to ``0..255``), read from
    :func:`digits_file` as ``sklearn.datasets.load_digits`` reads it."""
    data = np.loadtxt(digits_file(), delimiter=",")
    images = np.round(data[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = data[:, -1].astype(np.int32)
    return images[:_DIGITS_TRAIN], labels[:_DIGITS_TRAIN], images[_DIGITS_TRAIN:], labels[_DIGITS_TRAIN:]


def resize_images(images: np.ndarray, size: int, chunk: int = 8192) -> np.ndarray:
    """Area-resample ``uint8 [n, H, W, C]`` to ``uint8 [n, size, size, C]``."""
    if images.shape[1:3] == (size, size):
        return images
    import jax
    import jax.numpy as jnp

    resize = jax.jit(lambda x: jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "area"))
    out = [np.asarray(resize(jnp.asarray(images[i:i + chunk], jnp.float32))) for i in range(0, len(images), chunk)]
    return np.clip(np.round(np.concatenate(out)), 0, 255).astype(np.uint8)


def files_fingerprint(name: str, data_dir: str = "") -> list:
    """``[(file, size, modification time ns)]`` of the files dataset ``name`` reads
    (empty for ``digits``, which comes with scikit-learn): it changes when they do."""
    if name == "fashion_mnist":
        folder = resolve_data_dir(data_dir) / FASHION_MNIST_DIR
    elif name == "cifar10":
        folder = resolve_data_dir(data_dir) / CIFAR10_DIR
    else:
        return []
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    return [(str(p), info.st_size, info.st_mtime_ns) for p, info in ((p, p.stat()) for p in files)]


def load_dataset(name: str, data_dir: str = "", image_size: int = 8) -> ImageDataset:
    """Load ``name`` (one of :data:`DATASETS`) resized to ``image_size`` and split 80/20/test."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
    if name == "digits":
        train_x, train_y, test_x, test_y = load_digits()
    elif name == "fashion_mnist":
        train_x, train_y, test_x, test_y = load_fashion_mnist(resolve_data_dir(data_dir))
    else:
        train_x, train_y, test_x, test_y = load_cifar10(resolve_data_dir(data_dir))
    return split_dataset(resize_images(train_x, image_size), train_y, resize_images(test_x, image_size), test_y, name)


def split_dataset(train_x, train_y, test_x, test_y, name: str) -> ImageDataset:
    """The last 20% of the training split (in file order) becomes the validation split."""
    num_valid = int(round(VALID_FRACTION * len(train_x)))
    num_train = len(train_x) - num_valid
    if num_train < 1 or num_valid < 1 or len(test_x) < 1:
        raise DatasetError(f"{name}: too few images to split ({len(train_x)} training, {len(test_x)} test)")
    return ImageDataset(train_x[:num_train], train_y[:num_train], train_x[num_train:], train_y[num_train:],
                        test_x, test_y, name)

"""A run directory: everything one training run writes, and reading it back.

Layout of ``DIR/``:

* ``config.json``: every resolved setting (task options and ``horizon`` included), the
  size ``theta_size`` of theta, devices and process count, and library versions.
* ``metrics.jsonl``: one JSON object per logged update (``iteration``,
  ``wall_time_s`` of training only, ``total_env_steps``, ``sequential_steps``,
  ``train_loss``, ...); evaluation rows carry ``test_loss`` instead of ``train_loss``,
  at most one per iteration, after that iteration's train row. Strictly valid JSON:
  a non-finite number is written as ``null`` and its key listed in the row's
  ``nonfinite`` (files of older versions with ``NaN``/``Infinity`` still read).
* ``tensorboard/``: TensorBoard event files with the same scalars.
* ``thetas.npz``: the ``theta`` trajectory: ``iteration`` ``[M]`` and one array
  ``theta`` (or ``theta/<path>`` per pytree leaf) with a leading ``[M]`` axis;
  plain NumPy, readable without this library.
* ``checkpoint.npz``: the latest checkpoint (see :mod:`nres.checkpoint`).
* ``curves.png``: loss against updates, total env steps and wall-clock.
* ``.lock``: held (``flock``) by the one process writing the run; the kernel drops the
  lock when that process ends, however it ends.

Write order keeps the files consistent at every instant: ``config.json`` first, then
``thetas.npz`` with ``theta_0`` and the iteration-0 evaluation row, then the first
``checkpoint.npz``. A directory with ``config.json`` but no ``checkpoint.npz`` is
*half-made* (killed during start-up): ``--resume`` starts it from scratch and ``--out``
replaces it. Rows and thetas past the checkpoint are dropped on resume and recomputed.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import pathlib
import platform
import shutil
import struct
from typing import Any, Iterable

import jax
import numpy as np

from nres.checkpoint import atomic_write
from nres.tree import PyTree

CONFIG = "config.json"
METRICS = "metrics.jsonl"
THETAS = "thetas.npz"
CHECKPOINT = "checkpoint.npz"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
RUN_FILES = (CONFIG, METRICS, THETAS, CHECKPOINT, CURVES, TENSORBOARD)


class RunDirError(ValueError):
    """A directory that is not a run, already holds one, is unreadable or is in use."""


def versions() -> dict:
    import optax

    import nres

    return {
        "nres": nres.__version__,
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _dist_version("jaxlib"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def is_run(path: str | pathlib.Path) -> bool:
    return (pathlib.Path(path) / CONFIG).is_file()


def is_half_made(path: str | pathlib.Path) -> bool:
    """A run killed during start-up: ``config.json`` but no first checkpoint yet."""
    return is_run(path) and not (pathlib.Path(path) / CHECKPOINT).is_file()


def _read_text(file: pathlib.Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunDirError(f"{str(file)!r} is not UTF-8 text") from None


def read_config(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if not is_run(path):
        raise RunDirError(f"{str(path)!r} is not a run directory (no {CONFIG})")
    try:
        stored = json.loads(_read_text(path / CONFIG))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{str(path / CONFIG)!r} is not valid JSON: {err}") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise RunDirError(f"{str(path / CONFIG)!r} has no 'config' table of settings")
    return stored


def is_eval_row(row: dict) -> bool:
    """Evaluation rows carry the task's test metrics instead of ``train_loss``."""
    return "train_loss" not in row


def read_metrics(path: str | pathlib.Path, having: str | None = None) -> list[dict]:
    """The rows of ``metrics.jsonl`` (``having``: only those with that key, the others
    not even parsed)."""
    file = pathlib.Path(path) / METRICS
    if not file.is_file():
        return []
    wanted = None if having is None else json.dumps(having) + ":"
    lines = [line for line in _read_text(file).splitlines() if line.strip() and (wanted is None or wanted in line)]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a row cut short by a crash: the resume rewrites the file
                break
            raise RunDirError(f"{str(file)!r} line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise RunDirError(f"{str(file)!r} line {number} is not a row with an integer 'iteration'")
        rows.append(row)
    return rows


def json_row(row: dict) -> str:
    """One line of strictly valid JSON: non-finite floats become ``null`` and their keys
    are listed under ``nonfinite``."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: (None if k in bad else v) for k, v in row.items()}, "nonfinite": bad}
    return _JSON.encode(row) + "\n"


_JSON = json.JSONEncoder(allow_nan=False)  # built once: json.dumps(..., allow_nan=False) builds one per call


def tidy_rows(rows: Iterable[dict]) -> list[dict]:
    """One train and one evaluation row per iteration (a later row replaces an earlier
    one), sorted by iteration with each iteration's train row first."""
    unique = {(r["iteration"], is_eval_row(r)): r for r in rows}
    return [unique[key] for key in sorted(unique)]


def write_metrics(path: str | pathlib.Path, rows: Iterable[dict]) -> None:
    text = "".join(json_row(row) for row in rows)
    atomic_write(pathlib.Path(path) / METRICS, lambda h: h.write(text), mode="w")


class RunLock:
    """Exclusive ownership of a run directory by this process.

    An advisory ``flock`` on ``DIR/.lock``: the kernel releases it when the process
    ends (SIGKILL included), so a lock is never stale. The holder's pid is written into
    the file for the error message of a second writer. Taking the lock also removes the
    temporary files that a killed writer can leave (``.NAME.XXXX.tmp``).
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return self
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"{str(self.path)!r} is being trained by pid {holder}; "
                                  "wait for it or stop it first") from None
            raise
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def check_out(path: str | pathlib.Path, overwrite: bool) -> None:
    """Raise unless ``path`` can receive a new run (reads only).

    A half-made run (no checkpoint yet) may be replaced without ``overwrite``.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} exists and is not a directory")
    if is_run(path) and not overwrite and not is_half_made(path):
        raise RunDirError(
            f"output directory {str(path)!r} already holds a run; "
            "use --resume to continue it or --overwrite to replace it"
        )


def remove_run_files(path: str | pathlib.Path, keep: Iterable[str] = ()) -> None:
    """Delete the files a run writes (other files in the directory stay)."""
    for name in set(RUN_FILES) - set(keep):
        target = pathlib.Path(path) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def prepare(path: str | pathlib.Path, overwrite: bool) -> pathlib.Path:
    """Make ``path`` ready for a new run (see :func:`check_out`), removing an old one."""
    path = pathlib.Path(path)
    check_out(path, overwrite)
    remove_run_files(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(path: pathlib.Path, config: dict, facts: dict | None = None) -> None:
    """``config.json``: the resolved settings, facts about the run (``d``, ``T``, devices) and versions."""
    text = json.dumps({"config": config, **(facts or {}), "versions": versions()}, indent=2) + "\n"
    atomic_write(path / CONFIG, lambda h: h.write(text), mode="w")


def _theta_arrays(stacked: PyTree) -> dict[str, np.ndarray]:
    """The npz arrays of a stacked theta (leaves ``[M, ...]``): ``theta`` or ``theta/<path>``."""
    flat = jax.tree_util.tree_flatten_with_path(stacked)[0]
    if len(flat) == 1 and not flat[0][0]:
        return {"theta": np.asarray(flat[0][1])}
    return {"theta/" + jax.tree_util.keystr(key).strip("[]'.").replace("']['", "/"): np.asarray(leaf)
            for key, leaf in flat}


class ThetaTrajectory:
    """The saved ``theta`` of every update, buffered in memory and flushed atomically
    (at checkpoints and at the end) to ``thetas.npz``.

    Thetas arrive in blocks (a chunk's updates at once); a flush stacks only the new ones.
    """

    def __init__(self, path: pathlib.Path):
        self.file = path / THETAS
        self.iterations: list[int] = []
        self._pending: list[dict[str, np.ndarray]] = []
        self._stacked: dict[str, np.ndarray] = {}

    def extend(self, iterations, stacked: PyTree) -> None:
        """Buffer the thetas of ``iterations`` ``[M]``: ``stacked`` has leaves ``[M, ...]``."""
        iterations = np.asarray(iterations, np.int64).tolist()
        if iterations:
            self.iterations += iterations
            self._pending.append(_theta_arrays(stacked))

    def append(self, iteration: int, theta: PyTree) -> None:
        """Buffer one ``theta`` (host or device arrays)."""
        self.extend([iteration], jax.tree_util.tree_map(lambda x: np.asarray(x)[None], theta))

    def truncate(self, iteration: int, template: PyTree) -> None:
        """Load the saved trajectory up to ``iteration`` (for a resumed run)."""
        iterations, thetas = load_thetas(self.file.parent, template)
        keep = [i for i, it in enumerate(iterations) if it <= iteration]
        self.iterations, self._pending, self._stacked = [], [], {}
        if keep:
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[thetas[i] for i in keep])
            self.extend(iterations[keep], stacked)

    def flush(self, writer=None) -> None:
        """Write the trajectory (``writer``: a :class:`nres.checkpoint.BackgroundWriter`
        that writes the file later; the arrays are taken now)."""
        if not self.iterations:
            return
        if self._pending:
            blocks = ([self._stacked] if self._stacked else []) + self._pending
            self._stacked = {k: np.concatenate([block[k] for block in blocks]) for k in blocks[0]}
            self._pending = []
        arrays = {"iteration": np.asarray(self.iterations, np.int64), **self._stacked}
        job = lambda: atomic_write(self.file, lambda h: np.savez(h, **arrays))
        writer.submit(job) if writer is not None else job()


def load_thetas(path: str | pathlib.Path, template: PyTree) -> tuple[np.ndarray, list[PyTree]]:
    """The saved trajectory as ``(iterations [M], [theta_1, ..., theta_M])``."""
    file = pathlib.Path(path) / THETAS
    if not file.is_file():
        return np.zeros((0,), np.int64), []
    try:
        with np.load(file, allow_pickle=False) as data:
            iterations = data["iteration"]
            leaves_by_name = {k: data[k] for k in data.files if k != "iteration"}
    except Exception as err:  # zip, key and format errors all mean an unreadable file
        raise RunDirError(f"{str(file)!r} is unreadable: {err}") from None
    names = list(_theta_arrays(jax.tree_util.tree_map(lambda x: np.asarray(x)[None], template)))
    treedef = jax.tree_util.tree_structure(template)
    if iterations.ndim != 1 or set(names) != set(leaves_by_name):
        raise RunDirError(f"{str(file)!r} holds {sorted(leaves_by_name)}, this run's theta is {names}")
    for name, want in zip(names, jax.tree_util.tree_leaves(template)):
        got = leaves_by_name[name]
        if got.shape != (len(iterations), *want.shape) or got.dtype != np.dtype(want.dtype):
            raise RunDirError(f"{str(file)!r} array {name!r} is {got.dtype}{list(got.shape)}, this run "
                              f"needs {np.dtype(want.dtype)}{[len(iterations), *want.shape]}")
    thetas = [
        jax.tree_util.tree_unflatten(treedef, [leaves_by_name[name][m] for name in names])
        for m in range(len(iterations))
    ]
    return iterations, thetas


def _crc32c_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table[byte] = crc
    return table


class _CRC32C:
    """CRC-32C of many records at once, using that the CRC is affine in the data bits.

    For records of ``L`` bytes, ``crc(data) = crc(L zero bytes) ^ XOR_p T_p[data[p]]``,
    where ``T_p[v]`` is the register change caused by byte value ``v`` at position ``p``:
    the XOR over the set bits ``b`` of ``v`` of ``table[1 << b]`` carried through the
    ``L - 1 - p`` bytes after it. The per-length tables are built once and cached, so a
    batch costs one lookup per byte, vectorised over the records.
    """

    def __init__(self):
        self.table = _crc32c_table()
        self.carried = self.table[1 << np.arange(8)][None]  # [distance, bit]
        self.cache: dict[int, tuple[np.ndarray, int]] = {}

    def _tables(self, length: int) -> tuple[np.ndarray, int]:
        if length not in self.cache:
            while len(self.carried) < length:
                last = self.carried[-1]
                step = self.table[last & 0xFF] ^ (last >> np.uint32(8))
                self.carried = np.concatenate([self.carried, step[None]])
            columns = self.carried[:length][::-1]  # [p, b]: carried L - 1 - p bytes
            bit_set = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # [v, b]
            tables = np.bitwise_xor.reduce(np.where(bit_set[None], columns[:, None, :], np.uint32(0)), axis=2)
            crc = 0xFFFFFFFF
            for _ in range(length):
                crc = int(self.table[crc & 0xFF]) ^ (crc >> 8)
            self.cache[length] = (tables, crc ^ 0xFFFFFFFF)  # tables [L, 256]
        return self.cache[length]

    def rows(self, data: np.ndarray) -> np.ndarray:
        """The CRC of each row of ``data`` (uint8 ``[n, L]``): uint32 ``[n]``."""
        length = data.shape[1]
        if length == 0:
            return np.zeros(len(data), np.uint32)
        tables, of_zeros = self._tables(length)
        # Positions where every row holds the same byte contribute the same change to each
        # CRC: looked up once, from the first row (events of a chunk differ in a few bytes).
        varying = np.any(data != data[:1], axis=0)
        same = np.flatnonzero(~varying)
        base = np.bitwise_xor.reduce(tables[same, data[0, same]]) ^ np.uint32(of_zeros)
        columns = np.flatnonzero(varying)
        return np.bitwise_xor.reduce(tables[columns, data[:, columns]], axis=1) ^ base

    def __call__(self, records: list[bytes]) -> np.ndarray:
        out = np.zeros(len(records), np.uint32)
        by_length: dict[int, list[int]] = {}
        for index, record in enumerate(records):
            by_length.setdefault(len(record), []).append(index)
        for length, indices in by_length.items():
            data = np.frombuffer(b"".join(records[i] for i in indices), np.uint8).reshape(len(indices), length)
            out[indices] = self.rows(data)
        return out


_crc32c = None  # built on first use (importing nres stays cheap)


def _crc() -> _CRC32C:
    global _crc32c
    if _crc32c is None:
        _crc32c = _CRC32C()
    return _crc32c


def _mask(crc: np.ndarray) -> np.ndarray:
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def masked_crc32c(records: list[bytes]) -> np.ndarray:
    """The masked CRC-32C of each record (the TFRecord checksum), ``uint32`` ``[len(records)]``."""
    return _mask(_crc()(records))


@functools.lru_cache(maxsize=64)
def _length_header(length: int) -> bytes:
    """A record's length and its masked CRC (12 bytes)."""
    header = length.to_bytes(8, "little")
    return header + masked_crc32c([header]).astype("<u4").tobytes()


def tfrecord_rows(payloads: np.ndarray) -> bytes:
    """TFRecord framing of the rows of ``payloads`` (uint8 ``[n, L]``, records of one
    length), computed as one array: as :func:`tfrecords` of the rows as bytes."""
    n, length = payloads.shape
    framed = np.empty((n, 16 + length), np.uint8)
    framed[:, :12] = np.frombuffer(_length_header(length), np.uint8)
    framed[:, 12:12 + length] = payloads
    framed[:, 12 + length:] = _mask(_crc().rows(payloads)).astype("<u4").view(np.uint8).reshape(n, 4)
    return framed.tobytes()


def tfrecords(payloads: list[bytes]) -> bytes:
    """TFRecord framing of ``payloads``: length, its masked CRC, data, its masked CRC."""
    if not payloads:
        return b""
    data_crcs = masked_crc32c(payloads).tolist()
    return b"".join([_length_header(len(p)) + p + crc.to_bytes(4, "little") for p, crc in zip(payloads, data_crcs)])


def _varint_rows(values: np.ndarray) -> list[tuple[slice, np.ndarray]]:
    """Protobuf varints of non-negative ``values`` ``[n]``: per run of consecutive values
    whose varints have one width ``w``, ``(its slice, uint8 [run, w])``."""
    values = np.asarray(values, np.uint64)
    widths = 1 + np.sum(values[:, None] >> (7 * np.arange(1, 10, dtype=np.uint64)) > 0, axis=1)
    starts = np.flatnonzero(np.diff(widths, prepend=-1))
    runs = []
    for start, stop in zip(starts, [*starts[1:], len(values)]):
        width, run = int(widths[start]), values[start:stop, None]
        digits = ((run >> (7 * np.arange(width, dtype=np.uint64))) & np.uint64(0x7F)).astype(np.uint8)
        digits[:, :-1] |= 0x80
        runs.append((slice(int(start), int(stop)), digits))
    return runs


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_STEP_KEY = b"\x10"  # the key of Event.step (field 2, a varint)


def _field_head(number: int, length: int) -> bytes:
    """The key and length of a length-delimited protobuf field of ``length`` bytes."""
    return _varint(number << 3 | 2) + _varint(length)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _field_head(number, len(payload)) + payload


class TensorBoardLog:
    """Scalars as TensorBoard event files (TFRecords of ``Event`` protos; no TensorFlow).

    One event per logged row carries all of its scalars; :meth:`scalars` writes a whole
    chunk of rows in one write. ``purge_step`` (a resumed run) tells TensorBoard to drop
    the earlier files' events from that step on, as ``SummaryWriter(purge_step=...)`` does.

    Events are encoded directly in the protobuf wire format of TensorBoard's
    ``event.proto`` (``Event``: ``wall_time`` = 1, ``step`` = 2, ``file_version`` = 3,
    ``summary`` = 5, ``session_log`` = 7; ``Summary.value`` = 1; ``Value``: ``tag`` = 1,
    ``simple_value`` = 2; ``SessionLog.status`` = 1, ``START`` = 1): the events
    tensorboardX's ``SummaryWriter`` writes, without importing it and at a small fraction
    of the cost of its ``add_scalar``.
    """

    def __init__(self, path: pathlib.Path, purge_step: int | None = None):
        import os
        import socket
        import time

        directory = path / TENSORBOARD
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.file = open(directory / name, "ab")
        self._encoders: dict[tuple, Any] = {}
        version = _field(3, b"brain.Event:2")  # Event.file_version
        first = [self._head(time.time()) + version]
        if purge_step is not None:  # Event(step, file_version), Event(step, session_log=SessionLog(status=START))
            first += [self._head(time.time(), purge_step) + version,
                      self._head(time.time(), purge_step) + _field(7, b"\x08\x01")]
        self._write(first)

    @staticmethod
    def _head(wall_time: float, step: int | None = None) -> bytes:
        """``Event.wall_time`` (field 1, double) and ``Event.step`` (field 2, varint)."""
        head = b"\x09" + struct.pack("<d", wall_time)
        return head if step is None else head + _STEP_KEY + _varint(step % (1 << 64))

    def _write(self, payloads: list[bytes]) -> None:
        self.file.write(tfrecords(payloads))
        self.file.flush()

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _value_heads(keys: tuple, prefix: str) -> tuple[bytes, ...]:
        """Per key, the bytes of its ``Summary.value`` entry before the float: the entry's
        key and length, ``Value.tag``, and the key of ``Value.simple_value``."""
        heads = []
        for key in keys:
            value_head = _field(1, f"{prefix}/{key}".encode()) + b"\x15"
            heads.append(b"\x0a" + _varint(len(value_head) + 4) + value_head)
        return tuple(heads)

    def _encoder(self, keys: tuple, prefix: str):
        """For rows with these keys: a packer of their ``Summary``."""
        heads = self._value_heads(keys, prefix)
        layout = struct.Struct("<" + "".join(f"{len(h)}sf" for h in heads))
        return lambda values: layout.pack(*[x for pair in zip(heads, values) for x in pair])

    def columns(self, iterations: np.ndarray, values: dict[str, np.ndarray], prefix: str) -> None:
        """As :meth:`scalars` for rows given as columns (``iterations`` ``[n]``, each value
        ``[n]``) whose values are all finite: the events are built as arrays, one per run
        of iterations whose step varints have one width (no Python work per row)."""
        import time

        heads = self._value_heads(tuple(values), prefix)
        layout = np.dtype([field for i, head in enumerate(heads) for field in ((f"h{i}", f"S{len(head)}"),
                                                                             (f"v{i}", "<f4"))])
        packed = np.empty(len(iterations), layout)
        for i, (head, column) in enumerate(zip(heads, values.values())):
            packed[f"h{i}"], packed[f"v{i}"] = head, column
        summaries = packed.view(np.uint8).reshape(len(iterations), layout.itemsize)
        # Event: wall_time, step (key, varint), summary (key, length, the packed Summary)
        head = np.frombuffer(self._head(time.time()) + _STEP_KEY, np.uint8)
        key = np.frombuffer(_field_head(5, layout.itemsize), np.uint8)
        records = []
        for rows, steps in _varint_rows(iterations):
            parts = (np.broadcast_to(head, (len(steps), len(head))), steps,
                     np.broadcast_to(key, (len(steps), len(key))), summaries[rows])
            records.append(tfrecord_rows(np.concatenate(parts, axis=1)))
        self.file.write(b"".join(records))
        self.file.flush()

    def scalars(self, rows: dict[str, Any] | list[dict[str, Any]], prefix: str) -> None:
        """Log every numeric field of each row (one row or a list) under ``prefix/``, at step ``iteration``."""
        import time

        now = time.time()
        payloads = []
        for row in [rows] if isinstance(rows, dict) else rows:
            keys = tuple(k for k, v in row.items()  # finite numbers only: TensorBoard rejects NaN and infinities
                         if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v))
            encode = self._encoders.get((prefix, keys))
            if encode is None:
                encode = self._encoders[(prefix, keys)] = self._encoder(keys, prefix)
            summary = encode([row[k] for k in keys])
            payloads.append(self._head(now, row["iteration"]) + _field(5, summary))
        self._write(payloads)

    def close(self) -> None:
        self.file.close()

"""TensorBoard event files written directly: TFRecord framing, CRC-32C and the protobuf
wire format of ``Event`` (no TensorFlow, no tensorboardX).

:class:`TensorBoardLog` writes scalars of rows (:meth:`TensorBoardLog.scalars`) or of
whole chunks given as columns (:meth:`TensorBoardLog.columns`, built as arrays).
:func:`tfrecords` and :func:`masked_crc32c` are the file framing and its checksum.
"""

from __future__ import annotations

import functools
import math
import pathlib
import struct
from typing import Any

import numpy as np

DIRECTORY = "tensorboard"


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

        directory = path / DIRECTORY
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

"""Megatron-LM indexed datasets (`.bin` + `.idx`, the MMIDIDX format), writer and memory-mapped reader.

This is the hand-off between the corpus builder and the trainer, and the format MEDITRON's
Megatron-LLM trained on. Layout of the `.idx` file (little-endian):

    9 bytes   magic b"MMIDIDX\\x00\\x00"
    uint64    version (1)
    uint8     dtype code (Megatron's table: 1 uint8 … 4 int32, 5 int64, 8 uint16)
    uint64    number of sequences
    uint64    number of entries in doc_idx (documents + 1)
    int32[n]  sequence sizes in tokens
    int64[n]  byte offset of each sequence in the `.bin`
    int64[d]  doc_idx: index of the first sequence of each document, starting with 0

The `.bin` is the concatenated token ids. Here one sequence is one document.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from meditron.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float64, 8: np.uint16,
}
CODE_OF = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
           np.dtype(np.int64): 5, np.dtype(np.uint16): 8}


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype Megatron uses for this vocabulary (uint16 below 65,500 tokens)."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")


class IndexedDatasetWriter:
    """Append documents (token id sequences) and write `PREFIX.bin` / `PREFIX.idx`.

    Files are written to temporary names and renamed on `close()`, so a crash never leaves a
    half-written shard that looks complete.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type = np.uint16):
        self.bin_path, self.idx_path = paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF:
            raise DataError(f"token dtype {self.dtype} is not a Megatron index dtype")
        self._tmp_bin = self.bin_path.with_suffix(".bin.tmp")
        self._bin = open(self._tmp_bin, "wb")
        self._sizes: list[int] = []
        self._doc_idx: list[int] = [0]

    def add_document(self, tokens) -> None:
        arr = np.asarray(tokens, dtype=self.dtype)
        self._bin.write(arr.tobytes(order="C"))
        self._sizes.append(arr.size)
        self._doc_idx.append(len(self._sizes))

    def close(self) -> None:
        self._bin.close()
        sizes = np.asarray(self._sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        tmp_idx = self.idx_path.with_suffix(".idx.tmp")
        with open(tmp_idx, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", VERSION))
            f.write(struct.pack("<B", CODE_OF[self.dtype]))
            f.write(struct.pack("<Q", len(sizes)))
            f.write(struct.pack("<Q", len(self._doc_idx)))
            f.write(sizes.tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(np.asarray(self._doc_idx, dtype=np.int64).tobytes(order="C"))
        os.replace(self._tmp_bin, self.bin_path)
        os.replace(tmp_idx, self.idx_path)

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._bin.close()
            self._tmp_bin.unlink(missing_ok=True)


class IndexedDataset:
    """Memory-mapped reader: `ds[i]` is the token array of sequence i; `len(ds)` sequences."""

    def __init__(self, prefix: str | os.PathLike):
        self.bin_path, self.idx_path = paths(prefix)
        for p in (self.bin_path, self.idx_path):
            if not p.exists():
                raise DataError(f"indexed dataset file {p} is missing; build it with `meditron corpus build`")
        with open(self.idx_path, "rb") as f:
            if f.read(9) != MAGIC:
                raise DataError(f"{self.idx_path} is not a Megatron MMIDIDX index (bad magic)")
            (version,) = struct.unpack("<Q", f.read(8))
            if version != VERSION:
                raise DataError(f"{self.idx_path}: index version {version} is not supported (expected 1)")
            (code,) = struct.unpack("<B", f.read(1))
            if code not in DTYPE_CODES:
                raise DataError(f"{self.idx_path}: unknown dtype code {code}")
            self.dtype = np.dtype(DTYPE_CODES[code])
            (n,) = struct.unpack("<Q", f.read(8))
            (n_doc,) = struct.unpack("<Q", f.read(8))
            offset = f.tell()
        idx = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(idx, dtype=np.int32, count=n, offset=offset)
        self.pointers = np.frombuffer(idx, dtype=np.int64, count=n, offset=offset + self.sizes.nbytes)
        self.doc_idx = np.frombuffer(
            idx, dtype=np.int64, count=n_doc, offset=offset + self.sizes.nbytes + self.pointers.nbytes
        )
        self._bin = (
            np.memmap(self.bin_path, mode="r", dtype=self.dtype) if self.bin_path.stat().st_size
            else np.zeros(0, dtype=self.dtype)
        )
        expected = int(self.sizes.astype(np.int64).sum())
        if self._bin.size != expected:
            raise DataError(
                f"{self.bin_path} holds {self._bin.size} tokens but its index says {expected}; rebuild the shard"
            )

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self._bin[start:start + int(self.sizes[i])]

    @property
    def n_tokens(self) -> int:
        return int(self._bin.size)

    def tokens(self) -> np.ndarray:
        """All tokens, concatenated (a memory map, not a copy)."""
        return self._bin

"""Generation shards: one ZIP file per shard, images stored uncompressed, plus their metadata.

Why ZIP: a shard must be one file (3.4M loose images would break inode quotas on cluster file
systems), readable by any tool (``unzip -l``), and give O(1) random access to a row for training.
ZIP's central directory maps each member name to its byte offset, so after one parse per open
file a read is a seek plus a read; PNG/JPEG are already compressed, so members are stored, not
deflated. A tar would need a separate offset index; Parquet row groups make single-row reads
cost a whole group.

Layout of ``shard-NNNNN.zip``: ``<id>.<ext>`` per image, and ``metadata.parquet`` with one row
per image (the prompt table's columns, ``member``, the sampler settings, the model fingerprint,
the device, the package versions and the safety checker's flag; see generate.py).
"""

import io
import os
import struct
import zipfile

from contamination.io import atomic_path
from contamination.formats import parse_uri

METADATA_MEMBER = "metadata.parquet"


def write_shard(path, images, metadata) -> None:
    """Write ``images`` (iterable of ``(member, encoded bytes)``) and the ``metadata`` DataFrame.

    ``images`` may be a generator that makes the images as they are written, so a shard never
    has to fit in memory; ``metadata`` may then be a function called once they are all written
    (for columns known only after generation). The file appears under ``path`` only once complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            for member, data in images:
                archive.writestr(fixed_time_info(member), data)
            if callable(metadata):
                metadata = metadata()
            buffer = io.BytesIO()
            table = pa.Table.from_pandas(metadata, preserve_index=False).replace_schema_metadata(None)
            pq.write_table(table, buffer, compression="zstd")
            archive.writestr(fixed_time_info(METADATA_MEMBER), buffer.getvalue())


def fixed_time_info(member: str) -> zipfile.ZipInfo:
    # A fixed timestamp keeps shards byte-identical across reruns with the same inputs.
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def read_metadata(path):
    import pandas as pd

    with zipfile.ZipFile(path) as archive:
        return pd.read_parquet(io.BytesIO(archive.read(METADATA_MEMBER)))


class ShardReader:
    """Random access to shard members without keeping shards open.

    Each shard's central directory is parsed once per process into {member: (offset, size)}; a
    read then opens the file, reads the member's local header and its bytes with ``os.pread``,
    and closes it. Keeping every shard open instead would cost a file descriptor and about
    0.5 MiB per shard in every DataLoader worker: SD-ImageNet's 1,400 shards exceed common
    open-file limits. ``pread`` has no shared file position, and the table is rebuilt in a
    forked worker, so workers never interfere.
    """

    LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # the 30-byte ZIP local file header

    def __init__(self):
        self._members = {}
        self._pid = os.getpid()

    def read(self, path, member: str) -> bytes:
        if os.getpid() != self._pid:
            self._members, self._pid = {}, os.getpid()
        members = self._members.get(path)
        if members is None:
            with zipfile.ZipFile(path) as archive:
                members = {
                    info.filename: (info.header_offset, info.compress_size)
                    for info in archive.infolist()
                    if info.compress_type == zipfile.ZIP_STORED
                }
            self._members[path] = members
        offset, size = members[member]
        descriptor = os.open(path, os.O_RDONLY)
        try:
            header = self.LOCAL_HEADER.unpack(os.pread(descriptor, self.LOCAL_HEADER.size, offset))
            name_length, extra_length = header[-2:]
            return os.pread(descriptor, size, offset + self.LOCAL_HEADER.size + name_length + extra_length)
        finally:
            os.close(descriptor)


_reader = ShardReader()


def read_item(uri: str) -> bytes:
    """The encoded bytes of an item: a plain file path or a ``zip://shard#member`` URI."""
    path, member = parse_uri(uri)
    if member is None:
        with open(path, "rb") as handle:
            return handle.read()
    return _reader.read(path, member)

"""rosbag2 containers (sqlite3 and mcap) in and out, with ``rosbags`` (rosbag2_py is not on PyPI).

Messages stay serialized (CDR bytes as rosbag2 stores them): the tools deserialize with rclpy, so what
they hand to the node's code is exactly what a subscriber receives, and copying a message into another
bag is a byte copy.

Reading survives damaged bags. A bag that ``rosbags`` cannot open (a recording killed before it wrote
``metadata.yaml``, an mcap file without its summary or footer, a truncated sqlite3 file) is scanned from
its first byte instead: messages are yielded up to the first unreadable record, then ``BagTruncated``
says where reading stopped (byte offset for mcap, row for sqlite3) and why.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from m2a_core.errors import M2AError

MCAP_MAGIC = b"\x89MCAP0\r\n"
STORAGES = ("mcap", "sqlite3")


class BagError(M2AError):
    """A bag that cannot be read at all (missing, not a rosbag2 bag, no readable message)."""


class BagTruncated(M2AError):
    """Reading stopped at a damaged or missing part of the bag; the messages before it were delivered."""

    def __init__(self, position: str, reason: str) -> None:
        super().__init__(f"bag unreadable from {position}: {reason}")
        self.position = position
        self.reason = reason


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str          # e.g. sensor_msgs/msg/Image
    log_time: int         # nanoseconds (the bag's receive time)
    data: bytes           # CDR, as stored


@dataclass
class Bag:
    """An opened bag: its topics and a way to stream their messages in storage order."""

    path: Path
    storage: str                                   # mcap or sqlite3
    topics: dict[str, str]                         # topic -> msgtype
    counts: dict[str, int | None] = field(default_factory=dict)   # None where unknown (scanned bags)
    scanned: bool = False                          # True: read by scanning (no usable index or metadata)
    open_problem: str | None = None                # why the indexed reader could not open it

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        wanted = set(topics)
        unknown = wanted - set(self.topics)
        if unknown:
            raise BagError(f"{self.path}: no topic {sorted(unknown)[0]!r} in this bag; it has "
                           + (", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "no topics"))
        if not self.scanned:
            yield from _indexed_messages(self.path, wanted)
        elif self.storage == "mcap":
            yield from _scan_mcap(_storage_file(self.path, ".mcap"), wanted)
        else:
            yield from _scan_sqlite(_storage_file(self.path, ".db3"), wanted)


def open_bag(path: str | os.PathLike) -> Bag:
    """A rosbag2 folder (or a lone .mcap/.db3 file); damaged bags open in scanning mode."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    problem = None
    if path.is_dir() and (path / "metadata.yaml").is_file():
        try:
            with Reader(path) as reader:
                topics = {c.topic: c.msgtype for c in reader.connections}
                counts: dict[str, int | None] = {}
                for connection in reader.connections:
                    counts[connection.topic] = (counts.get(connection.topic) or 0) + connection.msgcount
                storage = _storage_of(path)
                return Bag(path, storage, topics, counts)
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            problem = str(exc)
    elif path.is_dir():
        problem = "no metadata.yaml (recording interrupted?)"
    else:
        problem = "a lone storage file (no metadata.yaml beside it)"
    storage = _storage_of(path)
    file = _storage_file(path, ".mcap" if storage == "mcap" else ".db3")
    topics = _scan_mcap_topics(file) if storage == "mcap" else _sqlite_topics(file)
    return Bag(path, storage, topics, {t: None for t in topics}, scanned=True, open_problem=problem)


def _storage_of(path: Path) -> str:
    files = [path] if path.is_file() else sorted(path.iterdir())
    if any(f.suffix == ".mcap" for f in files):
        return "mcap"
    if any(f.suffix == ".db3" for f in files):
        return "sqlite3"
    raise BagError(f"{path} is not a rosbag2 bag: no .mcap or .db3 file")


def _storage_file(path: Path, suffix: str) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob(f"*{suffix}"))
    if len(files) != 1:
        raise BagError(f"{path}: a damaged bag is read only when it has one {suffix} file, found {len(files)}")
    return files[0]


def _indexed_messages(path: Path, topics: set[str]) -> Iterator[BagMessage]:
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    count = 0
    try:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            for connection, log_time, data in reader.messages(connections=connections):
                yield BagMessage(connection.topic, connection.msgtype, log_time, bytes(data))
                count += 1
    except (ReaderError, OSError, ValueError, struct.error, sqlite3.DatabaseError) as exc:
        raise BagTruncated(f"message {count} of the selected topics", str(exc) or type(exc).__name__) from None


# mcap scanning (https://mcap.dev/spec): magic, then records of opcode u8, length u64, content.

def _read_string(record: BytesIO) -> str:
    (size,) = struct.unpack("<I", record.read(4))
    return record.read(size).decode()


def _mcap_records(file: Path) -> Iterator[tuple[int, int, bytes, bool]]:
    """(opcode, file offset, content, complete) of every top-level record up to the footer.

    A record cut off by the end of the file comes last with ``complete`` False (an uncompressed chunk
    still holds whole messages); a file that ends elsewhere raises ``BagTruncated``.
    """
    with open(file, "rb") as handle:
        if handle.read(8) != MCAP_MAGIC:
            raise BagError(f"{file} is not an mcap file (bad magic)")
        while True:
            offset = handle.tell()
            head = handle.read(9)
            if not head:
                raise BagTruncated(f"byte {offset} of {file.name}", "file ends without the mcap footer")
            if len(head) < 9:
                raise BagTruncated(f"byte {offset} of {file.name}", "file ends inside a record header")
            opcode, size = struct.unpack("<BQ", head)
            content = handle.read(size)
            if opcode == 0x02:  # footer: the file is complete
                return
            yield opcode, offset, content, len(content) == size
            if len(content) < size:
                raise BagTruncated(f"byte {offset} of {file.name}",
                                   f"record of {size} bytes cut off after {len(content)} (file truncated)")


def _mcap_inner_records(opcode: int, content: bytes, complete: bool) -> Iterator[tuple[int, bytes]]:
    """Top-level records, with chunks opened into the records they hold (the whole ones of a cut-off chunk)."""
    if opcode != 0x06:
        if complete:
            yield opcode, content
        return
    from rosbags.rosbag2.storage_mcap import decompress

    record = BytesIO(content)
    _, _, uncompressed_size, crc = struct.unpack("<QQQI", record.read(28))
    compression = _read_string(record)
    (compressed_size,) = struct.unpack("<Q", record.read(8))
    if complete:
        data = decompress(record.read(compressed_size), compression, uncompressed_size, crc)
    elif compression == "":
        data = record.read(compressed_size)
    else:
        return  # a cut-off compressed chunk cannot be decompressed
    position = 0
    while position + 9 <= len(data):
        inner_opcode, size = struct.unpack_from("<BQ", data, position)
        if position + 9 + size > len(data):
            return
        yield inner_opcode, data[position + 9:position + 9 + size]
        position += 9 + size


def _scan_mcap_stream(file: Path, topics: set[str] | None) -> Iterator[BagMessage]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    for opcode, offset, content, complete in _mcap_records(file):
        try:
            for inner_opcode, inner in _mcap_inner_records(opcode, content, complete):
                if inner_opcode == 0x03:
                    record = BytesIO(inner)
                    (schema_id,) = struct.unpack("<H", record.read(2))
                    schemas[schema_id] = _read_string(record)
                elif inner_opcode == 0x04:
                    record = BytesIO(inner)
                    channel_id, schema_id = struct.unpack("<HH", record.read(4))
                    channels[channel_id] = (_read_string(record), schemas.get(schema_id, ""))
                    if topics is None:
                        yield BagMessage(channels[channel_id][0], channels[channel_id][1], -1, b"")
                elif inner_opcode == 0x05 and topics is not None:
                    channel_id, _, log_time, _ = struct.unpack("<HIQQ", inner[:22])
                    topic, msgtype = channels.get(channel_id, ("", ""))
                    if topic in topics:
                        yield BagMessage(topic, msgtype, log_time, inner[22:])
        except Exception as exc:  # any decoding failure inside a complete record means a damaged record
            raise BagTruncated(f"byte {offset} of {file.name}", f"damaged record: {exc}") from None


def _scan_mcap(file: Path, topics: set[str]) -> Iterator[BagMessage]:
    yield from _scan_mcap_stream(file, topics)


def _scan_mcap_topics(file: Path) -> dict[str, str]:
    topics: dict[str, str] = {}
    try:
        for message in _scan_mcap_stream(file, None):
            topics[message.topic] = message.msgtype
    except BagTruncated:
        pass  # the channels before the damage are the bag's readable topics
    if not topics:
        raise BagError(f"{file}: no readable topic (damaged before its first channel record)")
    return topics


# sqlite3 scanning: the rosbag2 schema's topics and messages tables, row by row.

def _connect(file: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{file}?mode=ro", uri=True)


def _sqlite_topics(file: Path) -> dict[str, str]:
    try:
        with _connect(file) as db:
            return {name: kind for name, kind in db.execute("SELECT name, type FROM topics")}
    except sqlite3.DatabaseError as exc:
        raise BagError(f"{file}: cannot read its topics table: {exc}") from None


def _scan_sqlite(file: Path, topics: set[str]) -> Iterator[BagMessage]:
    row = 0
    try:
        with _connect(file) as db:
            ids = {topic_id: (name, kind) for topic_id, name, kind in db.execute("SELECT id, name, type FROM topics")
                   if name in topics}
            cursor = db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
            for topic_id, log_time, data in cursor:
                row += 1
                if topic_id in ids:
                    yield BagMessage(ids[topic_id][0], ids[topic_id][1], int(log_time), bytes(data))
    except sqlite3.DatabaseError as exc:
        raise BagTruncated(f"row {row} of {file.name}", str(exc)) from None


# Writing -----------------------------------------------------------------------------------------------


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def _register_from_share(typestore, msgtype: str) -> None:
    """Message types rosbags does not ship (e.g. vision_msgs): their .msg files from the ROS install."""
    from rosbags.typesys import get_types_from_msg

    pending, seen = [msgtype.split("/")[0]], set()
    while pending:
        package = pending.pop()
        if package in seen:
            continue
        seen.add(package)
        for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
            folder = Path(prefix) / "share" / package / "msg"
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.msg")):
                text = file.read_text()
                typestore.register(get_types_from_msg(text, f"{package}/msg/{file.stem}"))
                pending += [word.split("/")[0] for word in text.split() if word.count("/") == 1 and
                            word.split("/")[0].endswith("_msgs")]
            break


class BagWriter:
    """A rosbag2 bag written message by message (serialized data), topics added on first use.

    Written under ``.<name>.partial/<name>`` beside ``path`` and moved to ``path`` on close, so an existing
    bag at ``path`` is replaced only by a complete one (and the storage file keeps the bag's name);
    ``close`` runs on errors too (what was written is kept).
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap", compress: bool = False) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        if storage not in STORAGES:
            raise M2AError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if compress and storage != "mcap":
            raise M2AError("compression is available for mcap bags (zstd chunks), not sqlite3")
        self.path = Path(path)
        self.partial_root = self.path.parent / f".{self.path.name}.partial"
        if self.partial_root.exists():
            shutil.rmtree(self.partial_root)
        self.partial_root.mkdir(parents=True)
        self.partial = self.partial_root / self.path.name
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.partial, version=9, storage_plugin=plugin)
        if compress:  # zstd chunks inside the mcap file, as 'ros2 bag record' writes by default
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.writer.open()
        self.typestore = _typestore()
        self.connections: dict[str, object] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, log_time: int, data: bytes) -> None:
        connection = self.connections.get(topic)
        if connection is None:
            if msgtype not in self.typestore.fielddefs:
                _register_from_share(self.typestore, msgtype)
            if msgtype not in self.typestore.fielddefs:
                raise M2AError(f"no message definition for {msgtype} (topic {topic}): source the ROS workspace "
                               "that has it (AMENT_PREFIX_PATH)")
            connection = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.connections[topic] = connection
        self.writer.write(connection, log_time, data)
        self.count += 1

    def close(self) -> Path:
        self.writer.close()
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)
        shutil.rmtree(self.partial_root)
        return self.path

    def abort(self) -> None:
        """Stop writing and keep nothing: an existing bag at ``path`` stays as it was."""
        try:
            self.writer.close()
        finally:
            shutil.rmtree(self.partial_root, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

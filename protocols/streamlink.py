"""PNS messages on a Unix stream socket, as an asyncio protocol: the link under the daemon's
stream door (:mod:`pnsd.streamdoor`) and its client (:mod:`protocols.streamclient`).

The records are those of the stdio transport (:mod:`protocols.stdioframe`; SPEC.md, "The stream
door"). :class:`RecordReader` hands the event loop the buffers to read into, so that a record's
bytes are copied once, by the kernel: small records land in a scratch buffer and their frames
are copied out (cheaper than keeping views of small frames), a record too large for the scratch
is read straight into a buffer of its own whose large frames the receiver gets as views.
:class:`RecordLink` is the protocol both ends use: it cuts records, hands each message's frames
to its owner, and writes a message as few pieces as it can without copying a large frame.
Python 3.8 compatible.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional, Sequence, cast

from protocols.stdioframe import LENGTH, FramingError, record_size, split_record

VIEW_FROM = 64 * 1024     # frames at least this large travel as views (as protocols.pump's)
SCRATCH = 256 * 1024      # the buffer small records are read into


def door_path(ipc_endpoint: str) -> str:
    """The socket file of the stream door beside ``ipc_endpoint``: ``ipc://P`` -> ``P.stream``."""
    if not ipc_endpoint.startswith("ipc://"):
        raise ValueError("only an ipc:// endpoint has a stream door: %r" % ipc_endpoint)
    return ipc_endpoint[len("ipc://"):] + ".stream"


class RecordReader:
    """Buffers for a stream of records, and the messages they complete.

    ``limit`` bounds a record's length (the message limit plus ``stdioframe.SLACK``): a longer
    one is refused as soon as its length is read, before a byte of it is buffered.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._scratch = bytearray(SCRATCH)
        self._view = memoryview(self._scratch)
        self._start = 0     # the first byte of the scratch not yet cut into a record
        self._end = 0       # the end of the bytes read into the scratch
        self._record: Optional[bytearray] = None    # a large record being read into its own
        self._got = 0       # bytes of it read so far

    def pending(self) -> int:
        """Bytes of a record begun and not finished."""
        return self._got if self._record is not None else self._end - self._start

    def buffer(self) -> memoryview:
        """Where the next bytes read go (never empty)."""
        if self._record is not None:
            return memoryview(self._record)[self._got:]
        return self._view[self._end:]

    def received(self, count: int) -> List[List[Any]]:
        """The messages completed by ``count`` more bytes read into :meth:`buffer`; raise
        FramingError on a broken stream."""
        record = self._record
        if record is not None:
            self._got += count
            if self._got < len(record):
                return []
            self._record = None
            return [split_record(memoryview(record), views=VIEW_FROM)]
        self._end += count
        messages = []     # type: List[List[Any]]
        while True:
            start, end = self._start, self._end
            size = record_size(self._view, start, end, self.limit)
            if size < 0:
                break
            stop = start + LENGTH.size + size
            if stop <= end:      # whole in the scratch: its frames are copied out
                messages.append(split_record(self._view[start + LENGTH.size:stop]))
                self._start = stop
                continue
            if stop - start > SCRATCH:   # too large for the scratch: read into its own buffer
                record = bytearray(size)
                have = end - start - LENGTH.size
                record[:have] = self._view[start + LENGTH.size:end]
                self._record, self._got = record, have
                self._start = self._end = 0
                return messages
            break
        self._compact()
        return messages

    def _compact(self) -> None:
        """Move a record begun at the scratch's end to its front, so that it fits whole."""
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
        elif end == SCRATCH or start > SCRATCH // 2:
            partial = bytes(self._view[start:end])
            self._scratch[:len(partial)] = partial
            self._start, self._end = 0, len(partial)


def record_pieces(frames: Sequence[Any]) -> List[Any]:
    """One message's record as pieces to write in order: the small parts joined, each large
    frame a piece of its own (not copied)."""
    pieces = []     # type: List[Any]
    run = [b""]     # the record's length goes in front once it is known
    total = 0
    for frame in frames:
        size = len(frame)
        total += LENGTH.size + size
        run.append(LENGTH.pack(size))
        if size < VIEW_FROM:
            run.append(frame)
        else:
            pieces.append(b"".join(run))
            pieces.append(frame)
            run = []
    if run:
        pieces.append(b"".join(run))
    pieces[0] = LENGTH.pack(total) + pieces[0]
    return pieces


Deliver = Callable[[List[Any]], None]


class RecordLink(asyncio.BufferedProtocol):
    """One end of a stream of records: ``deliver`` gets each message's frames, ``broken`` the
    error of a stream that breaks the layout (the link is then closed), ``lost`` is called once
    when the connection ends."""

    def __init__(self, limit: int, deliver: Deliver, *,
                 broken: Callable[[FramingError], None],
                 lost: Callable[[Optional[BaseException]], None]) -> None:
        self.reader = RecordReader(limit)
        self._deliver = deliver
        self._broken = broken
        self._lost = lost
        self.transport: Optional[asyncio.Transport] = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            messages = self.reader.received(nbytes)
        except FramingError as exc:
            self._broken(exc)
            self.abort()
            return
        deliver = self._deliver
        for frames in messages:
            deliver(frames)

    def eof_received(self) -> bool:
        return False    # the peer is done: close our end too

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self._lost(exc)

    def send(self, frames: Sequence[Any]) -> None:
        """Write one message (after the link closed: dropped, as it has no one to go to)."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        for piece in record_pieces(frames):
            transport.write(piece)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the socket."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        """Close after what is written has gone out."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping what is not yet written."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

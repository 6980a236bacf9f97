"""The relayed and masked tracks end when aiortc stops their sender, whatever the track was waiting on.

aiortc stops a sender by cancelling the task that reads its track, then waits for that task to end. A
track that swallows the cancellation keeps its sender's task alive and the connection's ``close()``
never returns: a consult's end or a server's shutdown then hangs on it. Python 3.11's
``asyncio.wait_for`` swallows a cancellation that arrives in the same turn of the loop as the result
it waits for (a source track that just ended, when a patient's connection closes with the doctor's).
"""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proxy.consult.tracks import MaskedVideoTrack, SwitchableTrack


class EndingSource(MediaStreamTrack):
    """A source whose ``recv`` waits until told to end, then raises as an ended track does."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()
        self.end = asyncio.get_running_loop().create_future()

    async def recv(self) -> av.AudioFrame:
        self.waiting.set()
        await self.end
        raise MediaStreamError


async def test_a_relay_ends_when_cancelled_as_its_source_ends() -> None:
    """The doctor's audio relay is cancelled (its connection closes) in the same turn as the patient's audio
    ends (the patient's closes too): the relay's reader must end, not carry on with silence forever."""
    source: EndingSource | None = EndingSource()
    relay = SwitchableTrack("audio", lambda: source)
    reader = asyncio.create_task(relay.recv())
    assert source is not None
    await source.waiting.wait()
    await asyncio.sleep(0)  # the reader now waits on the source
    source.end.set_result(None)  # the source ends ...
    reader.cancel()  # ... and the reader is cancelled, in the same turn
    source = None  # the patient is gone: the relay would send silence from now on
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reader, 2.0)


async def test_the_masked_track_ends_when_cancelled_as_a_frame_arrives() -> None:
    """The masked stream's reader is cancelled in the same turn as the worker pushes a frame: it must end."""
    track = MaskedVideoTrack(lambda: av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24"),
                             stall_after=0.5)
    track.push(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24"))
    await track.recv()  # live from now on: the next recv waits for a frame
    reader = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    track.push(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24"))
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reader, 2.0)

"""An nbclient NotebookClient that never sits on a kernel reply it has missed (jupyter/nbclient#312).

nbclient 0.11 waits for a cell's execute reply with one long poll of the shell socket,
``shell_channel.get_msg(timeout=<the cell's whole timeout>)`` in ``_async_poll_for_reply``; its
``shell_timeout_interval`` trait is only read by the older ``wait_for_reply``, not on this path. The
poll is a zmq.asyncio future woken by the socket's file descriptor, which zmq signals on an edge:
when that wake-up is lost (reported for cells that open ipywidgets, and seen here with chapter 3's
loss_explorer), the reply sits in the socket, unread, until the cell's timeout ends the poll. The iopub channel is read
the same way, with no timeout at all, so a lost wake-up there costs the cell's last outputs.

PollingNotebookClient gives both channels a get_msg that polls in slices of POLL_S seconds until the
caller's timeout: a new poll checks the socket's pending events before it waits, so a missed reply
is read within a second, and a cell still times out after its own timeout, not later.
"""
from __future__ import annotations

from queue import Empty
from time import monotonic
from typing import Any, Awaitable, Callable, Dict, Optional

from nbclient import NotebookClient

POLL_S = 1.0  # how long one socket poll may wait: the most a missed message can be late

GetMsg = Callable[..., Awaitable[Dict[str, Any]]]


def polling(get_msg: GetMsg, poll_s: float = POLL_S) -> GetMsg:
    """get_msg(timeout) as short polls: the next message, or Empty once timeout seconds (None: never) passed."""
    async def get_msg_polling(timeout: Optional[float] = None) -> Dict[str, Any]:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = poll_s if deadline is None else max(0.0, deadline - monotonic())
            try:
                return await get_msg(timeout=min(poll_s, left))
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise
    return get_msg_polling


class PollingNotebookClient(NotebookClient):
    """A NotebookClient whose shell and iopub channels are polled every POLL_S seconds (see the module)."""

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = polling(channel.get_msg)
        return kc

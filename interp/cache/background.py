"""One background thread that handles items in the order they were submitted, with a bounded
queue: the cache writer's stages (hash, then write) run behind the forward pass through it.

The first failure stops the worker: the items still waiting are dropped unhandled, and the
exception itself (an `InterpError` line, a `KeyboardInterrupt`, ...) is raised again in the
submitting thread by the next `submit` or by `close`. `submit` blocks while `depth` items wait,
which bounds the memory held by work in flight.
"""

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
_STOP = object()


class OrderedWorker(Generic[Item]):
    def __init__(
        self,
        name: str,
        handle: Callable[[Item], object],
        depth: int,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        assert depth >= 1, f"queue depth {depth}: expected >= 1"
        self._handle, self._on_start = handle, on_start
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()  # in the worker's own thread (e.g. its torch thread count)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # after a failure: drained, never handled, so `submit` cannot hang
            try:
                self._handle(item)
            except BaseException as error:  # re-raised in the submitting thread
                self._error = error

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: Item) -> None:
        """Queue `item` (blocks while the queue is full); raises the worker's failure, if any."""
        self.raise_if_failed()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every submitted item is handled (or dropped after a failure); raise the
        failure, if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.raise_if_failed()

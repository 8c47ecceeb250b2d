"""Running under torchrun: which rank this process is, which device it uses, and how ranks agree.

``acmr extract`` and ``acmr bootstrap`` run unchanged under PyTorch's launcher::

    torchrun --standalone --nproc_per_node=N -m acmr_core extract --images DIR --out F ...

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process
it starts; :func:`distributed_session` reads them and joins the job with ``init_process_group("env://")``
(gloo on CPUs; ``cpu:gloo,cuda:nccl`` when the ranks run on GPUs, each on ``cuda:LOCAL_RANK``). Without those
variables, or with one process, the session is a plain single-process one and nothing distributed is touched.

The extracted features never travel through collectives (every rank writes its shards to the output folder,
see :mod:`acmr_core.features.sharding`); collectives only carry small control messages on CPU tensors
(gloo): who does what, whether any rank hit an error, and progress counts. torch is imported inside the
functions that need it, so importing this module stays cheap and ``acmr extract`` / ``acmr bootstrap`` check
their command line before waiting seconds for torch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from tqdm.auto import tqdm

from acmr_core.errors import ACMRError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a collective waits for the slowest rank. Generous on purpose: under torchrun a rank that dies
#: takes the whole job down (the elastic agent stops every worker), so waiting long only ever means waiting
#: for a live rank, e.g. rank 0 downloading a dataset during ``acmr bootstrap`` or finishing its last shard.
COLLECTIVE_TIMEOUT = timedelta(hours=12)
#: Seconds between two progress exchanges of :class:`JobProgress`.
PROGRESS_INTERVAL_S = 0.5


class ReportedByRoot(ACMRError):
    """An error of the job that rank 0 reports; the other ranks only exit with the same status."""


@dataclass(frozen=True)
class Session:
    """This process's place in the job; the defaults are a single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        return f"rank {self.rank}/{self.world_size}"

    def device(self, requested: str) -> str:
        """This rank's device: under torchrun ``auto`` (with GPUs) and ``cuda`` mean ``cuda:LOCAL_RANK``.

        An explicit ``cuda:N`` or ``cpu`` is kept as given.
        """
        if not self.is_distributed or requested not in ("auto", "cuda"):
            return requested
        import torch  # lazy: see the module docstring

        if not torch.cuda.is_available():
            return requested  # "auto" → CPU; "cuda" → resolve_device's own message
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ACMRError(
                f"LOCAL_RANK {self.local_rank} has no GPU: only {count} CUDA device(s) are visible on "
                f"{socket.gethostname()}; start at most {count} processes per node (--nproc_per_node={count})"
            )
        return f"cuda:{self.local_rank}"

    # ----------------------------------------------------------------------------------------- collectives

    def agree(self, error: ACMRError | None = None) -> None:
        """Collective (also a barrier): when any rank brings an error, every rank raises.

        Rank 0 raises the error (its own, or ``rank R: …`` for another rank's), so the CLI prints it once;
        the other ranks raise :class:`ReportedByRoot`, which exits with the same status without repeating it.
        """
        if not self.is_distributed:
            if error is not None:
                raise error
            return
        import torch.distributed as dist  # lazy: see the module docstring

        messages: list[str | None] = [None] * self.world_size
        dist.all_gather_object(messages, None if error is None else str(error))
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if not failed:
            return
        if self.is_root and error is not None:
            raise error
        rank, message = failed[0]
        if self.is_root:
            raise ACMRError(f"rank {rank}: {message}")
        raise ReportedByRoot(f"rank {rank}: {message}")

    def agreed(self, step: Callable[[], T]) -> T:
        """Run ``step`` here, then :meth:`agree` on whether it raised an :class:`ACMRError` on any rank."""
        try:
            result = step()
        except ACMRError as error:
            self.agree(error)
            raise  # not reached: agree raised
        self.agree(None)
        return result

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a picklable control message, never features)."""
        if not self.is_distributed:
            return value
        import torch.distributed as dist  # lazy: see the module docstring

        box: list[Any] = [value if self.is_root else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[Session]:
    """Join the torchrun job this process belongs to (if any) for the duration of the block.

    ``device`` is the ``--device`` argument: it decides gloo alone or ``cpu:gloo,cuda:nccl``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or "RANK" not in os.environ:
        yield Session()
        return
    import torch  # lazy: see the module docstring
    import torch.distributed as dist  # lazy: see the module docstring

    session = Session(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0") or 0),
    )
    on_gpu = session.device(device).startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(torch.device(session.device(device)))
    # CPU tensors (all control messages) go through gloo; NCCL is there for CUDA tensors.
    backend = "cpu:gloo,cuda:nccl" if on_gpu else "gloo"
    try:
        dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    except (RuntimeError, ValueError) as error:  # DistNetworkError and friends: say where, in one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ACMRError(
            f"{session.describe()} cannot join the torchrun job at {os.environ.get('MASTER_ADDR')}:"
            f"{os.environ.get('MASTER_PORT')} ({type(error).__name__}: {first_line}); check the rendezvous "
            "endpoint and that the nodes reach each other"
        ) from None
    log.info(
        "%s joined (local rank %d on %s, backend %s)",
        session.describe(),
        session.local_rank,
        socket.gethostname(),
        backend,
    )
    try:
        yield session
    finally:
        dist.destroy_process_group()


class JobProgress:
    """One progress bar, on rank 0, over the images of every rank.

    Each rank counts what it settles (:meth:`add`). In a distributed job a background thread sums the counts
    of all ranks with ``all_reduce`` every :data:`PROGRESS_INTERVAL_S` seconds, on a gloo group of its own so
    it never interleaves with the main thread's collectives. Each exchange also counts the ranks that are
    finished; every rank sees the same sums, so all threads stop in the same exchange, once all are finished.
    """

    def __init__(self, session: Session, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.session = session
        self.initial = initial
        self._done = 0
        self._finished = threading.Event()
        self._lock = threading.Lock()
        shown = enabled and session.is_root
        self._bar = tqdm(
            total=total, initial=initial, desc="extracting", unit="img", disable=not shown or None
        )
        self._thread: threading.Thread | None = None
        if session.is_distributed:
            import torch.distributed as dist  # lazy: see the module docstring

            self._group = dist.new_group(backend="gloo")  # collective: every rank makes its JobProgress
            self._thread = threading.Thread(target=self._exchange, name="acmr-progress", daemon=True)
            self._thread.start()

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
        if self._thread is None:
            self._bar.update(count)

    def close(self, failed: bool = False) -> None:
        """Mark this rank finished; wait for the last exchange, unless this rank failed (it is leaving)."""
        self._finished.set()
        if self._thread is not None and not failed:
            self._thread.join()
        self._bar.close()

    def _exchange(self) -> None:
        import torch  # lazy: see the module docstring
        import torch.distributed as dist  # lazy: see the module docstring

        while True:
            self._finished.wait(PROGRESS_INTERVAL_S)
            with self._lock:
                counts = torch.tensor([self._done, int(self._finished.is_set())], dtype=torch.int64)
            try:
                dist.all_reduce(counts, group=self._group)
            except Exception as error:  # a peer left (the job is being torn down): stop quietly
                log.debug("progress exchange stopped: %s", error)
                return
            done, finished = (int(value) for value in counts)
            self._bar.update(self.initial + done - self._bar.n)
            if finished == self.session.world_size:
                return

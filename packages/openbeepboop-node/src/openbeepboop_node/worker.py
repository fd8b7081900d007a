"""The node's life: start its loops, work (``run`` or ``batch``), shut down cleanly.

:class:`Node` runs four loops on one event loop and one HTTP connection pool:

- fetch (:mod:`~openbeepboop_node.fetching`): claims as many leases as the
  node has room for; each job runs as a task
  (:mod:`~openbeepboop_node.running`);
- heartbeat (:mod:`~openbeepboop_node.heartbeat`): keeps held leases alive and
  aborts jobs the server reports cancelled or lost;
- delivery (:mod:`~openbeepboop_node.delivery`): sends outcomes in batches,
  spooling what the server has not acknowledged.
- lease watch (:mod:`~openbeepboop_node.lease_watch`): a long-poll the server
  answers as soon as a held lease is cancelled, so the job is aborted within
  seconds rather than at the next heartbeat.

Beside them, :mod:`~openbeepboop_node.backend_health` pauses a model whose
backend cannot be connected to and probes it until it answers.

``run`` works until :meth:`Node.stop` (:func:`serve_with_signals` calls it on
the first SIGINT/SIGTERM and exits at once on the second): fetching stops and
:mod:`~openbeepboop_node.draining` finishes, releases and delivers what is
held. ``run_batch`` works through what is queued and returns when the server
has nothing left for this node (or only jobs of models whose backend stays
unreachable: :attr:`RunSummary.backends_down` names them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from openbeepboop_schemas import Outcome, ReleaseOutcome

from openbeepboop_node.backend_health import BackendHealth
from openbeepboop_node.backends import backend_for
from openbeepboop_node.backoff import Backoff, Connectivity
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.delivery import Deliverer
from openbeepboop_node.draining import drain
from openbeepboop_node.exceptions import SpoolError
from openbeepboop_node.fetching import Fetcher
from openbeepboop_node.heartbeat import Heartbeater
from openbeepboop_node.inference import Inference
from openbeepboop_node.lease_watch import LeaseWatcher
from openbeepboop_node.model_routes import ModelRoutes
from openbeepboop_node.prefetch import PrefetchSizer
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.running import JobRunner, RunSummary
from openbeepboop_node.spool import Spool

__all__ = ["EXIT_INTERRUPTED", "Node", "RunSummary", "serve_with_signals"]

logger = logging.getLogger(__name__)

#: Exit status after a second signal cut a graceful shutdown short.
EXIT_INTERRUPTED = 130


class Node:
    """One node: the configured models, a concurrency limit, one queue server.

    The models are resolved here (ConfigError if a model's ``api_key_env``
    is not set), so a bad key source fails at start-up, not on the first job.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        version: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.routes = ModelRoutes(config, environ)
        self.inference = Inference(config.request_limits())
        self.client = QueueClient(
            config.all_server_urls(),
            config.api_key.get_secret_value(),
            config.node_id,
            version=version,
            fetch_wait=config.fetch_wait,
            failback=config.server_failback,
            max_lease_bytes=config.max_lease_bytes,
        )
        self.connectivity = Connectivity(", ".join(config.all_server_urls()))
        self.summary = RunSummary()
        self._prefetch = PrefetchSizer(config.prefetch_leases())
        self._stopping = asyncio.Event()
        #: Set when a job ends (and by stop): the fetch loop may have room again.
        self._slot_free = asyncio.Event()
        #: Set by stop and when a paused model is back: ends a long-poll in flight.
        self._fetch_interrupt = asyncio.Event()
        self.health = BackendHealth(
            [backend_for(m, self.routes.entries[m.name].api_key) for m in config.models],
            initial=config.backoff_initial,
            maximum=config.backend_probe_max,
            on_change=self._backend_changed,
        )
        self._spool: Spool | None = None
        self._deliverer: Deliverer | None = None
        self._runner: JobRunner | None = None
        #: Set at shutdown when results could be neither delivered nor spooled.
        self._lost: SpoolError | None = None

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    @property
    def running_jobs(self) -> int:
        """Jobs holding a slot right now (at most ``concurrency``)."""
        return len(self._runner.calling) if self._runner is not None else 0

    @property
    def held_jobs(self) -> int:
        """Jobs leased to this node: running, or prefetched and waiting for a slot."""
        return len(self._runner.tasks) if self._runner is not None else 0

    def held_by_model(self) -> dict[str, int]:
        """Leases held now per model entry with its own ``concurrency``."""
        return dict(self._runner.held) if self._runner is not None else {}

    def stop(self) -> None:
        """Stop fetching and shut down gracefully (safe to call more than once)."""
        self._stopping.set()
        self._slot_free.set()
        self._fetch_interrupt.set()

    def _backend_changed(self, entry: str, paused: bool) -> None:
        if paused:
            if self._runner is not None:
                self._runner.paused(entry)
        else:
            self._fetch_interrupt.set()
        self._slot_free.set()

    def persist_now(self) -> None:
        """Put finished results the server has not acknowledged on disk, now.

        Called just before the process exits without a shutdown (a second
        signal): they are sent by the next start instead of being lost.
        """
        if self._deliverer is None:
            return
        try:
            kept, releases = self._deliverer.persist_now()
        except SpoolError as exc:
            logger.error(
                "%s; %d result(s) lost with this process",
                exc,
                self._deliverer.unwritten_results(),
            )
            return
        if kept:
            logger.warning("%d unacknowledged result(s) kept in the spool", kept)
        if releases:
            logger.warning("%d undelivered lease release(s) kept in the spool", releases)

    async def run(self) -> RunSummary:
        """Work until :meth:`stop`; returns what was done."""
        return await self._serve(batch=False)

    async def run_batch(self) -> RunSummary:
        """Work until the server has nothing queued for this node's models.

        Raises ServerUnavailableError when the server cannot be reached at first, or
        stays unreachable longer than ``batch_give_up`` seconds later on, and
        when results could not all be delivered (they stay in the spool).
        Both modes raise SpoolError when results could be neither delivered
        nor written to the spool (they are lost with the process).
        """
        return await self._serve(batch=True)

    async def _serve(self, batch: bool) -> RunSummary:
        config = self.config
        background: list[asyncio.Task[None]] = []
        try:
            self._spool = Spool(config.resolved_spool_path())
            runner = self._runner = JobRunner(
                node_id=config.node_id,
                concurrency=config.concurrency,
                routes=self.routes,
                inference=self.inference,
                prefetch=self._prefetch,
                slot_free=self._slot_free,
                summary=self.summary,
                health=self.health,
                caps=config.model_caps(),
            )
            deliverer = self._deliverer = runner.deliverer = Deliverer(
                self.client,
                self._spool,
                self.connectivity,
                Backoff(config.backoff_initial, config.backoff_max),
                linger=config.submit_linger,
                spool_after=config.spool_after,
                more_coming=runner.in_flight,
                on_settled=runner.settled,
                on_dropped=lambda outcome: _let_go(runner, outcome),
            )
            heartbeater = runner.heartbeater = Heartbeater(
                self.client,
                self.connectivity,
                leases=runner.lease_refs,
                lease_seconds=runner.lease_seconds,
                on_gone=runner.gone,
                on_extended=runner.extended,
                models=lambda: self.health.live,
                interval=config.heartbeat_interval,
            )
            watcher = runner.lease_watcher = LeaseWatcher(
                self.client,
                Backoff(config.backoff_initial, config.backoff_max),
                leases=runner.lease_refs,
                on_gone=runner.gone,
                wait=config.fetch_wait,
            )
            fetcher = Fetcher(
                config,
                self.client,
                self.connectivity,
                health=self.health,
                runner=runner,
                deliverer=deliverer,
                prefetch=self._prefetch,
                stopping=self._stopping,
                slot_free=self._slot_free,
                interrupt=self._fetch_interrupt,
            )
            self._log_start(batch)
            await deliverer.restore(runner.from_spool)
            background.append(asyncio.create_task(deliverer.run(), name="delivery"))
            background.append(asyncio.create_task(heartbeater.run(), name="heartbeat"))
            background.append(asyncio.create_task(watcher.run(), name="lease watch"))
            # LiteLLM takes seconds to import (a minute on a starved host);
            # spooled results go out meanwhile, and a stop ends the wait.
            await self._until_done(self._loaded_unless_stopped(), background)
            fetching = asyncio.create_task(fetcher.run(batch), name="fetch")
            failure: BaseException | None = None
            try:
                await self._until_done(fetching, background)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self.stop()
                await drain(
                    config,
                    runner,
                    deliverer,
                    self.connectivity,
                    batch=batch,
                    background=background,
                    failure=failure,
                )
        finally:
            await self._close(background)
        if self._lost is not None:
            raise self._lost
        return self.summary

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self.summary.backends_down = self.health.paused
        await self.health.aclose()
        if self._deliverer is not None:
            # Whatever finished but was not spooled yet goes to disk before exit.
            await self._deliverer.persist()
            self.summary.undelivered = self._deliverer.undelivered_results()
            lost = self._deliverer.unwritten_results()
            failure = self._deliverer.spool_failure
            releases = self._deliverer.undelivered_releases()
            self._deliverer.close()
            path = self.config.resolved_spool_path()
            if self.summary.undelivered > lost:
                logger.warning(
                    "%d result(s) not delivered yet; kept in %s for the next start",
                    self.summary.undelivered - lost,
                    path,
                )
            if releases:
                self.summary.undelivered_releases = len(releases)
                self._warn_undelivered_releases(releases, path)
            if lost:
                self._lost = SpoolError(
                    f"{lost} result(s) neither delivered nor written to the spool {path} "
                    f"({failure}): they are lost with this process; their jobs run again "
                    "once their leases expire"
                )
                logger.error("%s", self._lost)
        await self.client.aclose()
        if self._spool is not None:
            self._spool.close()

    def _warn_undelivered_releases(
        self, releases: list[tuple[ReleaseOutcome, bool]], path: Path
    ) -> None:
        """Say, in one line, what becomes of jobs whose release the server never got.

        Their leases expire at the server, which then runs the jobs again,
        counting an attempt (for jobs that never reached the LLM); the next
        start delivers the releases kept in the spool, which saves that
        attempt if it comes first.
        """
        seconds = []
        if self._runner is not None:
            seconds = self._runner.release_expiry([release for release, _ in releases])
        when = ""
        if seconds:
            soonest, latest = round(min(seconds)), round(max(seconds))
            if latest <= 0:
                when = " (they have expired by now)"
            elif soonest == latest:
                when = f", in about {latest} s"
            else:
                when = f", in about {soonest}-{latest} s"
        kept = sum(1 for _, on_disk in releases if on_disk)
        if kept == len(releases):
            where = (
                f"kept in {path}: a start before then releases them at once, "
                "with no attempt counted"
            )
        elif kept:
            where = (
                f"{kept} kept in {path} (a start before then releases them at once, "
                "with no attempt counted), the others could not be written"
            )
        else:
            where = f"they could not be written to {path}"
        logger.warning(
            "%d lease release(s) not delivered: the server requeues those jobs when their "
            "leases expire%s, counting an attempt; %s",
            len(releases),
            when,
            where,
        )

    async def _loaded_unless_stopped(self) -> None:
        """Import LiteLLM, unless the node is stopped first (then nothing is fetched).

        The import cannot be interrupted, so it runs on a daemon thread of its
        own rather than the loop's executor, which ``asyncio.run`` joins at
        exit: a stop during the import ends the process without waiting for it.
        """
        loaded = _in_daemon_thread(self.inference.load, "litellm import")
        stopped = asyncio.ensure_future(self._stopped())
        try:
            await asyncio.wait([loaded, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if loaded.done():
            loaded.result()  # an import that failed says why
        else:
            loaded.cancel()

    async def _stopped(self) -> None:
        await self._stopping.wait()

    async def _until_done(
        self, work: Awaitable[object], background: list[asyncio.Task[None]]
    ) -> None:
        """Await ``work``, unless a background loop fails first (a refused key)."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait([task, *background], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled meanwhile: the work is not left behind, nor its error unread.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        for finished in background:
            if finished in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                finished.result()  # raises what ended it
                raise RuntimeError(f"the {finished.get_name()} loop ended unexpectedly")
        task.result()

    def _log_start(self, batch: bool) -> None:
        served = ", ".join(
            f"{m.name} ({m.litellm_model}{' @ ' + m.api_base if m.api_base else ''})"
            for m in self.config.models
        )
        logger.info(
            "node %s %s for %s; concurrency %d, prefetch up to %d; serving %s",
            self.config.node_id,
            "draining the queue" if batch else "working",
            self.client.servers.label(),
            self.config.concurrency,
            self._prefetch.limit,
            served,
        )


def _in_daemon_thread(work: Callable[[], None], name: str) -> asyncio.Future[None]:
    """Run ``work`` on a daemon thread; the future settles when it ends.

    Nothing waits for the thread at exit. If the loop is gone by the time
    ``work`` ends, its outcome is nobody's any more and is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():  # cancelled: the node stopped first
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:  # handed to the loop, which raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _let_go(runner: JobRunner, outcome: Outcome) -> None:
    """The server refused ``outcome`` for good: stop holding (and heartbeating) its lease.

    Only that lease: the job may have been leased to this node again since.
    """
    lease = runner.leases.get(outcome.job_id)
    if lease is not None and lease.lease_token == outcome.lease_token:
        del runner.leases[outcome.job_id]
        runner.expiry.pop(outcome.job_id, None)


async def serve_with_signals(node: Node, *, batch: bool) -> RunSummary:
    """``node.run()`` (or ``run_batch()``), stopped cleanly by SIGINT/SIGTERM.

    The first signal stops the node gracefully; a second one puts finished,
    unacknowledged results in the spool and exits the process at once with
    :data:`EXIT_INTERRUPTED`.
    """
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if node.stopping:
            sys.stderr.write(f"openbeepboop-node: {name} again, exiting now\n")
            sys.stderr.flush()
            node.persist_now()
            os._exit(EXIT_INTERRUPTED)
        held = node.held_jobs
        if held:
            logger.warning("%s: finishing %d job(s), then exiting (again to exit now)", name, held)
        else:
            logger.warning("%s: no jobs running; stopping (again to exit now)", name)
        node.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows: there the default Ctrl-C handling applies.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
    return await (node.run_batch() if batch else node.run())

"""Assembles an engine from a config: state, listening transports, the OMS link, metrics; and runs it.

What runs where: the drivers (engine/driver.py) own the loop; this module only wires parts together, so the
CLI, the tests and the benchmarks build engines the same way.
"""
import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from adapters.aeron import AeronClient, AeronClientConfig, AeronNode, AeronReceiver, AeronReceiverConfig
from adapters.base import TransportClosed
from adapters.journal import segments
from adapters.tcp import TcpClient, TcpServer
from adapters.udp import UdpReceiver
from engine.api import ApiServer
from engine.driver import Engine, run_event, run_spin, warm_up
from engine.journal import EngineJournal
from engine.metrics import LatencyRecorder
from engine.mirror import MirrorFeed
from engine.monitor import Monitor
from engine.recovery import SNAPSHOTS, Recovered, recover
from engine.order_ids import FILE_NAME as ORDER_IDS_FILE, OrderIds
from engine.reload import Reloader, ReloadRefused
from engine.snapshot import Snapshotter
from engine.state import EngineState

log = logging.getLogger("orchestrator.service")

SIGHUP_ACTOR = "SIGHUP"  # who a reload by signal is journaled as


@dataclass
class Service:
    """An engine with its transports, journal and snapshots, ready to run."""
    engine: Engine
    latency: LatencyRecorder
    transports: list = field(default_factory=list)
    started_ns: int = 0
    recovered: Recovered | None = None  # None: no journal (disabled), or started --fresh
    snapshots: Snapshotter | None = None
    api: ApiServer | None = None  # the REST API ([api] enabled), served while the driver runs
    reloader: Reloader | None = None  # config hot reload (SIGHUP, POST /reload); made with the service
    monitor: Monitor | None = None  # metrics, alerts, execution quality, P&L attribution, dashboard

    def __post_init__(self):
        if self.reloader is None:
            self.reloader = Reloader(self)

    def close(self):
        """A clean stop: the monitoring's last publish and its threads stopped, a last snapshot (when nothing
        waits undecided), the journal synced and closed, the transports closed."""
        engine = self.engine
        try:
            if self.monitor is not None:
                self.monitor.close(engine)
            if self.snapshots is not None:
                self.snapshots.take(engine, engine.clock(), wait=True)
                self.snapshots.close()
        finally:
            if engine.journal is not None:
                engine.journal.close()
            for transport in self.transports:
                transport.close()
            if engine.mirror is not None:  # the Redis mirror's writer thread
                engine.mirror.close()
            if self.api is not None:
                self.api.close()

    def addresses(self):
        """Where signals arrive, as bound (a port 0 in the config is the OS's pick): {"udp": "host:port", ...},
        and the API's URL ("api")."""
        kinds = {UdpReceiver: "udp", TcpServer: "tcp"}
        found = {kinds[type(t)]: "%s:%d" % t.address[:2] for t in self.engine.inbound if type(t) in kinds}
        found.update(("aeron", " + ".join(map(str, t.config.streams))) for t in self.engine.inbound
                     if isinstance(t, AeronReceiver))
        if self.api is not None:
            found["api"] = self.api.url
        return found

    def monitoring_addresses(self):
        """Where the monitoring is served, as bound: {"metrics": "host:port", "dashboard": "host:port"}."""
        return {} if self.monitor is None else self.monitor.addresses()


class JournalInUse(ValueError):
    """--fresh over a journal that holds records: it would be overwritten."""


def journal_directory(config):
    path = Path(config.engine.journal.dir)
    return path if path.is_absolute() else Path(config.root) / path


def start_state(config, *, fresh=False, force=False):
    """(state, what recovery did, applied command results): recovered from the journal directory by default;
    `fresh` starts empty, refusing a directory that holds a journal unless `force` (it is moved aside)."""
    settings = config.engine.journal
    if not settings.enabled:
        return EngineState.build(config), None, {}
    directory = journal_directory(config)
    if fresh:
        if segments(directory) or (directory / SNAPSHOTS).exists():
            if not force:
                raise JournalInUse(f"{directory} holds a journal: --fresh would start over it; add --force to "
                                   f"move it aside, or start without --fresh to recover it")
            aside = directory.with_name(f"{directory.name}.{time.strftime('%Y%m%d-%H%M%S')}.old")
            directory.rename(aside)
            log.warning("journal %s moved aside to %s (--fresh --force)", directory, aside)
        return EngineState.build(config), None, {}
    return recover(config, directory)


def build(config, *, clock=time.time_ns, connect_timeout_s=2.0, fresh=False, force=False, monitoring=True):
    """An engine for `config`: its state recovered (or fresh), its journal open, its listening sockets open, its
    OMS link up (or the policy applied), its monitoring serving (`monitoring=False`: none, for benchmarks).
    Raises JournalError (journal directory not writable), JournalInUse, JournalCorrupt, OSError and
    TransportClosed (sockets, Aeron), ValueError (an alert rule over no exported series) before anything
    trades."""
    state, recovered, results = start_state(config, fresh=fresh, force=force)
    new_state = recovered is None or (recovered.last_seq == 0 and not recovered.snapshot_file)
    order_ids = OrderIds(journal_directory(config).parent / ORDER_IDS_FILE)
    order_ids.start(state.scalars, new_state)
    journal = snapshots = None
    settings = config.engine.journal
    if settings.enabled:
        directory = journal_directory(config)
        journal = EngineJournal(settings, directory, next_seq=(recovered.last_seq if recovered else 0) + 1,
                                on_error=settings.on_error)
        journal.open()
        snapshots = Snapshotter(directory / SNAPSHOTS, settings.snapshot_interval_s, settings.snapshots_kept)
    inbound = []
    listen = config.engine.listen
    if listen.udp:
        inbound.append(UdpReceiver(listen.udp))
    if listen.tcp:
        inbound.append(TcpServer(listen.tcp))
    oms_config, aeron = config.engine.oms, config.engine.aeron
    node = AeronNode(aeron) if listen.aeron or oms_config.kind == "aeron" else None  # one driver link for both
    if listen.aeron:  # market data first: a signal then finds the quotes sent before it
        streams = tuple(dict.fromkeys((aeron.market_data, aeron.signals)))
        inbound.append(AeronReceiver(_aeron_config(AeronReceiverConfig, aeron, streams=streams), node))
    if oms_config.kind == "sim":
        oms = None  # the simulated venue runs inside the batch ([oms.sim], kernels/venue.py)
    elif oms_config.kind == "aeron":
        oms = AeronClient(_aeron_config(AeronClientConfig, aeron, orders=aeron.orders, reports=aeron.reports), node)
    else:
        oms = TcpClient(oms_config.tcp)
    transports = inbound + ([] if oms is None else [oms])
    api = None
    try:
        if config.engine.api.enabled:
            api = ApiServer(config.engine.api)  # ValueError: a token's environment variable is not set
        for transport in transports:
            transport.open()
    except (OSError, TransportClosed, ValueError):  # TransportClosed: no Aeron media driver
        _close_all(transports, journal, api)
        raise
    latency = LatencyRecorder(state, clock)
    try:
        monitor = Monitor(state, config, latency=latency, journal=journal, clock=clock) if monitoring else None
    except ValueError:  # an alert rule over a series that is not exported
        _close_all(transports, journal, api)
        raise
    engine = Engine(state, inbound, oms, on_disconnect=oms_config.on_disconnect, clock=clock,
                    listeners=[latency] + ([monitor] if monitor else []), journal=journal,
                    backoff_ms=(oms_config.reconnect_backoff_min_ms, oms_config.reconnect_backoff_max_ms),
                    watch_ms=(oms_config.ack_timeout_ms, oms_config.max_unacked, oms_config.stall_ms),
                    on_mismatch=oms_config.on_mismatch)
    engine.control.results = results
    engine.snapshots = snapshots
    engine.order_ids = order_ids
    if snapshots is not None and new_state:
        snapshots.take(engine, clock(), wait=True)  # genesis: the state the journal starts from, for replays
    if isinstance(oms, (TcpClient, AeronClient)):
        _connect(engine, oms, connect_timeout_s)
    warm_up(engine)
    _start_mirror(engine, config)
    service = Service(engine, latency, transports, clock(), recovered, snapshots, api=api, monitor=monitor)
    if monitor is not None:
        try:
            monitor.open(service)  # binds /metrics and the dashboard: an address in use is an OSError
        except OSError:
            service.monitor = None
            service.close()
            raise
        engine.housekeepers.append(monitor)
    return service


def _close_all(transports, journal, api=None):
    for transport in transports:
        transport.close()
    if api is not None:
        api.close()
    if journal is not None:
        journal.close()


# ---------------------------------------------------------------------------------------------- the Redis mirror
def _start_mirror(engine, config):
    """[redis] enabled: a MirrorFeed listening to the batches and fed in housekeeping; its writer thread connects
    in the background (a Redis that is down delays nothing here)."""
    if config.engine.redis.enabled:
        engine.mirror = MirrorFeed(engine.state, config.engine.redis, control=engine.control)
        engine.listeners.append(engine.mirror)
        engine.mirror.open()


def _finish_mirror(service):
    """After the driver stopped: the mirror's last records, and up to shutdown_flush_ms for Redis to have them."""
    mirror = service.engine.mirror
    if mirror is not None:
        mirror.final(service.engine.clock(), mirror.settings.shutdown_flush_ms / 1000)


def _aeron_config(struct_type, aeron, **streams):
    """An Aeron adapter's config from the [aeron] table: its streams, and every other key it shares with [aeron]."""
    shared = {name: getattr(aeron, name) for name in struct_type.__struct_fields__ if name not in streams}
    return msgspec.convert({**streams, **shared}, struct_type)


def _connect(engine, oms, timeout_s):
    deadline = time.monotonic() + timeout_s
    try:
        while not oms.connect():
            if time.monotonic() > deadline:
                where = (f"aeron {oms.config.orders}" if isinstance(oms, AeronClient) else
                         f"{oms.config.host}:{oms.config.port}")
                raise TransportClosed(f"OMS at {where} did not answer in {timeout_s} s")
            time.sleep(0.001)
    except TransportClosed as e:
        log.error("OMS unreachable at start: %s", e)
        engine.oms_down()
        return
    if engine.state.open_orders["live"].any():  # a recovered state: does the OMS see its orders so?
        engine.reconcile(engine.clock())


def run(service, *, driver="event", duration_s=None, on_tick=None, tick_s=0.5, cpu=None, on_ready=None):
    """Run until SIGINT/SIGTERM or `duration_s`; drain; return. `on_tick(service)` runs every tick_s;
    `on_ready(service)` once the signal handlers are in place, just before the driver starts."""
    try:
        _drive(service, driver, duration_s, on_tick, tick_s, cpu, on_ready)
    finally:
        if service.monitor is not None:  # the engine has stopped: a last fold and publish, for the report
            service.monitor.maintain(service.engine.clock(), service.engine, force=True)


def _drive(service, driver, duration_s, on_tick, tick_s, cpu, on_ready):
    stop_async = None
    stop_flag = threading.Event()

    def request_stop(*_):
        stop_flag.set()
        if stop_async is not None:
            loop.call_soon_threadsafe(stop_async.set)

    def reload_on_thread(*_):  # SIGHUP beside the spin driver: the reload waits for it on a thread of its own
        threading.Thread(target=service.reloader.reload_blocking, args=(SIGHUP_ACTOR,), name="reload",
                         daemon=True).start()

    api = service.api
    if driver == "spin":
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload_on_thread)
        try:
            if api is not None:
                api.start_thread(service)  # its reads are served by the spin loop between steps
            if on_ready:
                on_ready(service)
            timer = _ticker(service, stop_flag, duration_s, on_tick, tick_s)
            try:
                run_spin(service.engine, stop_flag, cpu=cpu)
            finally:
                stop_flag.set()
                timer.join()
        finally:
            if api is not None:
                api.stop_thread()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        service.engine.finish()
        _finish_mirror(service)
        return

    import uvloop
    loop = uvloop.new_event_loop()
    try:
        stop_async = asyncio.Event()

        reloads = set()  # the running SIGHUP reloads (a task only weakly referenced by the loop could vanish)

        def reload_on_loop():
            task = loop.create_task(_reload_async(service))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        async def main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, request_stop)
            loop.add_signal_handler(signal.SIGHUP, reload_on_loop)
            if api is not None:
                await api.start(service)  # on this loop: its handlers run between batches
            if on_ready:
                on_ready(service)
            ticker = loop.create_task(_tick_async(service, stop_async, duration_s, on_tick, tick_s))
            try:
                await run_event(service.engine, stop_async)
            finally:
                ticker.cancel()
                for task in reloads:
                    task.cancel()
                await asyncio.gather(ticker, *reloads, return_exceptions=True)
                if api is not None:
                    await api.stop()

        loop.run_until_complete(main())
        service.engine.finish()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        loop.close()
    _finish_mirror(service)


async def _reload_async(service):
    """SIGHUP on the event driver's loop: the reload's diff and commands run between batches; its outcome is
    logged (engine/reload.py) and kept for GET /reload."""
    try:
        await service.reloader.reload(SIGHUP_ACTOR, on_engine_thread=True)
    except ReloadRefused:
        pass  # logged, and kept as the last reload


async def _tick_async(service, stop, duration_s, on_tick, tick_s):
    start = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(tick_s)
        if on_tick:
            on_tick(service)
        if duration_s is not None and time.monotonic() - start >= duration_s:
            stop.set()


def _ticker(service, stop, duration_s, on_tick, tick_s):
    """Spin mode's clock for the live view and the duration: a thread that only reads and sets the flag."""
    def loop():
        start = time.monotonic()
        while not stop.wait(tick_s):
            if on_tick:
                on_tick(service)
            if duration_s is not None and time.monotonic() - start >= duration_s:
                stop.set()
    thread = threading.Thread(target=loop, name="ticker", daemon=True)
    thread.start()
    return thread

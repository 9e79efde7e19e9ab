"""Serving the API: its socket bound and its tokens resolved when the engine is built (a port in use or a
token's variable unset stops the start before anything trades), then the app run on the event driver's loop,
or on a thread and loop of its own beside the spin driver."""
import asyncio
import gc
import socket
import threading

from aiohttp import web

from engine.api.auth import Tokens
from engine.api.routes import Api, ApiStats

SHUTDOWN_S = 1.0  # at a stop, requests still in flight get this long to finish
COLLECT_S = 1.0   # beside the spin driver: how often the API thread collects the garbage cycles it made


class ApiServer:
    def __init__(self, config):
        self.tokens = Tokens(config.tokens)
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.sock = socket.create_server((config.host, config.port), family=family)
        self.stats = ApiStats()
        self.app = None  # the aiohttp Application, once serving
        self._runner = self._loop = self._thread = None

    @property
    def url(self):
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self, service, *, on_engine_thread=True):
        """Serve on the running loop (the event driver's, when `on_engine_thread`)."""
        self.app = Api(service, self.tokens, self.stats, on_engine_thread=on_engine_thread).app()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def stop(self):
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_thread(self, service):
        """Serve on a thread and loop of its own (beside the spin driver); return once it listens."""
        import uvloop
        self._loop = uvloop.new_event_loop()
        started = threading.Event()
        failure = []

        def serve():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.start(service, on_engine_thread=False))
            except Exception as e:
                failure.append(e)
                return
            finally:
                started.set()
            self._loop.call_later(COLLECT_S, self._collect)
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="api", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def _collect(self):
        """The spin driver turns the garbage collector off (a collection is a pause of the engine's thread), and
        its steady state makes no cycles; some answers do (aiohttp's own 404 and 405 hold one each, ~6 objects).
        So this thread collects them: about 1 ms per 1,000 such answers since the last time, ~30 us when none."""
        if not gc.isenabled():
            gc.collect()
        self._loop.call_later(COLLECT_S, self._collect)

    def stop_thread(self):
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._thread = None

    def close(self):
        self.sock.close()

"""The REST management API (docs/api.md): reads of a running engine and every command, over HTTP.

server.py serves it (bound at build, run on the engine's loop or a thread of its own), routes.py holds the
routes and handlers, bodies.py the request Structs (made from the commands'), auth.py the tokens and roles,
problems.py the error answers, openapi.py the OpenAPI document.
"""
from engine.api.server import ApiServer

__all__ = ["ApiServer"]

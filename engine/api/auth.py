"""Who is asking: the [api] table's bearer tokens, resolved at start, compared in constant time, never logged.

A caller is a token's name and role. "read" may GET every route; "operator" may also send every command, each
journaled with the actor "<name> (<role>)". An API without tokens (the config allows it on loopback only)
takes every caller as an operator named "anonymous".
"""
import hashlib
import hmac
import os
from dataclasses import dataclass

from engine.config.schema import secret_problem

ROLES = ("read", "operator")  # each role may do what the roles before it may


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: str

    @property
    def actor(self):
        """Who a command says asked for it (it is journaled with it)."""
        return f"{self.name} ({self.role})"

    def may(self, role):
        return ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Caller("anonymous", "operator")


class Tokens:
    """The known tokens, as sha256 digests: every presented token is hashed and compared with each of them by
    hmac.compare_digest, so neither its length nor how much of it matched shows in the time taken."""

    def __init__(self, tokens, environ=os.environ):
        self._known = []
        for token in tokens:
            secret = token.token
            if token.token_env is not None:
                secret = environ.get(token.token_env)
                if secret is None:
                    raise ValueError(f"[api] token {token.name!r} is read from the environment variable "
                                     f"{token.token_env}, which is not set")
                if problem := secret_problem(secret):
                    raise ValueError(f"[api] token {token.name!r} from ${token.token_env}: {problem}")
            self._known.append((_digest(secret), Caller(token.name, token.role)))
        digests = [digest for digest, _ in self._known]
        if len(set(digests)) < len(digests):
            raise ValueError("[api] two tokens have the same secret (not shown): each name needs its own")

    @property
    def required(self):
        return bool(self._known)

    def caller(self, authorization: str | None) -> Caller | None:
        """The caller an Authorization header names ("Bearer <token>"), or None when it names nobody."""
        if not self._known:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        digest = _digest(presented.strip())
        found = None
        for known, caller in self._known:  # every one compared: the time does not say which matched
            if hmac.compare_digest(known, digest):
                found = caller
        return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()

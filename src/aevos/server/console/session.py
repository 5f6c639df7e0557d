"""Console sessions: the API token sealed in an encrypted cookie (see the package docstring)."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken

from ... import errors as e

SESSION_COOKIE = "aevos_console"
LOGIN_COOKIE = "aevos_console_login"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
KEY_ENV = "AEVOS_CONSOLE_KEY"


@dataclass(frozen=True)
class Session:
    token: str = field(repr=False)
    sid: str
    csrf: str = field(repr=False)
    issued_at: float


class Sessions:
    """Seals sessions into cookies and opens them again (see the module docstring)."""

    def __init__(self, key: bytes | None = None, *, ttl: int = SESSION_SECONDS) -> None:
        self._fernet = Fernet(key or Fernet.generate_key())
        self.ttl = ttl
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Sessions:
        text = (os.environ if environ is None else environ).get(KEY_ENV)
        if not text:
            return cls()
        try:
            return cls(text.strip().encode())
        except ValueError:
            raise e.DefinitionError(
                f"{KEY_ENV} must be a Fernet key: 32 bytes of URL-safe base64, from "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            ) from None

    def issue(self, token: str) -> tuple[Session, str]:
        now = int(time.time())  # Fernet timestamps are whole seconds
        session = Session(token, secrets.token_urlsafe(16), secrets.token_urlsafe(32), now)
        data = {"t": session.token, "s": session.sid, "c": session.csrf}
        sealed = self._fernet.encrypt_at_time(json.dumps(data).encode(), now)
        return session, sealed.decode()

    def open(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            sealed = cookie.encode()
            data = json.loads(self._fernet.decrypt(sealed, ttl=self.ttl))
            issued_at = float(self._fernet.extract_timestamp(sealed))
            session = Session(str(data["t"]), str(data["s"]), str(data["c"]), issued_at)
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        with self._lock:
            if session.sid in self._ended:
                return None
        return session

    def end(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._ended = {sid: until for sid, until in self._ended.items() if until > now}
            self._ended[session.sid] = session.issued_at + self.ttl

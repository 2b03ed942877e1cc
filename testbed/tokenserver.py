"""A small bearer-token service for the real registry's `auth.token` mode (Docker's token protocol).

It signs RS256 JWTs with a key made by `openssl`, so Distribution verifies real tokens.
Anyone gets `pull` on repositories under `public/`; the one user gets everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

ISSUER = "ligoenv-test-issuer"
SERVICE = "ligoenv-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_der: bytes) -> str:
    """The key ID Distribution computes for a key (libtrust: base32 of a SHA-256 prefix, in fours)."""
    encoded = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    """Serves GET /token on a loopback port; `auth_config()` is the registry's `auth` section."""

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        self.workdir = workdir
        self.username, self.password = username, password
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(self.key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", str(self.key), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.key_id = libtrust_key_id(der)
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def auth_config(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert)}}

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def grant(self, scope: str, user: str | None) -> list[dict[str, Any]]:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = [a for a in actions.split(",") if a]
        allowed = wanted if user == self.username else [a for a in wanted if a == "pull"
                                                         and name.startswith("public/")]
        return [{"type": kind, "name": name, "actions": allowed}] if allowed else []

    def token(self, scope: str, user: str | None) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.key_id}
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "iat": now, "nbf": now - 60,
                  "exp": now + 600, "jti": f"{now}-{len(self.requests)}",
                  "access": self.grant(scope, user) if scope else []}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _user(self, authorization: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, user): no header is anonymous, a wrong password is refused."""
        if not authorization:
            return True, None
        if not authorization.startswith("Basic "):
            return False, None
        user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        ok = (user, password) == (self.username, self.password)
        return ok, user if ok else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                ok, user = server._user(self.headers.get("Authorization"))
                scope = query.get("scope", [""])[0]
                server.requests.append({"scope": scope, "user": user, "ok": ok,
                                        "service": query.get("service", [""])[0]})
                if not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(scope, user)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

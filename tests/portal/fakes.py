"""Fake auth, gdpr and audit services for the portal's tests, speaking API.md's contracts.

The upstream services are not under test here, so a small Flask app serves canned,
API.md-shaped answers on a real socket (werkzeug in a thread).  It verifies the bearer
tokens it gets exactly as a real service would (TokenMint's EdDSA tokens), filters by the
caller's tenant the way the gdpr service does, and records every call so tests can check
what the portal sent — and that no personal value ever travelled in a URL.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from shared.tokens import TokenVerifier
from tests.support import ISSUER, TokenMint

NOW = datetime.now(UTC)

INVENTORY = {
    "generated_at": NOW.isoformat(),
    "services": [
        {
            "service": "orders",
            "counts": {"individual": 42, "order": 310},
            "inventory": {
                "service": "orders",
                "categories": [
                    {
                        "kind": "individual",
                        "data_subjects": "care recipients",
                        "purposes": ["meal ordering"],
                        "legal_basis": "contract (art. 6(1)(b)) on the customer's behalf",
                        "role": "processor",
                        "controller": "tenant (customer)",
                        "retention": "while the customer's contract runs",
                        "recipients": ["kitchen staff"],
                        "storage": "orders database, table individuals",
                        "erasure": "deleted",
                        "special_category": True,
                        "fields": [
                            {
                                "name": "name",
                                "description": "full name",
                                "personal": True,
                                "special": False,
                                "encrypted": True,
                                "blind_indexed": True,
                            },
                            {
                                "name": "diet",
                                "description": "diets and allergies",
                                "personal": True,
                                "special": True,
                                "encrypted": True,
                                "blind_indexed": False,
                            },
                        ],
                    },
                    {
                        "kind": "order",
                        "data_subjects": "care recipients",
                        "purposes": ["invoicing"],
                        "legal_basis": "legal obligation (bookkeeping, 7 years)",
                        "role": "processor",
                        "controller": "tenant (customer)",
                        "retention": "7 years",
                        "recipients": [],
                        "storage": "orders database, table orders",
                        "erasure": "anonymised",
                        "special_category": False,
                        "fields": [
                            {
                                "name": "individual_id",
                                "description": "who ate",
                                "personal": True,
                                "special": False,
                                "encrypted": False,
                                "blind_indexed": False,
                            }
                        ],
                    },
                ],
            },
        },
        {
            "service": "crm",
            "counts": {"case": 7},
            "inventory": {
                "service": "crm",
                "categories": [
                    {
                        "kind": "case",
                        "data_subjects": "customer contacts",
                        "purposes": ["support"],
                        "legal_basis": "legitimate interest",
                        "role": "controller",
                        "controller": "vendor",
                        "retention": "3 years",
                        "recipients": ["support desk"],
                        "storage": "crm database",
                        "erasure": "deleted",
                        "special_category": False,
                        "fields": [
                            {
                                "name": "email",
                                "description": "e-mail",
                                "personal": True,
                                "special": False,
                                "encrypted": True,
                                "blind_indexed": True,
                            }
                        ],
                    },
                ],
            },
        },
    ],
}


# Per customer tenant (issue 15, art. 30(2)): its own counts and agreement; any other slug does not exist.
RECORDS_COUNTS = {"t1": {"individual": 12, "order": 80}, "t2": {"individual": 3, "order": 0}}
AGREEMENTS = {"t1": {"version": "DPA 2.0", "signed_on": "2025-06-01"}, "t2": None}


def records_of(tenant: str) -> dict[str, Any]:
    """The gdpr service's GET /api/v1/tenants/{slug}/records for the fake inventory: counted per tenant by
    orders, not by crm (null)."""
    services = []
    for entry in INVENTORY["services"]:
        own = RECORDS_COUNTS[tenant] if entry["service"] == "orders" else None
        categories = [
            {**cat, "count": None if own is None else own.get(cat["kind"], 0)}
            for cat in entry["inventory"]["categories"]
        ]
        services.append(
            {
                "service": entry["service"],
                "phase": "resolve",
                "last_seen": NOW.isoformat(),
                "stale": False,
                "categories": categories,
            }
        )
    return {"tenant": tenant, "agreement": AGREEMENTS[tenant], "generated_at": NOW.isoformat(), "services": services}


@dataclass
class Account:
    tenant: str
    username: str
    password: str
    roles: tuple[str, ...]
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeServices:
    """auth under /auth, gdpr under /gdpr, audit under /audit of one local server."""

    def __init__(self, mint: TokenMint | None = None, *, access_ttl: int = 300, polls_to_complete: int = 1) -> None:
        self.mint = mint or TokenMint()
        self.verifier = TokenVerifier(self.mint.keyset(), ISSUER)
        self.access_ttl = access_ttl
        self.polls_to_complete = polls_to_complete
        self.accounts: list[Account] = []
        self.refresh_tokens: dict[str, Account] = {}
        self.calls: list[dict[str, Any]] = []
        self.logouts: list[dict[str, Any]] = []
        self.requests: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.down: set[str] = set()
        self.previews_again: list[str] = []
        self.refuse_refresh = False
        from services.gdpr.certificate import CertificateKeys
        from shared.crypto import Keyring

        self.certificate_keys = CertificateKeys.from_keyring(Keyring.generate())
        self.app = self._build()
        self._server = None
        self._thread = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeServices:
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def urls(self) -> dict[str, str]:
        return {"AUTH_URL": f"{self.base}/auth", "GDPR_URL": f"{self.base}/gdpr", "AUDIT_URL": f"{self.base}/audit"}

    def add_account(
        self, tenant: str, username: str, password: str, roles: tuple[str, ...] = ("compliance_officer",)
    ) -> Account:
        account = Account(tenant, username, password, roles)
        self.accounts.append(account)
        return account

    def add_request(
        self,
        tenant: str,
        type_: str = "export",
        status: str = "in_progress",
        *,
        requested_by: str = "someone",
        due_in_days: int = 30,
    ) -> dict[str, Any]:
        rid = str(uuid.uuid4())
        created = datetime.now(UTC) - timedelta(days=30 - due_in_days)
        item = {
            "id": rid,
            "type": type_,
            "status": status,
            "tenant": tenant,
            "created_at": created.isoformat(),
            "due_at": (created + timedelta(days=30)).isoformat(),
            "requested_by": requested_by,
            "identifier_kinds": ["email"],
            "services": self._services(type_, status),
            "links": {"self": f"/api/v1/requests/{rid}"},
            "preview": None if status in ("previewing",) else self._preview(rid),
            "confirmed": [],
        }
        self.requests[rid] = item
        return item

    @staticmethod
    def _preview(rid: str) -> dict[str, Any]:
        """A preview as the gdpr service shows it (issue 15): an exact match, a same-name neighbour, a
        switchboard's calls; the hash as the gdpr service computes it."""
        from services.gdpr.domain import preview_hash

        services = {
            "orders": {
                "status": "done",
                "candidates": [
                    {
                        "id": f"{rid[:8]}a1",
                        "kind": "individual",
                        "match": "exact",
                        "card": {"label": "individual, register Avd 3, born 1938, initials G. L., 12 orders"},
                        "count": 13,
                    },
                    {
                        "id": f"{rid[:8]}a2",
                        "kind": "individual",
                        "match": "near",
                        "card": {"label": "individual, register Avd 5, born 1941, initials G. L., 2 orders"},
                        "count": 3,
                    },
                ],
            },
            "crm": {
                "status": "done",
                "candidates": [
                    {
                        "id": f"{rid[:8]}b1",
                        "kind": "call",
                        "match": "near",
                        "card": {"label": "3 call(s) from a number shared by 3 callers"},
                        "count": 3,
                    }
                ],
            },
            "auth": {"status": "silent", "candidates": []},
        }
        return {"hash": preview_hash(services), "at": datetime.now(UTC).isoformat(), "services": services}

    def anchor(self, rid: str) -> None:
        """What the gdpr service does when the audit signs the tenant's next checkpoint (issue 15): the
        finished erasure is anchored and its document links the certificate."""
        item = self.requests[rid]
        item.setdefault("finished_at", datetime.now(UTC).isoformat())
        item["anchor"] = {
            "chain": f"tenant:{item['tenant']}",
            "seq": 42,
            "head_hash": "ab" * 32,
            "key_id": "0" * 32,
            "signature": "c2lnbmF0dXJl",
            "signed_at": datetime.now(UTC).isoformat(),
        }
        item["links"]["certificate"] = f"/api/v1/requests/{rid}/certificate"

    def certificate(self, rid: str) -> dict[str, Any]:
        """The certificate the real gdpr code builds and signs from this request's document."""
        from services.gdpr.certificate import body_of

        item = self.requests[rid]
        document = {
            **item,
            "services": [
                {"service": r["service"], "status": r["status"], "erasure": (r.get("result") or {}).get("erasure")}
                for r in item["services"]
            ],
        }
        return self.certificate_keys.sign(body_of(document))

    def urls_called(self) -> list[str]:
        return [c["url"] for c in self.calls]

    # --- behaviour ---------------------------------------------------------------------

    def _tokens(self, account: Account) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = account
        return {
            "access_token": self.mint.token(
                sub=account.user_id, tenant=account.tenant, roles=account.roles, ttl=self.access_ttl
            ),
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_token": refresh,
        }

    @staticmethod
    def _services(type_: str, status: str) -> list[dict[str, Any]]:
        names = ("auth", "orders", "crm", "audit")
        if status in ("awaiting_approval", "rejected"):
            return []
        if status == "in_progress":
            return [{"service": n, "phase": "resolve", "status": "sent"} for n in names]
        if type_ == "export":
            return [
                {"service": n, "phase": "resolve", "status": "done", "result": {"records": {"individual": 1}}}
                for n in names
            ]
        erasure = {
            "auth": [{"kind": "user", "action": "deleted", "count": 1}],
            "orders": [
                {"kind": "individual", "action": "deleted", "count": 1},
                {"kind": "order", "action": "anonymised", "count": 12},
            ],
            "crm": [
                {
                    "kind": "case",
                    "action": "retained",
                    "count": 2,
                    "legal_basis": "legal claims (art. 17(3)(e))",
                    "retain_until": "2031-01-01",
                }
            ],
            "audit": [
                {
                    "kind": "event",
                    "action": "retained",
                    "count": 40,
                    "legal_basis": "accountability (art. 5(2))",
                    "retain_until": "2032-01-01",
                }
            ],
        }
        return [{"service": n, "phase": "resolve", "status": "done", "result": {"erasure": erasure[n]}} for n in names]

    def _problem(self, status: int, title: str, detail: str, errors=None) -> Response:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        if errors:
            body["errors"] = errors
        return Response(json.dumps(body), status=status, mimetype="application/problem+json")

    def _principal(self):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            return self.verifier.verify(token)
        except Exception:  # noqa: BLE001 - any failure is a 401 here
            return None

    def _build(self) -> Flask:
        app = Flask("fake_services")
        fake = self

        @app.before_request
        def _record():
            service = request.path.strip("/").split("/")[0]
            fake.calls.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "url": request.url,
                    "body": request.get_data(as_text=True),
                    "service": service,
                    "forwarded_for": request.headers.get("X-Recept-Client-Address"),
                    "forwarding_token": request.headers.get("X-Recept-Forwarding-Token"),
                }
            )
            if service in fake.down:
                return fake._problem(503, "Service unavailable", "down for the test")
            if (
                request.path.endswith("/healthz")
                or "/.well-known/" in request.path
                or "/auth/api/v1/auth/" in request.path
            ):
                return None
            principal = fake._principal()
            if principal is None:
                return fake._problem(401, "Unauthorized", "the access token is not valid")
            request.environ["principal"] = principal
            return None

        for name in ("auth", "gdpr", "audit"):
            app.add_url_rule(f"/{name}/healthz", f"{name}_healthz", lambda: jsonify(status="ok"))

        @app.get("/auth/.well-known/jwks.json")
        def jwks():
            return jsonify(fake.mint.jwks())

        @app.post("/auth/api/v1/auth/login")
        def login():
            body = request.get_json(silent=True) or {}
            for account in fake.accounts:
                if (account.tenant, account.username, account.password) == (
                    body.get("tenant"),
                    body.get("username"),
                    body.get("password"),
                ):
                    return jsonify(fake._tokens(account))
            return fake._problem(401, "Unauthorized", "the tenant, username or password is wrong")

        @app.post("/auth/api/v1/auth/refresh")
        def refresh():
            token = (request.get_json(silent=True) or {}).get("refresh_token")
            account = fake.refresh_tokens.pop(token, None)
            if account is None or fake.refuse_refresh:
                return fake._problem(401, "Unauthorized", "the refresh token is not valid")
            return jsonify(fake._tokens(account))

        @app.post("/auth/api/v1/auth/logout")
        def logout():
            body = request.get_json(silent=True) or {}
            fake.logouts.append({"authorization": request.headers.get("Authorization", ""), "body": body})
            fake.refresh_tokens.pop(body.get("refresh_token"), None)
            return Response(status=204)

        def visible(rid: str):
            item = fake.requests.get(rid)
            if item is None or item["tenant"] != request.environ["principal"].tenant:
                return None
            return item

        @app.get("/gdpr/api/v1/requests")
        def list_requests():
            p = request.environ["principal"]
            items = [r for r in fake.requests.values() if r["tenant"] == p.tenant]
            for key in ("status", "type", "tenant"):
                if request.args.get(key):
                    items = [r for r in items if r[key] == request.args[key]]
            if request.args.get("overdue") == "true":
                now = datetime.now(UTC)
                items = [r for r in items if datetime.fromisoformat(r["due_at"]) < now]
            return jsonify(items=items, next_cursor=None)

        @app.post("/gdpr/api/v1/requests")
        def create_request():
            p = request.environ["principal"]
            body = request.get_json(silent=True) or {}
            subject = body.get("subject") or {}
            if "@" not in subject.get("email", "@"):
                return fake._problem(
                    422,
                    "Invalid input",
                    "the request body has 1 invalid field(s)",
                    [{"field": "subject.email", "message": "is not a valid e-mail address"}],
                )
            if body.get("tenant") != p.tenant:
                return fake._problem(403, "Forbidden", "you may not open requests for another tenant")
            status = "awaiting_approval" if body.get("type") == "erase" else "in_progress"
            item = fake.add_request(body["tenant"], body["type"], status, requested_by=p.user_id)
            fake.polls[item["id"]] = 0
            return jsonify(
                {k: item[k] for k in ("id", "type", "status", "tenant", "created_at", "due_at", "links")}
            ), 202

        @app.get("/gdpr/api/v1/requests/<rid>")
        def get_request(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            if item["status"] == "in_progress":
                fake.polls[rid] = fake.polls.get(rid, 0) + 1
                if fake.polls[rid] > fake.polls_to_complete:
                    item.update(status="completed", services=fake._services(item["type"], "completed"))
                    if item["type"] == "export":
                        item["links"]["export"] = f"/api/v1/requests/{rid}/export"
            return jsonify(item)

        @app.post("/gdpr/api/v1/requests/<rid>/approve")
        def approve(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            if item["requested_by"] == request.environ["principal"].user_id:
                return fake._problem(403, "Forbidden", "a second compliance officer must approve an erasure")
            if item["status"] != "awaiting_approval":
                return fake._problem(409, "Conflict", "the request is not awaiting approval")
            body = request.get_json(silent=True) or {}
            if not isinstance(body.get("preview_hash"), str) or not isinstance(body.get("confirmed"), list):
                return fake._problem(
                    422, "Invalid input", "the body is invalid", [{"field": "preview_hash", "message": "is required"}]
                )
            if body["preview_hash"] != item["preview"]["hash"]:
                return fake._problem(409, "Conflict", "stale preview: the request was previewed again since")
            known = {c["id"] for e in item["preview"]["services"].values() for c in e["candidates"]}
            unknown = [
                {"field": f"confirmed.{i}", "message": "is not a candidate of this preview"}
                for i, cid in enumerate(body["confirmed"])
                if cid not in known
            ]
            if unknown:
                return fake._problem(422, "Invalid input", "unknown candidates", unknown)
            item.update(
                status="in_progress", confirmed=body["confirmed"], services=fake._services(item["type"], "in_progress")
            )
            return jsonify(item)

        @app.post("/gdpr/api/v1/requests/<rid>/confirm")
        def confirm(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            if "privacy_officer" not in request.environ["principal"].roles:
                return fake._problem(403, "Forbidden", "only the customer's privacy officer confirms")
            if item["status"] != "awaiting_confirmation":
                return fake._problem(409, "Conflict", "the request is not awaiting confirmation")
            item.update(status="in_progress", services=fake._services(item["type"], "in_progress"))
            item["links"].pop("confirm", None)
            return jsonify(item)

        @app.post("/gdpr/api/v1/requests/<rid>/reject")
        def reject(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            item.update(status="rejected", services=[])
            return jsonify(item)

        @app.post("/gdpr/api/v1/requests/<rid>/retry")
        def retry(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            item.update(status="in_progress", services=fake._services(item["type"], "in_progress"))
            fake.polls[rid] = 0
            return jsonify(item), 202

        @app.get("/gdpr/api/v1/requests/<rid>/certificate")
        def certificate(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            if item["type"] != "erase" or not item.get("anchor"):
                return fake._problem(409, "Conflict", "not anchored yet: the audit has not signed a checkpoint")
            return jsonify(fake.certificate(rid))

        @app.get("/gdpr/api/v1/requests/<rid>/export")
        def export(rid):
            item = visible(rid)
            if item is None or item["type"] != "export" or item["status"] != "completed":
                return fake._problem(404, "Not found", "no such resource")
            return Response(export_zip(rid), mimetype="application/zip")

        @app.post("/gdpr/api/v1/requests/<rid>/preview")
        def preview_again(rid):
            item = visible(rid)
            if item is None:
                return fake._problem(404, "Not found", "no such resource")
            if item["status"] != "awaiting_approval":
                return fake._problem(409, "Conflict", "the request is not awaiting approval")
            item["preview"] = {**fake._preview(rid), "at": datetime.now(UTC).isoformat()}
            fake.previews_again.append(rid)
            return jsonify(item)

        @app.get("/gdpr/api/v1/tenants/<slug>/records")
        def records(slug):
            p = request.environ["principal"]
            own_only = set(p.roles) == {"privacy_officer"}
            if slug not in RECORDS_COUNTS or (own_only and slug != p.tenant):
                return fake._problem(404, "Not found", "no such tenant")
            if request.args.get("format") == "csv":
                return Response(
                    f"service,kind,count\r\norders,individual,{RECORDS_COUNTS[slug]['individual']}\r\n",
                    mimetype="text/csv",
                )
            return jsonify(records_of(slug))

        @app.get("/gdpr/api/v1/inventory")
        def inventory():
            if request.args.get("format") == "csv":
                out = io.StringIO()
                writer = csv.writer(out)
                writer.writerow(["service", "kind", "data_subjects", "role", "count"])
                for entry in INVENTORY["services"]:
                    for cat in entry["inventory"]["categories"]:
                        writer.writerow(
                            [
                                entry["service"],
                                cat["kind"],
                                cat["data_subjects"],
                                cat["role"],
                                entry["counts"].get(cat["kind"], 0),
                            ]
                        )
                return Response(out.getvalue(), mimetype="text/csv")
            return jsonify(INVENTORY)

        @app.get("/audit/api/v1/events")
        def events():
            items = fake.events
            for key in ("subject", "type"):
                if request.args.get(key):
                    items = [e for e in items if e.get(key) == request.args[key]]
            if request.args.get("actor"):
                items = [e for e in items if e["actor"]["id"] == request.args["actor"]]
            return jsonify(items=items, next_cursor=None)

        @app.get("/audit/api/v1/chains/verify")
        def chains():
            return jsonify(
                status="broken",
                chains=[
                    {
                        "chain": "tenant:t1",
                        "tenant": "t1",
                        "status": "ok",
                        "entries_verified": 120,
                        "first_seq": 1,
                        "head": {"seq": 120, "hash": "ab12"},
                        "last_checkpoint": {"seq": 100},
                        "first_bad": None,
                        "checkpoint_problems": [],
                    },
                    {
                        "chain": "tenant:t2",
                        "tenant": "t2",
                        "status": "broken",
                        "entries_verified": 17,
                        "first_seq": 1,
                        "head": {"seq": 30, "hash": "cd34"},
                        "last_checkpoint": None,
                        "first_bad": {"seq": 18, "event_id": "e-18", "reason": "hash mismatch"},
                        "checkpoint_problems": [],
                    },
                ],
            )

        return app


def export_zip(request_id: str) -> bytes:
    """A small package shaped like DESIGN.md's: one folder per service, a manifest with SHA-256s."""
    files = {"orders/individual.json": json.dumps([{"id": "i1"}]).encode(), "orders/individual.csv": b"id\ni1\n"}
    manifest = {
        "request_id": request_id,
        "created_at": NOW.isoformat(),
        "files": [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "records": 1} for p, b in files.items()],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
        archive.writestr("manifest.json", json.dumps(manifest))
    return buffer.getvalue()

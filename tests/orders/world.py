"""A tenant set up over the orders API, as its administrator would: units, a register, an assortment list, staff."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.orders.rules import RIGHTS

V1 = "/api/v1"


def personnummer(born: str, serial: str) -> str:
    """A valid personnummer ``YYYYMMDD-NNNC`` for a birth date and a three-digit serial (Luhn check digit)."""
    digits = born[2:] + serial
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return f"{born}-{serial}{(10 - total % 10) % 10}"


class World:
    """Tenant ``t1`` with its administrator, a ward, a register, an assortment list and two articles."""

    def __init__(self, client, mint, runtime, database_url: str, clock, tenant: str = "t1") -> None:
        self.client, self.mint, self.runtime, self.database_url = client, mint, runtime, database_url
        self.clock = clock
        self.tenant = tenant
        self.admin = self.headers("admin-1", roles=("tenant_admin",))
        self.ok("PUT", "/settings", self.admin, {"personnummer_enabled": True})
        self.unit = self.ok("POST", "/units", self.admin, {"name": "Avdelning 3", "kind": "hospital_ward"}, 201)
        self.point = self.ok(
            "POST", f"/units/{self.unit['id']}/delivery-points", self.admin, {"name": "Kök entré"}, 201
        )
        self.other_unit = self.ok("POST", "/units", self.admin, {"name": "Avdelning 7", "kind": "hospital_ward"}, 201)
        self.register = self.ok(
            "POST",
            "/registers",
            self.admin,
            {
                "name": "Avdelning 3 patienter",
                "deadline": {"time": "12:00", "days_before": 1},
                "timezone": "Europe/Stockholm",
            },
            201,
        )
        self.list = self.ok(
            "POST", "/assortment-lists", self.admin, {"name": "Avdelning 3 meny", "unit_id": self.unit["id"]}, 201
        )
        self.lunch = self.ok(
            "POST",
            f"/assortment-lists/{self.list['id']}/articles",
            self.admin,
            {"code": "LUNCH", "name": "Dagens lunch", "kind": "meal"},
            201,
        )
        self.soup = self.ok(
            "POST",
            f"/assortment-lists/{self.list['id']}/articles",
            self.admin,
            {"code": "SOUP", "name": "Soppa", "kind": "meal"},
            201,
        )
        # A member of staff holding every right on the register and the list.
        self.staff = self.user("staff-all", RIGHTS)

    # --- HTTP ----------------------------------------------------------------------------------

    def headers(
        self, sub: str, roles: Iterable[str] = ("staff",), groups: Iterable[str] = (), tenant: str | None = None
    ) -> dict[str, str]:
        return self.mint.headers(sub=sub, tenant=tenant or self.tenant, roles=list(roles), groups=list(groups))

    def call(self, method: str, path: str, headers: dict[str, str], body: Any = None):
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(V1 + path, method=method, **kwargs)

    def ok(self, method: str, path: str, headers: dict[str, str], body: Any = None, status: int = 200):
        response = self.call(method, path, headers, body)
        assert response.status_code == status, (response.status_code, response.get_json())
        return response.get_json()

    # --- set-up steps --------------------------------------------------------------------------

    def grant(
        self, principal_type: str, principal_id: str, right: str, register: bool = True, assortment_list: bool = True
    ) -> None:
        body = {"principal": {"type": principal_type, "id": principal_id}, "right": right}
        if register:
            self.ok("POST", f"/registers/{self.register['id']}/grants", self.admin, body, 201)
        if assortment_list:
            self.ok("POST", f"/assortment-lists/{self.list['id']}/grants", self.admin, body, 201)

    def user(self, sub: str, rights: Iterable[str] = (), **kwargs) -> dict[str, str]:
        """Headers of a staff member holding ``rights`` on the register and the list."""
        for right in rights:
            self.grant("user", sub, right, **kwargs)
        return self.headers(sub)

    def group_member(self, group: str, rights: Iterable[str], sub: str) -> dict[str, str]:
        for right in rights:
            self.grant("group", group, right)
        return self.headers(sub, groups=(group, "unrelated-group"))

    def individual(self, **fields) -> dict[str, Any]:
        body = {"name": "Greta Lindqvist", "unit_id": self.unit["id"], **fields}
        return self.ok("POST", f"/registers/{self.register['id']}/individuals", self.admin, body, 201)

    def order_body(self, **fields) -> dict[str, Any]:
        return {
            "register_id": self.register["id"],
            "delivery_date": "2030-03-12",
            "meal": "lunch",
            "article_id": self.lunch["id"],
            "quantity": 1,
            **fields,
        }

    def place(self, headers: dict[str, str] | None = None, status: int = 201, **fields):
        return self.ok("POST", "/orders", headers or self.staff, self.order_body(**fields), status)

"""Issue 14: after an export and an erasure through a real RabbitMQ, the broker's own data directory
(quorum-queue segment files and WAL) holds none of the subject's identifiers or records in clear.

A canary message published in clear on the same vhost must be found there first: it proves the scan
reads the files the broker writes message bodies to, so "not found" means something.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

from shared.bus import GDPR, Binding, Bus, Message
from tests.forensics import broker_data_dir, found_in_files
from tests.gdpr.test_fanout import make_system  # noqa: F401 - the fixture
from tests.support import approve_preview, wait_for

TOKEN = uuid.uuid4().hex[:10]
SUBJECT = {
    "email": f"disk.{TOKEN}@example.se",
    "phone": "+46701" + str(int(TOKEN, 16) % 10**6).zfill(6),
    "personnummer": "199001011239",
    "username": f"user{TOKEN}",
}
RECORD_VALUE = f"glutenfri-{TOKEN}"  # stands for a diet value in an exported record


def test_no_identifier_or_record_reaches_the_brokers_disk_in_clear(make_system, rabbit_url):  # noqa: F811
    directory = broker_data_dir()
    canary = f"canary-{TOKEN}".encode()
    Bus(rabbit_url, "canary").declare([Binding(GDPR, "gdpr.canary")])
    publisher = Bus(rabbit_url, "canary-publisher").publisher()
    try:
        assert publisher.publish(
            [Message(GDPR, "gdpr.canary", json.dumps({"v": canary.decode()}).encode(), str(uuid.uuid4()))]
        ) == [None]
    finally:
        publisher.close()
    assert wait_for(lambda: canary in found_in_files(directory, [canary]), timeout=30), (
        "the scan does not see message bodies the broker wrote"
    )

    system = make_system()
    system.fakes["alpha"].add_person(SUBJECT["email"], f"Name {RECORD_VALUE}")
    system.fakes["beta"].add_person(SUBJECT["email"], f"Name {RECORD_VALUE}")
    system.start_all()
    exported = system.open("export", SUBJECT)
    assert system.wait_status(exported, "completed")["status"] == "completed"
    package = system.client.get(f"/api/v1/requests/{exported}/export", headers=system.headers())
    assert package.status_code == 200
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:  # it was exported...
        assert RECORD_VALUE in archive.read("alpha/person.json").decode()
    erased = system.open("erase", SUBJECT)
    approved = approve_preview(system.client, erased, system.customer())
    assert approved.status_code == 200
    system.wait_status(erased, "completed")

    needles = [v.encode() for v in (*SUBJECT.values(), SUBJECT["phone"][3:], RECORD_VALUE)]
    assert found_in_files(directory, needles) == set()  # ...never in clear on disk

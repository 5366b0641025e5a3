"""Wiring of the gdpr service: its coordinator, inventory and sweeper, made once per runtime, and what its
processes run."""

from __future__ import annotations

from shared.bus import EVENTS, GDPR
from shared.clock import utcnow
from shared.consumer import Subscription
from shared.gdpr_protocol import ANNOUNCE_PATTERN, REPLY_PATTERN
from shared.identifiers import IdentifierHasher
from shared.service import Loop, Runtime, Wiring

from . import certificate, handover, notices, public
from .api import bp
from .domain import Coordinator, Policy
from .inventory import DataInventory
from .parts import Parts
from .sweep import Sweeper
from .tenants import ANNOUNCED, TenantReplica
from .worker import sweep_loop


def build(runtime: Runtime) -> Wiring:
    config = runtime.config
    clock = config.get("clock") or utcnow
    policy = Policy.from_config(config)
    coordinator = Coordinator(
        vault=runtime.vault,
        outbox=runtime.outbox,
        policy=policy,
        hash_identifier=IdentifierHasher(runtime.keyring.index_key),
        clock=clock,
    )
    parts = Parts(
        coordinator=coordinator,
        inventory=DataInventory(policy.participant_ttl, clock=clock),
        sweeper=Sweeper(runtime.db, coordinator, clock=clock),
    )
    # Issue 17: the public page, its verification codes, the notices to the person and the hand-over.
    senders = public.Senders(config, sms=public.load_sms_sender(config))
    requests_ = public.PublicRequests(
        db=runtime.db,
        vault=runtime.vault,
        coordinator=coordinator,
        config=config,
        index_key=runtime.keyring.index_key,
        senders=senders,
        clock=clock,
    )
    handovers = handover.Handovers(
        vault=runtime.vault, outbox=runtime.outbox, ttl=float(config["HANDOVER_TTL"]), clock=clock
    )
    notifier = notices.Notifier(
        db=runtime.db,
        vault=runtime.vault,
        outbox=runtime.outbox,
        config=config,
        senders=senders,
        handovers=handovers,
        clock=clock,
    )
    return Wiring(
        domain=parts,
        blueprints=[bp, public.bp, handover.bp, notices.bp, certificate.bp],
        extensions={
            "gdpr": parts,
            "gdpr_public": requests_,
            "gdpr_handovers": handovers,
            "gdpr_notices": notifier,
            "gdpr_certificates": certificate.CertificateKeys.from_keyring(runtime.keyring),
        },
        # The coordinator is not a participant: it sends the commands and collects the answers.
        # The notifier listens to the service's own request events (services/gdpr/notices.py).
        subscriptions=[
            Subscription(GDPR, ANNOUNCE_PATTERN, coordinator.on_announce),
            Subscription(GDPR, REPLY_PATTERN, coordinator.on_reply),
            *(Subscription(EVENTS, pattern, notifier.on_event) for pattern in notices.EVENT_PATTERNS),
            # The tenants and their agreements, as auth announces them (services/gdpr/tenants.py).
            Subscription(EVENTS, ANNOUNCED, TenantReplica(clock).on_event),
            # The audit's signed checkpoints, which erasure certificates are anchored to (issue 15).
            Subscription(EVENTS, certificate.CHECKPOINT_SIGNED, certificate.CheckpointReplica().on_event),
        ],
        loops=[
            Loop("sweep", sweep_loop(parts.sweeper, float(config["SWEEP_INTERVAL"]))),
            Loop("notices", notifier.loop(requests_)),
        ],
    )

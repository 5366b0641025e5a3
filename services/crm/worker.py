"""Worker process of the crm service: outbox relay, gdpr commands, and notice delivery retries."""
from shared.service import run_worker

from . import SPEC

# crm consumes no domain events; the gdpr command subscription is added by the runtime
# (shared.privacy) and the notice retry loop runs as SPEC.background.
SUBSCRIPTIONS: list = []


def main() -> None:
    run_worker(SPEC)


if __name__ == "__main__":
    main()

"""Worker process of the crm service: outbox relay, gdpr commands, and notice delivery retries
(its subscriptions and loops are listed in services/crm/bootstrap.py)."""

from shared.service import run_worker

from . import SPEC


def main() -> None:
    run_worker(SPEC)


if __name__ == "__main__":
    main()

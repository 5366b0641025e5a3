"""Worker process of the crm service: outbox relay + bus consumer."""
from shared.service import run_worker

from . import SPEC


def main() -> None:
    run_worker(SPEC)


if __name__ == "__main__":
    main()

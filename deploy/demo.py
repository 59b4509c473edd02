"""`make demo`: the whole service on this machine, from nothing to a report.

Stub (the lead fills in the rest): starts the dev stack and prints the
connection settings. Still to come here: migrate, start the API and a worker
in the background with deploy.processes.start_background("api"/"worker", ...)
so that `make stop` (python -m deploy.stack stop --all) stops them, enroll
people, index a sample archive, print the report.
"""
from __future__ import annotations

import sys

from deploy.stack import Stack


def main() -> int:
    stack = Stack.from_env()
    stack.start()
    for name, value in stack.env().items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Port sets of the embedded stack.

A whole set is derived from one base port so that the demo stack, the test
stack and the stack's own self-test never overlap and can run side by side.
Bases sit below Linux's ephemeral range (32768+) so outgoing connections
never grab them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

DEV_PORT_BASE = 15400
TEST_PORT_BASE = 15500
# `weed mini` hard-codes its admin gRPC port as admin HTTP port + 10000 (its
# worker dials that even when -admin.port.grpc says otherwise).
WEED_ADMIN_GRPC_OFFSET = 10000


@dataclass(frozen=True)
class StackPorts:
    postgres: int
    redis: int
    s3: int
    # SeaweedFS internals: `weed mini` binds all of these, so each must move.
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int

    @classmethod
    def from_base(cls, base: int) -> "StackPorts":
        names = list(cls.__dataclass_fields__)
        return cls(**{name: base + offset for offset, name in enumerate(names)})

    @classmethod
    def from_env(cls, default_base: int = DEV_PORT_BASE, prefix: str = "FACEINDEX") -> "StackPorts":
        """``<prefix>_PORT_BASE`` moves the whole set; ``<prefix>_POSTGRES_PORT``,
        ``<prefix>_REDIS_PORT`` and ``<prefix>_S3_PORT`` move single servers."""
        base = int(os.environ.get(f"{prefix}_PORT_BASE") or default_base)
        ports = asdict(cls.from_base(base))
        for name in ("postgres", "redis", "s3"):
            override = os.environ.get(f"{prefix}_{name.upper()}_PORT")
            if override:
                ports[name] = int(override)
        return cls(**ports)

    @property
    def admin_grpc(self) -> int:
        return self.admin + WEED_ADMIN_GRPC_OFFSET

    def all(self) -> list[int]:
        return [*asdict(self).values(), self.admin_grpc]

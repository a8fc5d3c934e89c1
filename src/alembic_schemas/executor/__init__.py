"""Migrating schemas: planning (pure: :mod:`.plan`), rendering revisions for replay
(:mod:`.replay`), and the one executor that migrates named and tenant schemas
(:mod:`.executor`)."""

from __future__ import annotations

from .executor import Action, Executor
from .plan import Plan, select_shard, shard_of

__all__ = ["Action", "Executor", "Plan", "select_shard", "shard_of"]

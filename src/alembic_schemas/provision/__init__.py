"""Provisioning new tenants at head: pg_dump's script read as text (:mod:`.script`, pure),
and snapshots built, stored and replayed (:mod:`.snapshot`)."""

from __future__ import annotations

from .snapshot import fingerprint, get_snapshot, provision, staging_schema

__all__ = ["fingerprint", "get_snapshot", "provision", "staging_schema"]

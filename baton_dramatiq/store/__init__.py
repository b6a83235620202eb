"""Durable state: the schema, the engine and the SQL gateway."""

from .sql import Claim, StepChange, Store, Transition

__all__ = ["Claim", "StepChange", "Store", "Transition"]

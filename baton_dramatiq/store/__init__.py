"""Durable state: the schema, the engine and the SQL gateway."""

from .gateway import Claim, StepChange, Transition
from .sql import Store

__all__ = ["Claim", "StepChange", "Store", "Transition"]

"""Experiment tracking. Library code receives a ``Tracker``; only this package imports mlflow."""

from vlpeft.tracking.base import NullTracker, Tracker

__all__ = ["NullTracker", "Tracker"]

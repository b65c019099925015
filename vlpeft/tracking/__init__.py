"""Experiment tracking. Library code receives a ``Tracker``; only this package imports mlflow.

mlflow itself is imported lazily (``vlpeft.tracking.mlflow``, ``vlpeft.tracking.registry``) so that importing
this package stays cheap.
"""

from vlpeft.tracking.base import NullTracker, Tracker
from vlpeft.tracking.preflight import check_tracking, tracking_uri
from vlpeft.tracking.session import open_tracker

__all__ = ["NullTracker", "Tracker", "check_tracking", "open_tracker", "tracking_uri"]

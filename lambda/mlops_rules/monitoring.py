"""The event a monitoring run that found violations puts on the default bus: what the monitoring
function sends (``lambda/monitoring.py``) and the retrain function takes (``lambda/retrain.py``)."""
from __future__ import annotations

VIOLATIONS_SOURCE = "sentiment-mlops.monitoring"
VIOLATIONS_DETAIL_TYPE = "Monitoring Violations"

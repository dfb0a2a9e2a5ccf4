"""Reading kokan_http_requests_total back from the app's /metrics, as Prometheus would."""

from __future__ import annotations

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families


def requests_counted(client: FlaskClient, method: str, route: str, status: str) -> float:
    """The kokan_http_requests_total sample for these labels (0 before the first request)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    labels = {"method": method, "route": route, "status": status}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == "kokan_http_requests_total" and sample.labels == labels:
                return float(sample.value)
    return 0.0

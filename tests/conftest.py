"""Shared test configuration: hypothesis profiles chosen by ``HYPOTHESIS_PROFILE``.

``ci`` keeps the whole suite short on two cores; ``dev`` is the default for a local run;
``deep`` is for a developer hunting a bug overnight.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

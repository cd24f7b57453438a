"""Shared test settings: bounded hypothesis profiles so `make test` stays fast."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("RLX_HYPOTHESIS_PROFILE", "default"))
pytest_plugins = ["pytester"]

"""Hypothesis profiles for the fuzz tests.

`ci` (the default, what `make test` runs): a bounded number of examples per test, derandomized
so a run is repeatable, no example database written. `fuzz` (`make fuzz`): many more random
examples (SKIFF_FUZZ_EXAMPLES, default 2000), failures remembered in .hypothesis/ and replayed
first next time.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=int(os.environ.get("SKIFF_FUZZ_EXAMPLES", "40")), deadline=None,
                          derandomize=True, database=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("fuzz", max_examples=int(os.environ.get("SKIFF_FUZZ_EXAMPLES", "2000")), deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("SKIFF_FUZZ_PROFILE", "ci"))

"""Settings every test tier shares."""

import os

# Tests may run a store member without a cluster password (throwaway clusters on loopback);
# outside tests `--insecure-no-password` is refused.
os.environ.setdefault("SKIFF_TEST_MODE", "1")

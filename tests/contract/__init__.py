"""The backend contract: the same tests against every backend."""

"""The embedded backend: slot processes on this machine behind a weighted data plane."""

"""Backends on managed cloud serving platforms (SageMaker)."""

"""Tests of the managed cloud backends against their stand-ins."""

"""Loaded by pytest for every test path (tests/ and lessons/): run at tiny scale unless the caller
chose another. Set here, before any notebook kernel starts, so the kernels inherit it."""
import os

os.environ.setdefault("MINIDIFF_SCALE", "tiny")

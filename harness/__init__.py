"""The engine: one sweep entry, one training loop, one evaluation path, one result writer.

Importing the engine registers the built-in architectures and tasks (``archs``, ``tasks``) with the
registries of the public API (``archbench``); plug-ins are loaded by ``harness.plugins``.
"""
import archs  # noqa: F401  (registers the built-in architectures)
import tasks  # noqa: F401  (registers the built-in tasks)

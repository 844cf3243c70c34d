"""The engine: one sweep entry, one training loop, one evaluation path, one result writer."""

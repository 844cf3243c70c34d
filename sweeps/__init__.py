"""The Hydra config tree. A package so that it is found both in a checkout and when installed."""

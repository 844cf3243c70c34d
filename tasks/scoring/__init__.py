"""Scoring shared by tasks: LM log-likelihoods, decoding (greedy, beam), metrics."""

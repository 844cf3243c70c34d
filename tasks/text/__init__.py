"""Text to token ids: byte, word, BPE tokenizers and special-token layouts."""

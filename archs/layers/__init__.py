"""Model pieces shared by several architectures: attention, transformer blocks, the prefix LM."""

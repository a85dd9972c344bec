"""hivtp.runtime: backends that run pruned generation."""

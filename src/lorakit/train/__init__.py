"""Training: the loop, the chunked loss, the optimizer, callbacks, and the run orchestration."""

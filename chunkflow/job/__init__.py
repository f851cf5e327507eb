"""Job: one block job, its per-piece resume state, all blocks in one process."""

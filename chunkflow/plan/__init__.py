"""Plan: the run plan, its analytic costs, a job's memory, the mask, the model check."""

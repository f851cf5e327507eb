"""State: everything on disk that belongs to a run."""

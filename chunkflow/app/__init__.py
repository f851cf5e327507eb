"""App: the `chunkflow` command, the Snakefile's adapter, run directories, the demo."""

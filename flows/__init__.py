"""embedpipe orchestration: the Prefect flow, the DVC bridge and the CLI."""

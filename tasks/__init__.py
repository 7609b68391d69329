"""embedpipe stages: pure stage logic plus one thin Prefect task per stage."""

"""Built-in patches, one module per target (each registered in pyproject.toml)."""

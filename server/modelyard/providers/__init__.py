"""Provider adapters, one module per provider, and the registry that maps a type to its module."""

"""Provider credentials: envelope encryption at rest, references resolved when used."""

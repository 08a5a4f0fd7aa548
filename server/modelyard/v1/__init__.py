"""Generated from proto/modelyard/v1 by `make proto`. Do not edit."""

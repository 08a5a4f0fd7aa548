"""Modelyard: one OpenAI-compatible REST API and one typed gRPC API in front of many LLM providers."""

__version__ = "0.1.0"

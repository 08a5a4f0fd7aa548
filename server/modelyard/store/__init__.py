"""Durable state: tenants, providers, their sealed secrets, models, API keys and the audit trail."""

"""Steering requests: names → targets → ordered deployments, attempts, health and policies."""

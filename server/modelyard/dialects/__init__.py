"""Other gateways' configuration dialects, translated into Modelyard's providers, models and routes."""

from modelyard.dialects.external import (
    PARAMETERS,
    TASKS,
    DialectError,
    Task,
    Translated,
    parameter_problem,
    serves,
    translate,
)
from modelyard.dialects.mlflow import MlflowEndpoint, MlflowLimit, MlflowModel, MlflowRoute

__all__ = [
    "PARAMETERS",
    "TASKS",
    "DialectError",
    "MlflowEndpoint",
    "MlflowLimit",
    "MlflowModel",
    "MlflowRoute",
    "Task",
    "Translated",
    "parameter_problem",
    "serves",
    "translate",
]

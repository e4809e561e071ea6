"""The engine: config, training, evaluation, prediction, export. It knows no model."""

"""JEPA encoders, predictors, regularisers, checkpoints and the training loop."""

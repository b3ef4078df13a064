"""BentoML service over the champion predictor."""

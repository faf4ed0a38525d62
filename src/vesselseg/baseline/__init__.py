"""Classical predictors that give the pipeline real predictions to score before, and beside, the model."""

from vesselseg.baseline.frangi import FrangiConfig, frangi_probability
from vesselseg.baseline.predict import frangi_predictions

__all__ = ["FrangiConfig", "frangi_predictions", "frangi_probability"]

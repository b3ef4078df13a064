"""Realistic synthetic CRM histories with known ground truth.

`generate_data` / `generate` produce the canonical tables plus a truth table (latent
quality, true and creation-time win probabilities, timing parameters) that training
never reads; `oracle_close_probability` and `oracle_bookings` are the best possible
forecasts under the true process, the floor benchmarks compare models with.
"""
from features.synthetic.bookings import oracle_bookings
from features.synthetic.generator import generate, generate_data
from features.synthetic.oracle import load_truth, oracle_close_probability
from features.synthetic.params import GeneratorParams

__all__ = ["GeneratorParams", "generate", "generate_data", "load_truth", "oracle_bookings",
           "oracle_close_probability"]

"""The training role: read the interaction log, fit, judge on a holdout, promote or refuse a model version."""

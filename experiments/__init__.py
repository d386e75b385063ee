"""siyu experiments: holdout assignment, outreach readouts, uplift models, targeting simulator."""

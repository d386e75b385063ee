"""siyu serving: outreach tiering policy, nightly batch scoring and the BentoML HTTP service."""

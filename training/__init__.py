"""siyu training: churn, 7-day repurchase and BTYD lifetime-value models, tracked in MLflow."""

"""What users do with a trained model."""

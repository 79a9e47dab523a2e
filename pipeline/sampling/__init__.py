"""Dataset logic between features and training: splits, uploader genre distributions, intervened test
sets, sampled negatives, inverse-popularity weights, and the TT-150k release export (docs/architecture.md
sections 7 and 8)."""

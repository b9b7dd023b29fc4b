"""The pure model code: what a ride is, its features, the vectorizer, the metrics and the
promotion rule, and the pyfunc model. Imports nothing of the project but `errors`; the
logged model carries the part of it that `core.model` imports."""

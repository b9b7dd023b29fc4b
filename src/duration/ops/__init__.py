"""What users run: predict, monitor, the monthly cycle, deploy, and the pipeline (wiring
only). Each takes Settings and a small request, and calls the layers below."""

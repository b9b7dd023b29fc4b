"""Fitting: estimators, one training run, diagnostic plots, and the hyperopt search
(trials in this process or as Spark tasks)."""

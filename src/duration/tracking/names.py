"""The names this project uses on the tracking server (its experiments and its model), and
how many of a search's trials keep their model there."""

EXPERIMENT = "nyc-taxi-duration"  # baselines, single training runs and the pipeline's runs
SEARCH_EXPERIMENT = "nyc-taxi-duration-search"
EVAL_EXPERIMENT = "nyc-taxi-duration-evaluation"
PROMOTION_EXPERIMENT = "nyc-taxi-duration-promotion"
DEPLOY_EXPERIMENT = "nyc-taxi-duration-deployments"
MONITOR_EXPERIMENT = "nyc-taxi-duration-monitoring"
CYCLE_EXPERIMENT = "nyc-taxi-duration-cycle"
AB_EXPERIMENT = "nyc-taxi-duration-ab"  # live decisions: canary and shadow arms
REPORT_EXPERIMENT = "nyc-taxi-duration-reports"  # `duration report`: the model's life
MODEL_NAME = "nyc-taxi-duration"  # the registered model
# A search keeps the model of its best TOP_N trials on the server; `register` tests them.
TOP_N = 5

"""Methods: small modules that wire tasks, rollout protocols, estimators and the one learner for one
paper each (e.g. `score.py` for SCoRe). A method never re-implements a loss or an estimator."""

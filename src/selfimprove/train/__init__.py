"""Training: the one learner (the only backward()), the driver every method runs through, streams, checkpoints."""

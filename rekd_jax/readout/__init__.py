"""What pre-training's kNN monitor and the evaluation protocols share: frozen backbone features
of an encoder (features: load or initialise, extract, cache) and the weighted kNN scorer (knn).
Imports models and core, never training or evaluation."""

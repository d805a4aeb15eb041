"""Training, comparison and conversion of the heart-sound models, and the dataset loaders."""

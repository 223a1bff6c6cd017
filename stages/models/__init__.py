"""Floor 2: loading models and tokenizers, and the training arguments the trainers share."""

"""Offline training of lstm-serve's models: data -> tokenizer -> trained, evaluated checkpoint."""

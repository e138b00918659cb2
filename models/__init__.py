"""Shared library of lstm-serve: architectures, tokenizers, the checkpoint format and decoding.

Imported by both `training` and `service`; imports neither.
"""
